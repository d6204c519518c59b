"""`touchpoint preview` for drafts: the prompt and the offline draft per draft step, and emails
that show a draft rendered with it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import invoke_cli

ROOT = Path(__file__).resolve().parent.parent


def test_drafts_preview_writes_each_prompt_and_the_draft_the_emails_show(tmp_path: Path) -> None:
    out = tmp_path / "preview"
    result = invoke_cli(
        ["preview", str(ROOT / "playbooks/renewal-ai-plan.yaml"), "--account", str(ROOT / "playbooks/samples/enterprise.yaml"), "--out", str(out)],
        {"TOUCHPOINT_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    assert f"draft plan_draft -> run.vars.plan: its prompt and the draft without a model (91 words): {out}/globex/plan_draft.draft.txt" in result.output
    plan = (out / "globex" / "plan_draft.draft.txt").read_text()
    prompt, draft = plan.split("== the draft without a model: the fallback\n")
    assert "== the prompt the model gets\n" in prompt and "1450 active" in prompt and "90-minute AI workshop" in prompt
    assert draft.startswith("AI transformation plan for Globex Corporation\n")
    # The plan email renders the draft, as the approver will review it.
    html = (out / "globex" / "plan_email.default.html").read_text()
    assert "<p>1. Start (days 1-30): pick the two workflows where your 1450 active users spend the most time" in html
    assert "AI transformation plan for Globex Corporation" in (out / "globex" / "plan_email.approval.txt").read_text()
    assert (out / "globex" / "value_draft.draft.txt").is_file()
