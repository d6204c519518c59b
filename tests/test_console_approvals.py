"""The console's approvals in a real browser: Debian's chromium driven by Playwright, against the
real API app served by uvicorn, a real store, and account workflows on a time-skipping server of
the test's own that hold their emails for approval (the requests are made by the runs, never
written by the test).

A reviewer signs in with the token and their address, finds the requests (pending first, by
approver), reads each recipient's email as it will go (in a sandboxed frame: its script does not
run, its links go nowhere), tries a broken edit (refused with the reason, nothing decided),
approves with an edit (the outbox gets the edited email, rendered per recipient, signed by the
reviewer) and sees the decision; another request is rejected with a reason (nothing sent), one
decided elsewhere meanwhile and one whose run ended answer with a clear 409; forged posts are
refused.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import Stack, eventually, on_both_stores, write_folder
from tests.test_console import Browser, serve
from tests.test_console import browser as browser  # the fixture, used by name
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.ingest import control_run, put_account, start_now
from touchpoint.store import repo
from workflows.messages import RunControl

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
PLAYBOOK = """\
playbook: welcome-review
trigger: manual
audience: [champion, admin]
steps:
  - email: {template: welcome, approval: {by: csm, timeout: 5d}}
    id: welcome
  - note: {text: "after the email"}
    id: after
"""
# The email's own markup: a style that must apply in the preview, a script that must not run.
TEMPLATES = {
    "templates/welcome.subject.j2": "Welcome to Acme, {{ account.name }}",
    "templates/welcome.html.j2": (
        "<html><head><style>body { font-family: Arial, sans-serif; color: #1d2330; } "
        ".card { max-width: 520px; margin: 16px auto; padding: 20px 24px; border: 1px solid #dfe4ec; border-radius: 8px; } "
        "p.hi { color: rgb(36, 86, 201); font-size: 18px; } a.button { background: #2456c9; color: #fff; padding: 9px 16px; border-radius: 6px; text-decoration: none; } "
        ".foot { color: #77808f; font-size: 12px; }</style></head><body><div class=\"card\">"
        "<p class=\"hi\">Hi {{ contact.name }},</p><p>{{ account.name }} is all set up on Acme. Your first step: invite your team.</p>"
        "<p><a class=\"button\" href=\"https://app.example.invalid/invite\">Invite your team</a></p>"
        "<script>document.body.textContent = 'SCRIPT RAN'</script>"
        "<p class=\"foot\"><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p></div></body></html>"
    ),
}
SCRIPT_BLOCKED = "Blocked script execution in 'about:srcdoc'"
TOKEN = "console-approvals-" + uuid.uuid4().hex


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A server of its own: the runs wait for decisions that must not be skipped by another test."""
    return own_stack


def account(name: str, csm: str = "dana@example.com") -> AccountDoc:
    account_id = f"{name.lower()}-{uuid.uuid4().hex[:6]}"
    return AccountDoc.model_validate(
        {
            "id": account_id,
            "name": name,
            "timezone": "UTC",
            "csm": {"name": "CSM", "email": csm},
            "contacts": [
                {"email": f"kim@{account_id}.example", "name": "Kim", "role": "champion"},
                {"email": f"lee@{account_id}.example", "name": "Lee", "role": "admin"},
            ],
        }
    )


async def requested(stack: Stack, doc: AccountDoc) -> tuple[str, Any]:
    """Put the account, start the playbook; its run's id and the approval request it made."""
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
    answer = await start_now(stack.client, stack.task_queue, doc.id, "welcome-review")
    assert answer.result == "started", answer
    run_id = str(answer.run_id)
    row = await eventually(stack, lambda s: next(iter(repo.list_approvals(s, run_id=run_id)), None))
    return run_id, row


def outbox(stack: Stack) -> dict[str, Any]:
    """The outbox's messages by recipient (parsed as a mail client would)."""
    found = {}
    for path in stack.settings.outbox_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[message["To"].addresses[0].addr_spec] = message
    return found


