"""The `touchpoint` command line (Typer + Rich)."""
