"""`touchpoint schema [playbook|workspace|health|account]`: a JSON Schema for editors."""

from __future__ import annotations

import json

import typer

from touchpoint.cli.main import app, err

SCHEMA_HELP = "\n\n".join(
    [
        "Print the JSON Schema of a playbook (default), workspace.yaml, health.yaml or an account document.",
        "Editors with the YAML language server (VS Code's YAML extension, Neovim, Zed, JetBrains) use it for "
        "completion, hover help and inline errors. Save it once, e.g. `touchpoint schema > .touchpoint/playbook.schema.json`, "
        "then put `# yaml-language-server: $schema=../.touchpoint/playbook.schema.json` on the first line of a "
        "playbook (the path is relative to the YAML file), or map file patterns to it in the editor's settings.",
        "The schema helps while typing; `touchpoint validate` remains the full check (expressions, templates, ids).",
    ]
)


@app.command(help=SCHEMA_HELP)
def schema(kind: str = typer.Argument("playbook", help="playbook, workspace, health or account.")) -> None:
    """Print one JSON Schema to stdout."""
    from touchpoint.dsl.json_schema import json_schema

    try:
        body = json_schema(kind)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    print(json.dumps(body, indent=2), flush=True)