def html_of(message: Any) -> str:
    return str(message.get_body(preferencelist=("html",)).get_content())


async def run_ended(stack: Stack, run_id: str) -> None:
    await eventually(stack, lambda s: (r := repo.get_run(s, run_id)) is not None and r.status == "ended")


@on_both_stores()
async def test_console_approvals_review_edit_approve_reject_and_refuse(stack: Stack, folder: Path, browser: Browser, store: str) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": PLAYBOOK, **TEMPLATES})
    stack.deploy(folder)
    acme, globex, initech, umbrella = account("Acme"), account("Globex", csm="sam@example.com"), account("Initech"), account("Umbrella")
    runs = {doc.id: await requested(stack, doc) for doc in (acme, globex, initech, umbrella)}
    (acme_run, acme_req), (globex_run, globex_req) = runs[acme.id], runs[globex.id]
    settings = load_settings(home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue, api_token=SecretStr(TOKEN))
    page = browser.page
    async with serve(create_app(settings, stack.client, stack.deps.sessions)) as url:
        # --- without a session: the login form, then back to the approvals
        await page.goto(f"{url}/console/approvals")
        assert urlsplit(page.url).path == "/console/login"
        await page.fill("#token", TOKEN)
        await page.fill("#by", "lead@example.com")
        await page.click("button:has-text('Sign in')")
        await page.wait_for_url("**/console/approvals")

        # --- the list: every pending request, each with its recipients; filtered by approver
        listed = await page.locator("table.approvals tbody tr").evaluate_all("rows => rows.map(r => [r.dataset.approval, r.dataset.status])")
        assert sorted(map(tuple, listed)) == sorted((row.id, "pending") for _, row in runs.values())
        assert await page.locator("#pending-count").inner_text() == "4"
        await page.fill("input[name=by]", "sam@example.com")
        await page.click("form.filters button")
        await page.wait_for_url("**by=sam%40example.com**")
        assert await page.locator("table.approvals tbody tr").evaluate_all("rows => rows.map(r => r.dataset.approval)") == [globex_req.id]
        await page.goto(f"{url}/console")
        assert await page.locator("#pending-approvals").inner_text() == "4"
        await page.click("a:has(#pending-approvals)")
        await page.wait_for_url("**/console/approvals?status=pending")
        await browser.shot("approvals")

        # --- one request: each recipient's email as it will go, in a frame that runs nothing
        await page.click(f'tr[data-approval="{acme_req.id}"] a.review')
        await page.wait_for_url(f"**/console/approvals/{acme_req.id}")
        kim, lee = (c.email for c in acme.contacts)
        assert await page.locator("article.email").evaluate_all("els => els.map(e => e.dataset.to)") == [kim, lee]
        kim_frame = page.locator(f'article.email[data-to="{kim}"] iframe')
        assert await kim_frame.get_attribute("sandbox") == ""
        assert await kim_frame.get_attribute("srcdoc") == acme_req.emails[0]["rendered"]["html"]  # the stored rendering, as is
        assert await page.locator(f'article.email[data-to="{kim}"] .subject').inner_text() == f"Welcome to Acme, {acme.name}"
        assert await page.frame_locator(f'article.email[data-to="{lee}"] iframe').locator("p.hi").inner_text() == "Hi Lee,"
        frame = page.frame_locator(f'article.email[data-to="{kim}"] iframe')
        assert await frame.locator("p.hi").inner_text() == "Hi Kim,"  # the script did not replace the body
        assert await frame.locator("p.hi").evaluate("p => getComputedStyle(p).color") == "rgb(36, 86, 201)"  # its own style applies
        await frame.locator("a", has_text="Unsubscribe").click()  # goes nowhere: the customer stays subscribed
        await page.wait_for_timeout(300)
        with stack.deps.sessions() as s:
            assert not repo.is_suppressed(s, kim)
        # Blocked by the frame's sandbox and the page's policy: what the console expects to say.
        browser.errors[:] = [e for e in browser.errors if SCRIPT_BLOCKED not in e and "violates the following Content Security Policy directive: \"frame-src 'none'\"" not in e]
        await page.reload()
        assert "lead@example.com" in await page.locator("section.decision").inner_text()
        await browser.shot("approval", readme=True, full_page=False)
        await page.set_viewport_size({"width": 390, "height": 800})  # readable on a phone
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.set_viewport_size({"width": 1280, "height": 900})

        # --- a broken edit: refused with the reason, typed text kept, nothing decided
        await page.click("details.edit summary")
        assert await page.locator("#edit-subject").input_value() == "Welcome to Acme, {{ account.name }}"  # the template source
        assert "Hi {{ contact.name }}" in await page.locator("#edit-html").input_value()
        await page.fill("#edit-html", "<p>Dear {{ contact.nmae }}</p>")
        async with page.expect_navigation():
            await page.click("button:has-text('Approve with this edit')")
        assert "nmae" in await page.locator("#refusal").inner_text()
        assert await page.locator("#edit-html").input_value() == "<p>Dear {{ contact.nmae }}</p>"
        with stack.deps.sessions() as s:
            assert repo.get_approval(s, acme_req.id).status == "pending"  # type: ignore[union-attr]
        browser.errors[:] = [e for e in browser.errors if "status of 422" not in e and SCRIPT_BLOCKED not in e]

        # --- approve with an edit: rendered for each recipient, signed by the reviewer, sent once
        await page.fill("#edit-subject", "A note for {{ contact.name }}")
        await page.fill("#edit-html", "<p>Dear {{ contact.name }},\nwelcome aboard {{ '<b>' }}</p>")
        await page.click("button:has-text('Approve with this edit')")
        await page.wait_for_url("**done=approved")
        await run_ended(stack, acme_run)
        with stack.deps.sessions() as s:
            decided = repo.get_approval(s, acme_req.id)
            assert decided is not None and (decided.status, decided.decided_by) == ("approved", "lead@example.com")
            assert decided.html == "<p>Dear {{ contact.name }},\nwelcome aboard {{ '<b>' }}</p>"  # the browser's CRLF undone
        sent = outbox(stack)
        assert (str(sent[kim]["Subject"]), str(sent[lee]["Subject"])) == ("A note for Kim", "A note for Lee")
        assert "<p>Dear Kim,\nwelcome aboard &lt;b&gt;</p>" in html_of(sent[kim]) and "Dear Lee" in html_of(sent[lee])
        assert "/unsubscribe/" in html_of(sent[kim])  # the edit dropped it: added back
        assert len(sent) == 2

        # --- the decided request shows its decision, its edit and what went out
        await page.reload()
        decision = page.locator("section.decision")
        assert await decision.get_attribute("data-status") == "approved"
        assert await decision.locator(".by").inner_text() == "lead@example.com"
        assert await decision.locator(".edited-subject").inner_text() == "A note for {{ contact.name }}"
        assert sorted(await decision.locator("table.sent td.subject").all_inner_texts()) == ["A note for Kim", "A note for Lee"]
        assert await page.locator("form.approve").count() == 0
        await page.goto(f"{url}/console/approvals")
        order = await page.locator("table.approvals tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
        assert order == ["pending", "pending", "pending", "approved"]  # pending first
        await page.goto(f"{url}/console/accounts/{acme.id}")
        assert await page.locator(f'li[data-approval="{acme_req.id}"]').get_attribute("data-status") == "approved"
        timeline = await page.locator('tr.line[data-action="approval"] td:last-child').all_inner_texts()
        assert timeline == ["requested of dana@example.com (2 recipients)", "approved by lead@example.com, edited subject and html"]

        # --- decided elsewhere meanwhile, or its run ended: a clear 409, nothing decided here
        initech_run, initech_req = runs[initech.id]
        await page.goto(f"{url}/console/approvals/{initech_req.id}")
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            assert (await api.post(f"/approvals/{initech_req.id}", json={"decision": "rejected", "reason": "by mail"})).status_code == 200
        async with page.expect_navigation():
            await page.click("button:has-text('Approve and send as shown')")
        assert "already rejected by dana@example.com" in await page.locator("#refusal").inner_text()
        assert await page.locator("section.decision").get_attribute("data-status") == "rejected"  # the request as it is now
        umbrella_run, umbrella_req = runs[umbrella.id]
        await page.goto(f"{url}/console/approvals/{umbrella_req.id}")
        await control_run(stack.client, umbrella.id, RunControl(action="cancel", run_id=umbrella_run))
        await run_ended(stack, umbrella_run)
        async with page.expect_navigation():
            await page.click("button:has-text('Approve and send as shown')")
        assert "run ended" in await page.locator("#refusal").inner_text()
        assert f"Approval {umbrella_req.id}" in (closed := await page.locator("#closed").inner_text()) and "its run ended" in closed
        assert await page.locator("form.approve").count() == 0
        browser.errors[:] = [e for e in browser.errors if "status of 409" not in e and SCRIPT_BLOCKED not in e]
        await run_ended(stack, initech_run)
        with stack.deps.sessions() as s:
            assert repo.list_messages(s, run_id=initech_run) == repo.list_messages(s, run_id=umbrella_run) == []

        # --- forged posts: no session, or a session without its CSRF token, decide nothing
        cookie = next(c for c in await page.context.cookies() if c["name"] == "touchpoint_console")
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get(f"/console/approvals/{globex_req.id}")).status_code == 303
            forged = await http.post(f"/console/approvals/{globex_req.id}", data={"decision": "approved", "csrf": "guess"})
            assert forged.status_code == 403
            http.cookies.set("touchpoint_console", cookie["value"], domain="127.0.0.1", path="/console")
            assert (await http.post(f"/console/approvals/{globex_req.id}", data={"decision": "approved"})).status_code == 403
            other_site = await http.post(f"/console/approvals/{globex_req.id}", data={"decision": "approved"}, headers={"origin": "https://evil.example"})
            assert other_site.status_code == 403
        with stack.deps.sessions() as s:
            assert repo.get_approval(s, globex_req.id).status == "pending"  # type: ignore[union-attr]

    # --- without a token, the console asks the reviewer's address with the decision; reject
    open_settings = load_settings(home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue)
    async with serve(create_app(open_settings, stack.client, stack.deps.sessions)) as url:
        await page.context.clear_cookies()
        await page.goto(f"{url}/console/approvals/{globex_req.id}")
        await page.click("details.reject summary")
        await page.fill("form.reject-form textarea[name=reason]", "Wrong tone for Globex")
        await page.fill("form.reject-form input[name=by]", "sam@example.com")
        await page.click("button:has-text('Reject: send nothing')")
        await page.wait_for_url("**done=rejected")
        assert await page.locator("section.decision q.reason").inner_text() == "Wrong tone for Globex"
        await run_ended(stack, globex_run)
        with stack.deps.sessions() as s:
            rejected = repo.get_approval(s, globex_req.id)
            assert rejected is not None and (rejected.status, rejected.decided_by, rejected.reason) == ("rejected", "sam@example.com", "Wrong tone for Globex")
            assert repo.list_messages(s, run_id=globex_run) == []
        assert "no email of this request was sent" in await page.locator("section.decision").inner_text()
        await page.goto(f"{url}/console/approvals")
        statuses = dict(await page.locator("table.approvals tbody tr").evaluate_all("rows => rows.map(r => [r.dataset.approval, r.dataset.status])"))
        assert statuses == {acme_req.id: "approved", globex_req.id: "rejected", initech_req.id: "rejected", umbrella_req.id: "closed"}
        assert await page.locator("#pending-count").inner_text() == "0"
    assert len(outbox(stack)) == 2  # only Acme's two edited emails, ever
    browser.errors[:] = [e for e in browser.errors if SCRIPT_BLOCKED not in e]
    browser.check_clean()
