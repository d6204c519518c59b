"""CSV import: rows become account documents; every bad row is reported and nothing is sent."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from touchpoint.accounts_csv import read_accounts_csv
from touchpoint.cli.main import app


def test_accounts_csv_builds_documents_with_contacts(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "id,name,seats.licensed,csm.email,properties.industry,contact.email,contact.role\n"
        "acme,Acme,400,dana@example.com,software,kim@acme.example,champion\n"
        "acme,,,,,lee@acme.example,admin\n"
        "globex,Globex,20,,,,\n"
    )
    docs, problems = read_accounts_csv(path)
    assert problems == []
    acme, globex = docs
    assert acme.seats.licensed == 400 and acme.csm is not None and acme.csm.email == "dana@example.com"
    assert acme.properties == {"industry": "software"}
    assert [(c.email, c.role) for c in acme.contacts] == [("kim@acme.example", "champion"), ("lee@acme.example", "admin")]
    assert globex.contacts == [] and globex.seats.licensed == 20


def test_accounts_csv_reports_each_bad_row_and_imports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "id,name,seats.licensed,timezone,contact.email\n"
        "acme,Acme,lots,UTC,kim@acme.example\n"
        ",Nameless,3,UTC,\n"
        "globex,Globex,3,Mars/Base,not-an-address\n"
    )
    docs, problems = read_accounts_csv(path)
    found = [str(p).replace(str(tmp_path) + "/", "") for p in problems]
    assert "bad.csv:2: seats.licensed: expected a number, found 'lots'" in found
    assert "bad.csv:3: id: empty: every row needs the account's id" in found
    assert any(p.startswith("bad.csv:4: timezone: unknown time zone 'Mars/Base'") for p in found), found
    assert any(p.startswith("bad.csv:4: contacts.0.email: expected an email address") for p in found), found
    result = CliRunner().invoke(app, ["accounts", "import", str(path)])
    assert result.exit_code == 1
    assert "nothing was imported" in result.output
