"""Touchpoint's benchmarks: every figure next to bare Temporal measured in the same run.

Run ``python -m bench`` (``--quick`` for a smoke run); see ``bench/RESULTS.md``.
"""
