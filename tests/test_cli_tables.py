"""Every table the CLI prints, at 80 columns on a terminal and as plain lines in a pipe.

The commands run as separate processes against a real `touchpoint dev` stack and its store: on
a pseudo-terminal 80 columns wide (what a person sees) and with stdout piped (what a script
sees). Ids, the values people copy into the next command, must appear whole in both.
"""

from __future__ import annotations

import json
import os
import re
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_folder
from touchpoint.temporal_server import free_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "acme-corporation-emea-enterprise"
PLAYBOOK = """\
playbook: enterprise-sso-onboarding
trigger: manual
audience: [champion]
steps:
  - email: {template: hi}
    id: welcome_the_champion_email
  - task: {title: "Set up single sign-on for {{ account.name }} and invite every administrator to the training", owner: csm, due: 3d, await: true}
    id: single_sign_on_setup_task
  - wait: 30d
    id: settle_for_a_month
"""
ACCOUNT = f"""\
id: {ACCOUNT_ID}
name: Acme Corporation (Europe, Middle East and Africa)
timezone: Europe/Berlin
csm: {{name: Dana Lee, email: dana.lee@customer-success.example.com}}
metrics: {{adoption: 0.4}}
contacts: [{{email: kim.park@acme-corporation-emea.example, name: Kim, role: champion}}]
"""
HEALTH = """\
metrics:
  - {id: adoption, value: "account.metrics.adoption", weight: 100, good: 1, bad: 0}
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`touchpoint dev` on its own ports, in a folder with one playbook, health.yaml and an account."""
    write_folder(
        tmp_path / "playbooks",
        {
            "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
            "health.yaml": HEALTH,
            "enterprise-sso-onboarding.yaml": PLAYBOOK,
            "templates/hi.subject.j2": "Welcome to the programme, {{ account.name }}",
            "templates/hi.html.j2": "<p>Hello {{ contact.name }}</p>",
        },
    )
    (tmp_path / "acme.yaml").write_text(ACCOUNT)
    api_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TOUCHPOINT_API_BIND": f"127.0.0.1:{api_port}",
        "CWD": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "touchpoint.cli.main", "dev", "playbooks"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "touchpoint dev exited"
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "touchpoint dev did not come up"
            time.sleep(0.2)
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)


def piped(env: dict[str, str], *args: str) -> str:
    """The command with stdout piped, as a script runs it."""
    done = subprocess.run([sys.executable, "-m", "touchpoint.cli.main", *args], cwd=env["CWD"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def on_terminal(env: dict[str, str], *args: str, columns: int = 80) -> str:
    """The command on a pseudo-terminal `columns` wide, as a person sees it (colours removed)."""
    import fcntl
    import pty
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "touchpoint.cli.main", *args],
        cwd=env["CWD"],
        env={**env, "COLUMNS": str(columns), "TERM": "xterm-256color"},
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=30)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    text = ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    assert code == 0, text + stderr
    return text


def assert_readable(text: str, ids: list[str], *, columns: int = 80, ignore: tuple[str, ...] = ()) -> None:
    """Every line fits; every id is there whole; nothing was cut with an ellipsis.

    Lines containing a string of ``ignore`` are not measured: titles that name a path.
    """
    lines = [line for line in text.splitlines() if not any(part in line for part in ignore)]
    assert all(len(line.rstrip()) <= columns for line in lines), "\n".join(line for line in lines if len(line.rstrip()) > columns)
    assert "…" not in text, text
    for value in ids:
        assert value in text, f"{value!r} is cut or missing in:\n{text}"


def row_with(text: str, value: str) -> str:
    (line,) = [line for line in text.splitlines() if value in line]
    return line


