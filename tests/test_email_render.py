"""Rendering email templates: parts, locales, escaping, footers and error messages."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from touchpoint.email import (
    FreeMap,
    RenderedEmail,
    TemplateNotFound,
    TemplateRenderError,
    get_environment,
    html_to_text,
    render_email,
    resolve_parts,
)

TEMPLATES = Path(__file__).parent / "fixtures" / "email_templates"
UNSUBSCRIBE = "https://cs.example.com/u/tok123?a=1&b=2"


def _context(*, account_name: str = "Acme Inc", tips: list[str] | None = None) -> dict[str, object]:
    account = {
        "id": "acme",
        "name": account_name,
        "locale": "en",
        "csm": {"name": "Dana Lee", "email": "dana@example.com"},
        "metrics": FreeMap({"weekly_active_users": 250}),
        "properties": FreeMap({"crm_id": "0015"}),
    }
    contact = {"email": "kim@acme.example", "name": "Kim", "role": "champion", "locale": "en"}
    return {
        "account": account,
        "contacts": [contact],
        "contact": contact,
        "event": {"type": "manual", "at": datetime(2026, 1, 5, tzinfo=UTC), "data": FreeMap()},
        "run": {"id": "run-1", "day": 3, "vars": FreeMap({"tips": tips or ["Invite your team"]})},
        "now": datetime(2026, 1, 8, 9, 0, tzinfo=UTC),
        "today": date(2026, 1, 8),
    }


def _render(
    name: str, *, locales: list[str] | None = None, account_name: str = "Acme Inc", tips: list[str] | None = None
) -> RenderedEmail:
    return render_email(
        TEMPLATES,
        name,
        _context(account_name=account_name, tips=tips),
        locales=locales if locales is not None else ["en"],
        unsubscribe_url=UNSUBSCRIBE,
    )


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_email_render_extends_layout_and_includes_partial() -> None:
    email = _render("welcome")

    assert email.subject == "Welcome aboard, Acme Inc!"
    assert "<h1>Hello Kim</h1>" in email.html
    assert "<p>Dana Lee<br>Customer Success</p>" in email.html  # the included partial
    assert email.html.lstrip().startswith("<!doctype html>")  # the layout
    assert email.template_files == ("welcome.subject.j2", "welcome.html.j2", "welcome.txt.j2")
    assert email.text_from_html is False


def test_email_render_recipient_locale_falls_back_to_language_per_part() -> None:
    email = _render("welcome", locales=["de-AT", "en"])

    assert email.subject == "Willkommen an Bord, Acme Inc!"
    assert "<h1>Hallo Kim</h1>" in email.html
    assert email.text.startswith("Hello Kim,")  # no German text part: the plain one
    assert (email.locale_used.subject, email.locale_used.html, email.locale_used.text) == ("de", "de", None)
    assert email.template_files == ("welcome.de.subject.j2", "welcome.de.html.j2", "welcome.txt.j2")


def test_email_render_account_locale_used_when_recipient_locale_has_no_variant() -> None:
    email = _render("welcome", locales=["fr-CA", "de"])

    assert email.locale_used.subject == "de"
    assert email.subject.startswith("Willkommen")


def test_email_render_plain_parts_when_no_locale_matches() -> None:
    email = _render("welcome", locales=["ja", "pt-BR"])

    assert email.locale_used.subject is None
    assert email.locale_used.html is None
    assert email.subject.startswith("Welcome")


def test_email_render_resolve_parts_prefers_full_tag_then_language(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {
            "hi.subject.j2": "Hi",
            "hi.de.subject.j2": "Hallo",
            "hi.de-CH.subject.j2": "Grüezi",
            "hi.html.j2": "<p>Hi</p>",
            "hi.EN.html.j2": "<p>Hi en</p>",
        },
    )

    resolved = resolve_parts(templates, "hi", ["de-CH", "de", "en"])
    assert (resolved.subject.file, resolved.subject.locale) == ("hi.de-CH.subject.j2", "de-CH")
    assert (resolved.html.file, resolved.html.locale) == ("hi.EN.html.j2", "en")  # case-insensitive
    assert resolved.text is None

    assert resolve_parts(templates, "hi", ["de_AT"]).subject.file == "hi.de.subject.j2"


def test_email_render_missing_part_lists_files_looked_for(tmp_path: Path) -> None:
    templates = _write(tmp_path / "templates", {"hi.subject.j2": "Hi"})

    with pytest.raises(TemplateNotFound) as info:
        resolve_parts(templates, "hi", ["de-AT"])

    message = str(info.value)
    assert "no html part" in message
    for looked_for in ("hi.de-AT.html.j2", "hi.de.html.j2", "hi.html.j2"):
        assert looked_for in message
        assert looked_for in info.value.looked_for


def test_email_render_rejects_template_name_with_part_suffix(tmp_path: Path) -> None:
    with pytest.raises(TemplateNotFound, match="e.g. template: welcome"):
        resolve_parts(TEMPLATES, "welcome.html.j2", ["en"])
    with pytest.raises(TemplateNotFound, match="relative path"):
        resolve_parts(TEMPLATES, "../secrets", ["en"])


def test_email_render_autoescapes_html_only() -> None:
    email = _render("welcome", account_name="Acme <script>alert(1)</script>")

    assert "<script>" not in email.html
    assert "Acme &lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert email.subject == "Welcome aboard, Acme <script>alert(1)</script>!"
    assert "The workspace for Acme <script>alert(1)</script> is ready." in email.text


def test_email_render_derives_text_from_html() -> None:
    email = _render("checkin", tips=["Invite your team", "Connect Slack"])

    assert email.text_from_html is True
    assert email.locale_used.text is None
    assert "Hi Kim & team," in email.text
    assert "- Invite your team\n- Connect Slack" in email.text
    assert "getting started guide (https://docs.example.com/start?src=email&step=2)" in email.text
    assert "color" not in email.text  # <style> dropped
    assert "\n\n\n" not in email.text


def test_email_render_adds_unsubscribe_footer_only_when_absent() -> None:
    welcome = _render("welcome")  # leaves the link out of the HTML; its text part has it
    checkin = _render("checkin")  # has the link in the HTML

    assert welcome.html.count("tok123") == 1
    footer_at = welcome.html.index('href="https://cs.example.com/u/tok123?a=1&amp;b=2"')
    assert footer_at < welcome.html.index("</body>")
    assert welcome.text.count(UNSUBSCRIBE) == 1

    assert checkin.html.count("tok123") == 1
    assert "Don't want these emails?" not in checkin.html
    assert checkin.text.count(UNSUBSCRIBE) == 1  # from the derived link, no second footer


def test_email_render_footer_is_localized_and_added_to_text(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {"n.subject.j2": "S", "n.de.html.j2": "<p>Hallo</p>", "n.html.j2": "<p>Hi</p>", "n.txt.j2": "Hi"},
    )

    email = render_email(templates, "n", {}, locales=["de"], unsubscribe_url="https://u.example/x")

    assert email.html.startswith("<p>Hallo</p>\n<p")
    assert ">Abmelden</a>" in email.html
    assert email.text.startswith("Hi\n\n")
    assert email.text.rstrip().endswith("https://u.example/x")


def test_email_render_subject_is_one_line() -> None:
    email = _render("welcome")

    assert "\n" not in email.subject
    assert "  " not in email.subject


def test_email_render_undefined_name_reports_file_line_and_available_names(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {"w.subject.j2": "Hi", "w.html.j2": "<p>\nHello\n{{ accnt.name }}\n</p>"},
    )

    with pytest.raises(TemplateRenderError) as info:
        render_email(templates, "w", _context(), locales=["en"], unsubscribe_url=UNSUBSCRIBE)

    assert str(info.value) == (
        "`accnt` is undefined in templates/w.html.j2:3; available: account, contacts, contact, event, run, now,"
        " today, unsubscribe_url"
    )
    assert (info.value.template, info.value.lineno) == ("templates/w.html.j2", 3)


def test_email_render_error_in_included_partial_names_the_partial(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {
            "w.subject.j2": "Hi",
            "w.html.j2": '{% extends "base.html.j2" %}{% block body %}x{% endblock %}',
            "base.html.j2": '<body>{% block body %}{% endblock %}\n{% include "parts/foot.html.j2" %}</body>',
            "parts/foot.html.j2": "\n\n{{ account.nmae }}",
        },
    )

    with pytest.raises(TemplateRenderError) as info:
        render_email(templates, "w", _context(), locales=["en"], unsubscribe_url=UNSUBSCRIBE)

    message = str(info.value)
    assert message.endswith("in templates/parts/foot.html.j2:3")
    assert "'nmae' is not a field here; fields: id, name, locale, csm, metrics, properties" in message


def test_email_render_syntax_error_reports_file_line(tmp_path: Path) -> None:
    templates = _write(tmp_path / "templates", {"w.subject.j2": "Hi", "w.html.j2": "<p>\n{% if %}\n</p>"})

    with pytest.raises(TemplateRenderError) as info:
        render_email(templates, "w", {}, locales=[], unsubscribe_url=UNSUBSCRIBE)

    assert "templates/w.html.j2:2" in str(info.value)
    assert info.value.lineno == 2


def test_email_render_sandbox_refuses_dunder_access(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {"w.subject.j2": "Hi", "w.html.j2": "<p>{{ ''.__class__.__mro__ }}</p>"},
    )

    with pytest.raises(TemplateRenderError) as info:
        render_email(templates, "w", {}, locales=[], unsubscribe_url=UNSUBSCRIBE)

    assert "sandbox refused" in str(info.value)
    assert "templates/w.html.j2:1" in str(info.value)


def test_email_render_sandbox_refuses_mutating_the_context(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {"w.subject.j2": "Hi", "w.html.j2": "{{ contacts.append(1) }}"},
    )
    contacts = [{"email": "kim@acme.example"}]

    with pytest.raises(TemplateRenderError, match="sandbox refused"):
        render_email(templates, "w", {"contacts": contacts}, locales=[], unsubscribe_url=UNSUBSCRIBE)
    assert contacts == [{"email": "kim@acme.example"}]


def test_email_render_free_map_missing_key_is_none(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {
            "w.subject.j2": "Hi",
            "w.html.j2": (
                "<p>[{{ account.properties.tier }}]"
                "[{{ event.data.deal.stage }}]"
                "[{% if account.properties.churned %}churned{% else %}active{% endif %}]"
                "[{{ account.metrics.seats | default('n/a', true) }}]</p>"
            ),
        },
    )
    context = _context()
    context["event"] = {"type": "deal.updated", "data": FreeMap({"deal": {"amount": 5}})}

    email = render_email(templates, "w", context, locales=[], unsubscribe_url=UNSUBSCRIBE)

    assert "<p>[][][active][n/a]</p>" in email.html
    assert email.html.count("None") == 0


def test_email_render_welcome_fixture_leaves_missing_free_form_value_blank() -> None:
    assert "<p>Plan: </p>" in _render("welcome").html


def test_email_render_dict_key_wins_over_dict_method(tmp_path: Path) -> None:
    templates = _write(
        tmp_path / "templates",
        {
            "w.subject.j2": "{{ order.items }} items, {{ order['values'] }} values",
            "w.html.j2": "{% for k, v in account.metrics.items() %}{{ k }}={{ v }}{% endfor %}",
        },
    )
    context = _context()
    context["order"] = {"items": 3, "values": "high"}

    email = render_email(templates, "w", context, locales=[], unsubscribe_url=UNSUBSCRIBE)

    assert email.subject == "3 items, high values"
    assert "weekly_active_users=250" in email.html


def test_email_render_empty_subject_is_an_error(tmp_path: Path) -> None:
    templates = _write(tmp_path / "templates", {"w.subject.j2": "  {{ '' }}\n", "w.html.j2": "<p>x</p>"})

    with pytest.raises(TemplateRenderError, match="subject rendered empty"):
        render_email(templates, "w", {}, locales=[], unsubscribe_url=UNSUBSCRIBE)


def test_email_render_environment_is_cached_per_directory(tmp_path: Path) -> None:
    assert get_environment(TEMPLATES) is get_environment(str(TEMPLATES))
    assert get_environment(TEMPLATES) is not get_environment(tmp_path)


def test_email_render_html_to_text_handles_lists_links_and_entities() -> None:
    html = (
        "<html><head><title>T</title><script>var x = 1;</script></head><body>"
        "<h2>News &amp; notes</h2><p>Line one<br>line   two</p>"
        "<ol><li>First</li><li>Second <a href='mailto:dana@example.com'>dana@example.com</a></li></ol>"
        "<p><a href='https://x.example/a'>Open</a></p></body></html>"
    )

    assert html_to_text(html) == (
        "News & notes\n\nLine one\nline two\n\n1. First\n2. Second dana@example.com\n\nOpen (https://x.example/a)"
    )


def test_email_render_jinja_module_loads_no_delivery_code() -> None:
    # Expression code running inside Temporal workflows imports this module: it must stay light.
    probe = (
        "import sys; import touchpoint.email.jinja; "
        "print(sorted(m for m in ('sendgrid', 'smtplib', 'pydantic', 'touchpoint.email.backends') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
