"""No file of the repository names a document that is not in it, and every doc link lands."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (".md", ".py", ".yaml", ".yml", ".j2", ".toml", ".txt", ".sh", ".cfg", ".ini", ".json")
MENTION = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: Mentions in files the lead is rewriting, to go with that rewrite (file -> document named).
PENDING: dict[str, str] = {}


def tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in listed if name.endswith(TEXT) or "/" not in name and "." not in name]


def exists(name: str, where: Path) -> bool:
    return any((base / name).exists() for base in (where.parent, ROOT, ROOT / "docs"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (lines in fenced code are not headings)."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            found.add(slug(line.lstrip("#")))
    return found


def test_docs_no_file_names_a_document_that_is_not_in_the_repository() -> None:
    missing, pending = [], []
    for path in tracked():
        if not path.is_file() or path == Path(__file__).resolve():  # this file names PENDING's
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in MENTION.finditer(text):
            if not exists(match.group(1), path):
                name = str(path.relative_to(ROOT))
                if PENDING.get(name) == match.group(1):
                    pending.append(name)
                    continue
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{name}:{line}: {match.group(1)}")
    assert missing == []
    # A fixed pending mention must leave PENDING too, so the list never hides a new one.
    assert sorted(set(pending)) == sorted(PENDING)


def test_docs_links_land_on_files_and_headings() -> None:
    broken = []
    docs = [p for p in tracked() if p.suffix == ".md" and p.is_file()]
    assert ROOT / "docs" / "playbook-reference.md" in docs and ROOT / "docs" / "cookbook.md" in docs
    for path in docs:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            name, _, anchor = target.partition("#")
            destination = (path.parent / name) if name else path
            if not destination.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_docs_are_linked_from_the_readme_and_the_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "cs-ops-guide.md").read_text(encoding="utf-8")
    for doc in ("docs/playbook-reference.md", "docs/cookbook.md"):
        assert f"]({doc})" in readme
        assert f"]({doc.removeprefix('docs/')}" in guide