def test_cli_tables_fit_80_columns_and_print_whole_rows_in_a_pipe(live: dict[str, str]) -> None:
    env = live
    piped(env, "accounts", "put", "acme.yaml")
    piped(env, "start", "enterprise-sso-onboarding", "--account", ACCOUNT_ID)
    deadline = time.monotonic() + 60
    while not (tasks := [json.loads(line) for line in piped(env, "tasks", "--json").splitlines()]):
        assert time.monotonic() < deadline, "no task appeared"
        time.sleep(0.3)
    (task,) = tasks
    assert (task["account_id"], task["step"], task["owner"]) == (ACCOUNT_ID, "single_sign_on_setup_task", "dana.lee@customer-success.example.com")
    assert "scored 1 account," in piped(env, "health", "recompute", ACCOUNT_ID)

    # tasks: the id `tasks complete` needs, whole, on the terminal and in the pipe.
    assert_readable(on_terminal(env, "tasks"), [task["id"], ACCOUNT_ID])
    line = row_with(piped(env, "tasks"), task["id"])
    assert line.split()[:2] == [task["id"], ACCOUNT_ID] and "invite every administrator to the training" in line and line.endswith("open")

    # status: the run id `runs pause|resume|cancel` take, whole
    (run,) = [json.loads(line) for line in piped(env, "status", "--json").splitlines()]
    assert (run["playbook"], run["account_id"], run["status"], run["step"]) == ("enterprise-sso-onboarding", ACCOUNT_ID, "running", "single_sign_on_setup_task")
    assert [item["step"] for item in run["history"]] == ["welcome_the_champion_email", "single_sign_on_setup_task"]
    assert_readable(on_terminal(env, "status"), [run["id"], ACCOUNT_ID, task["id"], "single_sign_on_setup_task"])
    assert f"  run {run['id']}" in piped(env, "status").splitlines()

    # outbox
    (email,) = [json.loads(line) for line in piped(env, "outbox", "--json").splitlines()]
    assert (email["to"], email["step"], email["status"]) == ("kim.park@acme-corporation-emea.example", "welcome_the_champion_email", "sent")
    assert email["file"] and Path(email["file"]).is_file()
    assert_readable(on_terminal(env, "outbox"), [email["to"]], ignore=("each email is also",))
    line = row_with(piped(env, "outbox"), email["id"])
    assert email["to"] in line and "Welcome to the programme, Acme Corporation (Europe, Middle East and Africa)" in line

    # accounts list
    (doc,) = [json.loads(line) for line in piped(env, "accounts", "list", "--json").splitlines()]
    assert doc["id"] == ACCOUNT_ID and doc["contacts"][0]["email"] == "kim.park@acme-corporation-emea.example"
    assert_readable(on_terminal(env, "accounts", "list"), [ACCOUNT_ID])
    assert row_with(piped(env, "accounts", "list"), ACCOUNT_ID).split()[0] == ACCOUNT_ID

    # deploy: into the store `touchpoint dev` uses, found without --create
    report = json.loads(piped(env, "deploy", "playbooks", "--json"))
    (entry,) = report["playbooks"]
    assert (entry["playbook"], entry["change"]) == ("enterprise-sso-onboarding", "unchanged")
    assert report["store"] == f"{Path(env['CWD']).resolve() / '.touchpoint' / 'touchpoint.db'} (SQLite)"
    assert report["temporal"] == env["TOUCHPOINT_TEMPORAL_ADDRESS"]
    assert_readable(on_terminal(env, "deploy", "playbooks"), [entry["playbook"], entry["version"], env["TOUCHPOINT_TEMPORAL_ADDRESS"]], ignore=("store ",))
    out = piped(env, "deploy", "playbooks")
    assert f"unchanged enterprise-sso-onboarding ({entry['version']})" in out.splitlines()

    # health show
    assert_readable(on_terminal(env, "health", "show", ACCOUNT_ID), [ACCOUNT_ID])
    (score,) = [json.loads(line) for line in piped(env, "health", "show", ACCOUNT_ID, "--json").splitlines()]
    line = row_with(piped(env, "health", "show", ACCOUNT_ID), score["at"][:16].replace("T", " "))
    assert line.split()[2:4] == ["40", "yellow"]  # 40 points of 100: yellow from 40

    # preview and simulate, which need no server
    preview = on_terminal(env, "preview", "playbooks/enterprise-sso-onboarding.yaml", "--account", "acme.yaml")
    assert_readable(preview, ["welcome_the_champion_email", "kim.park@acme-corporation-emea.example"], ignore=("enterprise-sso-onboarding for",))
    simulated = on_terminal(env, "simulate", "playbooks/enterprise-sso-onboarding.yaml", "--account", "acme.yaml", "--days", "40")
    assert_readable(simulated, ["welcome_the_champion_email", "single_sign_on_setup_task", "settle_for_a_month"])
    steps = [
        ("welcome_the_champion_email", "email"),
        ("single_sign_on_setup_task", "task"),
        ("single_sign_on_setup_task", "task_overdue"),
        ("settle_for_a_month", "wait"),
    ]
    for where in ((), ("--on-server",)):
        out = piped(env, "simulate", "playbooks/enterprise-sso-onboarding.yaml", "--account", "acme.yaml", "--days", "40", *where)
        lines = out.splitlines()
        rows = [line.split() for line in lines if line[:2] == "20"]  # one whole line per step
        assert [(row[3], row[4]) for row in rows] == steps, (where, out)
        assert "invite every administrator to the training" in " ".join(rows[1])
        # stdout is the simulation only: its title, the header, the rows, the outcome (the
        # Temporal SDK core's warnings go to stderr through Python logging).
        assert lines[0] == f"{ACCOUNT_ID}, times in Europe/Berlin" and lines[1].split()[:2] == ["at", "day"], (where, out)
        assert len(lines) == 2 + len(rows) + 1 and lines[-1].startswith("outcome: completed"), (where, out)
    on_server = on_terminal(env, "simulate", "playbooks/enterprise-sso-onboarding.yaml", "--account", "acme.yaml", "--days", "40", "--on-server")
    assert_readable(on_server, ["welcome_the_champion_email", "single_sign_on_setup_task", "settle_for_a_month"])
    assert "temporalio" not in on_server and "WARN" not in on_server, on_server


