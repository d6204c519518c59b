"""`touchpoint deploy` says where it deploys, and creates a SQLite store only when told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_folder
from touchpoint.deploy import StoreNotFound, check_store, sqlite_file, store_label
from touchpoint.temporal_server import free_port

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    "workspace.yaml": "timezone: UTC\nsender: {email: cs@example.com}\n",
    "hello.yaml": "playbook: hello\ntrigger: manual\nsteps:\n  - note: {text: hi}\n",
}


def deploy(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # Nothing listens there: this folder has nothing to schedule, so deploy needs no server.
        "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        **env,
    }
    if "TOUCHPOINT_DATABASE_URL" not in env:
        environment.pop("TOUCHPOINT_DATABASE_URL", None)  # the default store, under the working directory
    return subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", "deploy", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_deploy_refuses_to_create_a_sqlite_store_unless_told(tmp_path: Path) -> None:
    write_folder(tmp_path / "playbooks", FILES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = elsewhere / ".touchpoint" / "touchpoint.db"

    refused = deploy(elsewhere, str(tmp_path / "playbooks"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"no Touchpoint store at {store}" in " ".join(refused.stderr.split())
    assert "--create" in refused.stderr and "TOUCHPOINT_DATABASE_URL" in refused.stderr
    assert not store.exists() and refused.stdout == ""

    created = deploy(elsewhere, str(tmp_path / "playbooks"), "--create")
    assert created.returncode == 0, created.stdout + created.stderr
    lines = created.stdout.splitlines()
    assert lines[0] == f"store     {store} (SQLite)"
    assert lines[1].startswith("temporal  127.0.0.1:") and "(namespace default, task queue touchpoint)" in lines[1]
    assert lines[2].startswith("added     hello (") and store.is_file()

    # The store exists now: a second deploy needs no flag and finds the playbook unchanged.
    again = deploy(elsewhere, str(tmp_path / "playbooks"), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)  # one JSON object, nothing else on stdout
    assert report["store"] == f"{store} (SQLite)" and report["temporal"].startswith("127.0.0.1:")
    assert [(p["playbook"], p["change"]) for p in report["playbooks"]] == [("hello", "unchanged")]
    assert report["schedules"] == []


def test_deploy_to_a_database_url_needs_no_flag(tmp_path: Path) -> None:
    write_folder(tmp_path / "playbooks", FILES)
    url = f"sqlite:///{tmp_path}/chosen.db"
    # A SQLite URL names a file, so the guard applies to it too ...
    refused = deploy(tmp_path, "playbooks", TOUCHPOINT_DATABASE_URL=url)
    assert refused.returncode == 2 and f"no Touchpoint store at {tmp_path}/chosen.db" in " ".join(refused.stderr.split())
    # ... while a server database is migrated as it always was (the connection tells if it is there).
    check_store("postgresql+psycopg://postgres:secret@127.0.0.1:5432/touchpoint", create=False)
    assert sqlite_file("postgresql+psycopg://postgres@127.0.0.1/x") is None
    assert sqlite_file("sqlite://") is None and sqlite_file("sqlite:///:memory:") is None
    assert store_label("postgresql+psycopg://postgres:secret@db.internal:5432/touchpoint") == "postgresql+psycopg://postgres:***@db.internal:5432/touchpoint"
    with pytest.raises(StoreNotFound, match="touchpoint deploy --create"):
        check_store(url, create=False)
    check_store(url, create=True)  # told to: no complaint
