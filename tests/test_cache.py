"""The CLI's cache (`touchpoint.cache`): same answers as without it, never stale, private, scoped."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_folder
from touchpoint import cache
from touchpoint.cli.main import app
from touchpoint.dsl import timing
from touchpoint.dsl.validate import load_project
from touchpoint.email.render import render_email

PLAYBOOK = """\
playbook: p
trigger: {event: account.created}
steps:
  - email: {template: hello, to: account.contacts}
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "cache"
    monkeypatch.setenv("TOUCHPOINT_CACHE_DIR", str(path))
    cache.folder.cache_clear()
    yield path
    cache.folder.cache_clear()


def _problems(root: Path) -> list[str]:
    with cache.using():
        return [str(p) for p in load_project(root).problems]


def test_template_checks_come_from_the_cache_and_follow_edits(folder: Path, cache_dir: Path) -> None:
    """A second validation answers from the cache; an edited template is checked again, and
    whether the files a template includes exist is checked every time."""
    write_folder(folder, {
        "p.yaml": PLAYBOOK,
        "templates/hello.subject.j2": "Hi {{ account.nmae }}",
        "templates/hello.html.j2": "{% include 'footer.html.j2' %}",
    })
    cold = _problems(folder)
    assert any("account.nmae" in p or "nmae" in p for p in cold) and any("footer.html.j2` not found" in p for p in cold)
    stored = sorted((cache_dir / "template-checks").glob("*.json"))
    assert len(stored) == 2
    assert _problems(folder) == cold  # warm: the same answer
    assert sorted((cache_dir / "template-checks").glob("*.json")) == stored  # and nothing new computed

    # The cache is read: a stored answer is what a warm validation reports.
    subject = next(p for p in stored if "nmae" in p.read_text())
    subject.write_text(json.dumps({"problems": [[1, "from the cache"]], "references": []}))
    assert any("from the cache" in p for p in _problems(folder))

    # Existence is checked live: the missing include appears, its problem goes.
    (folder / "templates" / "footer.html.j2").write_text("bye")
    assert not any("footer" in p for p in _problems(folder))
    # An edit is a new text: checked again, not served from the cache.
    (folder / "templates" / "hello.subject.j2").write_text("Hi {{ account.name }}")
    assert _problems(folder) == []


def test_without_the_cache_nothing_is_written(folder: Path, cache_dir: Path) -> None:
    """Outside `using()` (workers, the API) and with `TOUCHPOINT_CACHE_DIR=off`, nothing is kept."""
    write_folder(folder, {"p.yaml": PLAYBOOK, "templates/hello.subject.j2": "Hi", "templates/hello.html.j2": "<p>Hi</p>"})
    assert load_project(folder).problems == []
    assert not cache_dir.exists()
    os.environ["TOUCHPOINT_CACHE_DIR"] = "off"
    assert _problems(folder) == []
    assert not cache_dir.exists()


def test_a_folder_others_can_write_is_not_used(folder: Path, cache_dir: Path) -> None:
    """The cache holds compiled template code: a folder others can write to is never used."""
    cache_dir.mkdir(mode=0o700)
    cache_dir.chmod(0o777)
    write_folder(folder, {"p.yaml": PLAYBOOK, "templates/hello.subject.j2": "Hi", "templates/hello.html.j2": "<p>Hi</p>"})
    assert _problems(folder) == []
    assert list(cache_dir.iterdir()) == []
    cache_dir.chmod(0o700)
    assert _problems(folder) == []
    assert (cache_dir / "template-checks").is_dir()
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"


def test_holiday_calendars_and_compiled_templates(folder: Path, cache_dir: Path) -> None:
    """Holidays and rendered emails are the same from the cache; the scope is restored after."""
    import holidays

    timing._holiday_calendar.cache_clear()
    with cache.using():
        assert timing.calendar_store is not None
        first = timing._holiday_calendar("DE", 2027)
        timing._holiday_calendar.cache_clear()
        second = timing._holiday_calendar("DE", 2027)
    timing._holiday_calendar.cache_clear()
    assert timing.calendar_store is None
    assert first == second == frozenset(holidays.country_holidays("DE", years=2027)) and date(2027, 12, 25) in first

    write_folder(folder, {"templates/hello.subject.j2": "Hi {{ name }}", "templates/hello.html.j2": "<p>{{ name }}</p>"})
    emails = []
    for _ in range(2):
        with cache.using():
            emails.append(render_email(folder / "templates", "hello", {"name": "Ada & co"}, locales=["en"], unsubscribe_url="https://x.test/u"))
    assert emails[0] == emails[1] and emails[0].html.startswith("<p>Ada &amp; co</p>")
    assert len(list((cache_dir / "compiled-templates").rglob("*.cache"))) == 2


def test_simulate_is_the_same_cold_and_warm(cache_dir: Path) -> None:
    """The shipped enterprise onboarding prints the same timeline with an empty and a warm cache."""
    root = Path(__file__).parent.parent / "playbooks"
    args = ["simulate", str(root / "onboarding-enterprise.yaml"), "--account", str(root / "samples" / "enterprise.yaml"), "--json", "--start", "2026-03-02"]
    runs = [CliRunner().invoke(app, args) for _ in range(2)]
    assert [r.exit_code for r in runs] == [0, 0]
    ids = re.compile(r'"(task_id|message_id|id)": "[^"]*"')
    cold, warm = (ids.sub("", r.stdout) for r in runs)
    assert cold == warm and cold.count('"action": "email"') >= 10
    assert (cache_dir / "holidays").is_dir() and (cache_dir / "compiled-templates").is_dir()
    assert timing.calendar_store is None and cache.folder() is None