def test_cli_tables_accounts_sync_summary_at_80_columns_and_piped(tmp_path: Path) -> None:
    from tests.servers.hubspot_server import run_hubspot_server

    token = "pat-na1-tables-test"
    with run_hubspot_server(token) as hubspot:
        owner = hubspot.add_owner("dana@example.com", first_name="Dana", last_name="Lee")
        for i in range(3):
            company = hubspot.add_company(f"Company {i}", seats_licensed=100, seats_active=40, hubspot_owner_id=owner)
            hubspot.add_contact(f"kim{i}@c{i}.example", company_id=company, firstname="Kim", touchpoint_role="champion")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CWD": str(tmp_path),
            "HUBSPOT_TOKEN": token,
            "TOUCHPOINT_HUBSPOT_URL": hubspot.url,
            "TOUCHPOINT_DATABASE_URL": f"sqlite:///{tmp_path}/store.db",
        }
        first = on_terminal(env, "accounts", "sync", "--from", "hubspot", "--backfill")
        again = piped(env, "accounts", "sync", "--from", "hubspot", "--backfill")
    assert_readable(first, ["hubspot sync (backfill: no events emitted)"])
    assert [line.split() for line in first.splitlines() if line.startswith(("accounts read", "created"))] == [["accounts", "read", "3"], ["created", "3"]]
    lines = again.splitlines()
    assert lines[0] == "hubspot sync (backfill: no events emitted)"
    assert [line.split() for line in lines if line.startswith(("accounts read", "created", "unchanged"))] == [
        ["accounts", "read", "3"],
        ["created", "0"],
        ["unchanged", "3"],
    ]


def test_cli_tables_drop_low_value_columns_then_print_records_never_cutting_ids() -> None:
    import io

    from rich.console import Console

    from touchpoint.cli.tables import Column, print_table

    columns = [Column("id", key=True), Column("title"), Column("owner", key=True, drop=1), Column("status", drop=2)]
    rows = [["task_aa6fe8c3d1b2e4f5", "Set up single sign-on for Acme Corporation", "dana.lee@example.com", "open"]]

    def render(width: int) -> list[str]:
        buffer = io.StringIO()
        print_table(Console(file=buffer, width=width, force_terminal=True, color_system=None), columns, rows, title="Tasks")
        return [line.rstrip() for line in buffer.getvalue().splitlines()]

    wide = render(100)
    assert wide[1].split() == ["id", "title", "owner", "status"] and "open" in wide[2]
    narrow = render(60)  # status goes first, then (if needed) owner; the id stays whole
    assert narrow[1].split() == ["id", "title", "owner"] and narrow[2].startswith("task_aa6fe8c3d1b2e4f5")
    assert render(34)[2].split() == ["task_aa6fe8c3d1b2e4f5", "Set", "up"]  # the title wraps, the id does not
    tiny = render(30)  # no table fits: one `name value` block per row
    assert [line.split(maxsplit=1) for line in tiny[1:5]] == [
        ["id", "task_aa6fe8c3d1b2e4f5"],
        ["title", "Set up single sign-on"],
        ["for", "Acme Corporation"],
        ["owner", "dana.lee@example.com"],
    ]
    assert all(len(line) <= 30 for line in tiny) and all("…" not in line for line in wide + narrow + tiny)
