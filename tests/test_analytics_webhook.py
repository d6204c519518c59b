"""Engagement counted from SendGrid's event webhook through the real API, worker and store: an
email sent by a run, then delivered, opened twice and the batch retried, counts once per kind."""

from __future__ import annotations

from tests.conftest import on_both_stores
from tests.test_sendgrid_webhook import Hook, eventually, hook, sendgrid  # noqa: F401 (fixtures)
from touchpoint.analytics import Emails, playbook_analytics


def emails(stack: Hook) -> Emails | None:
    with stack.deps.sessions() as s:
        steps = {x.step: x for x in playbook_analytics(s, "nudge").versions[0].steps}
    return steps["welcome"].emails


@on_both_stores()
async def test_analytics_counts_webhook_engagement_once_per_email_and_kind(hook: Hook) -> None:  # noqa: F811 (the fixture)
    acct = hook.new_account()
    doc = {"name": "Acme", "contacts": [{"email": "kim@acme.example", "name": "Kim", "role": "champion"}]}
    assert (await hook.http.put(f"/accounts/{acct}", json=doc)).status_code == 202
    (sent,) = await eventually(lambda: hook.sendgrid.sent[:1], "the welcome email at SendGrid")
    await eventually(lambda: (found := emails(hook)) is not None and found.sent == 1, "the email counted as sent")
    batch = [hook.sendgrid.event_for(sent, "delivered"), hook.sendgrid.event_for(sent, "open"), hook.sendgrid.event_for(sent, "open")]
    for _ in range(2):  # SendGrid retries a batch it got no 2xx for: nothing counts twice
        response = await hook.post(batch)
        assert response.status_code == 200, response.text
    found = emails(hook)
    assert found is not None
    assert (found.sent, found.delivered, found.opened, found.clicked) == (1, 1, 1, 0)
