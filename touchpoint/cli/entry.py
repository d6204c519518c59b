"""The `touchpoint` console script: loads only the command modules its command line needs.

`touchpoint simulate` is run again and again while a playbook is written, and importing every
command's dependencies (the store, Temporal's client, the API) was a third of its wall time.
"""

from __future__ import annotations


def main() -> None:
    """Run the CLI; `touchpoint simulate` without loading the other commands."""
    import touchpoint.cli

    touchpoint.cli.LAZY = True  # type: ignore[attr-defined]
    from touchpoint.cli.main import main as run

    run()
