"""The playbook contract: schema, YAML loader with positions, expressions and validation.

This package imports nothing else of Touchpoint's, so workflows can pass it through the
Temporal sandbox and the CLI can validate without a server.
"""
