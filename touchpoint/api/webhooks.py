"""Provider webhooks: SendGrid's Event Webhook at `POST /webhooks/sendgrid`.

SendGrid posts batches (a JSON array) of delivery events and retries any non-2xx answer for up to
24 hours, so the endpoint:

- verifies the batch's ECDSA signature over the raw body when `TOUCHPOINT_SENDGRID_WEBHOOK_KEY`
  is set, and refuses timestamps outside a replay window (401, nothing recorded);
- validates the whole batch before acting on any of it (400 with the reason);
- skips events whose `sg_event_id` it has processed before, and records an id only once its
  event is durable in Temporal (a failure answers 503 so that SendGrid retries the rest);
- turns `delivered`/`open`/`click` into `email.delivered|opened|clicked` events of the account,
  and `bounce`, `spamreport`, `unsubscribe`, `group_unsubscribe` and `dropped` (for a bounced,
  unsubscribed or spam-reporting address) into suppressions plus `email.bounced` or
  `email.unsubscribed` events.

A `bounce` of type `blocked` (a receiving server refusing for reputation or content, usually
temporary) is reported as `email.bounced` with `bounce_type: blocked` but does not suppress the
address: only hard bounces do.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from touchpoint.api.models import NOT_BLANK_PATTERN, ErrorBody, SendGridEvent, WebhookReceipt
from touchpoint.config import Settings
from touchpoint.dsl.runtime import EventIn
from touchpoint.ingest import send_event
from touchpoint.store import repo, write_tx
from touchpoint.store.models import Contact, Message, ProviderEvent

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
REPLAY_WINDOW = 600.0
"""Seconds a signed batch stays acceptable: SendGrid signs when it posts, retries re-sign."""
MAX_EVENTS = 10_000
"""More than SendGrid's 768 KB batches ever hold; a bigger body is not from SendGrid."""
MAX_TIMESTAMP = 253402300799
"""The last second of year 9999: a later `timestamp` is not a time."""
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
CONCURRENT_ACCOUNTS = 16

ENGAGEMENT = {"delivered": "email.delivered", "open": "email.opened", "click": "email.clicked"}
OPT_OUTS: dict[str, repo.SuppressionReason] = {
    "spamreport": "spamreport",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
# SendGrid's `reason` for a message it dropped because of its own suppression lists.
DROPPED_REASONS: dict[str, repo.SuppressionReason] = {
    "bounced address": "bounced",
    "unsubscribed address": "unsubscribed",
    "spam reporting address": "spamreport",
}


class WebhookKeyError(ValueError):
    """`TOUCHPOINT_SENDGRID_WEBHOOK_KEY` is not a usable public key."""


@dataclass
class _Outcome:
    """What one provider event becomes: an optional suppression and events for accounts."""

    sg_event_id: str
    suppress: repo.SuppressionReason | None = None
    events: list[tuple[str, EventIn]] = field(default_factory=list)
    message_id: str | None = None
    """Our message the event is about, when it names one we sent (analytics count it)."""
    event_type: str | None = None


def load_verifier(public_key_b64: str) -> Any:
    """A sendgrid `EventWebhook` for the base64 DER public key shown in SendGrid's settings.

    Raises:
        WebhookKeyError: The key is not a base64 DER P-256 public key.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from sendgrid.helpers.eventwebhook import EventWebhook

    key = "".join(public_key_b64.split())
    try:
        verifier = EventWebhook(key)
    except (ValueError, TypeError) as exc:
        raise WebhookKeyError(
            "TOUCHPOINT_SENDGRID_WEBHOOK_KEY is not a valid public key: copy the verification key from "
            f"SendGrid (Settings > Mail Settings > Signed Event Webhook), it starts with MFkwEwYHKoZIzj0 ({exc})"
        ) from None
    if not isinstance(verifier.public_key, ec.EllipticCurvePublicKey):
        raise WebhookKeyError("TOUCHPOINT_SENDGRID_WEBHOOK_KEY must be SendGrid's ECDSA (P-256) verification key")
    return verifier


def verify(verifier: Any, body: str, signature: str | None, timestamp: str | None, *, now: float) -> str | None:
    """Why a signed batch is refused, or None when its signature and timestamp are good."""
    if not signature or not timestamp:
        return f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}: enable the Signed Event Webhook in SendGrid"
    if not timestamp.isdigit():
        return f"{TIMESTAMP_HEADER} must be Unix seconds, found {timestamp[:40]!r}"
    if abs(now - int(timestamp)) > REPLAY_WINDOW:
        return f"the signed timestamp is more than {REPLAY_WINDOW:.0f}s away from now (a replayed or delayed batch)"
    try:
        good = bool(verifier.verify_signature(body, signature, timestamp))
    except (binascii.Error, ValueError):
        good = False
    return None if good else "the signature does not match the body (wrong TOUCHPOINT_SENDGRID_WEBHOOK_KEY?)"


def parse_batch(raw: str) -> list[dict[str, Any]]:
    """The events of a batch, each checked for the fields every SendGrid event has.

    Raises:
        ValueError: saying what is wrong and where.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array of events, found a JSON {type(data).__name__}")
    if len(data) > MAX_EVENTS:
        raise ValueError(f"a batch holds at most {MAX_EVENTS} events, found {len(data)}")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"[{i}]: expected an event object, found {type(item).__name__}")
        for name in ("event", "email", "sg_event_id"):
            value = item.get(name)
            if not isinstance(value, str) or not _NOT_BLANK.search(value) or len(value) > 500:
                raise ValueError(f"[{i}].{name}: expected a non-blank string of at most 500 characters, found {value!r:.80}")
        stamp = item.get("timestamp")
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 <= stamp <= MAX_TIMESTAMP):
            raise ValueError(f"[{i}].timestamp: expected Unix seconds between 0 and {MAX_TIMESTAMP}, found {stamp!r:.40}")
    return data


def _message_id(event: Mapping[str, Any]) -> str | None:
    # The backend adds `touchpoint_message_id`; the activity's own custom args name it
    # `touchpoint_message`. Either reaches the event's top level.
    for name in ("touchpoint_message_id", "touchpoint_message"):
        value = event.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _text(event: Mapping[str, Any], name: str) -> str | None:
    value = event.get(name)
    return value if isinstance(value, str) and value else None


def _plan(s: Session, batch: Sequence[Mapping[str, Any]]) -> list[_Outcome]:
    """Decide what each new event of the batch becomes (reads only)."""
    ids = {str(e["sg_event_id"]) for e in batch}
    seen = set(s.scalars(select(ProviderEvent.id).where(ProviderEvent.id.in_(ids))))
    message_ids = {m for m in (_message_id(e) for e in batch) if m}
    messages = {m.id: m for m in s.scalars(select(Message).where(Message.id.in_(message_ids)))} if message_ids else {}
    outcomes: list[_Outcome] = []
    for event in batch:
        sg_id = str(event["sg_event_id"])
        if sg_id in seen:
            continue
        seen.add(sg_id)  # the same event twice in one batch
        outcome = _Outcome(sg_event_id=sg_id)
        outcomes.append(outcome)
        kind = str(event["event"])
        to = repo.normalize_email(str(event["email"]))
        message_id = _message_id(event)
        message = messages.get(message_id) if message_id else None
        event_type: str | None = ENGAGEMENT.get(kind)
        detail: dict[str, Any] = {}
        if kind == "bounce":
            bounce_type = _text(event, "type") or "bounce"
            outcome.suppress = "bounced" if bounce_type == "bounce" else None
            event_type = "email.bounced"
            detail = {"reason": _text(event, "reason"), "bounce_type": bounce_type}
        elif kind in OPT_OUTS:
            outcome.suppress = OPT_OUTS[kind]
            event_type = "email.unsubscribed"
            detail = {"reason": outcome.suppress}
        elif kind == "dropped":
            outcome.suppress = DROPPED_REASONS.get((_text(event, "reason") or "").strip().lower())
            if outcome.suppress is not None:
                event_type = "email.bounced" if outcome.suppress == "bounced" else "email.unsubscribed"
                detail = {"reason": outcome.suppress}
        if event_type is None:
            continue  # processed, deferred, group_resubscribe...: nothing for playbooks
        if kind == "click":
            detail["url"] = _text(event, "url")
        outcome.message_id, outcome.event_type = (message.id if message else None), event_type
        data = {
            "message_id": message_id,
            "playbook": _text(event, "touchpoint_playbook") or (message.playbook_id if message else None),
            "step": _text(event, "touchpoint_step") or (message.step if message else None),
            "template": message.template if message else None,
            "to": to,
            **detail,
        }
        accounts = _accounts_of(s, event, message, to, every_contact=outcome.suppress is not None)
        stamp = event.get("timestamp")
        at = datetime.fromtimestamp(float(stamp), UTC) if stamp is not None else None
        for account_id in accounts:
            # A deterministic id: the account workflow drops a repeat of a concurrent retry.
            suffix = "" if len(accounts) == 1 else f":{account_id}"
            outcome.events.append(
                (account_id, EventIn(id=f"sendgrid:{sg_id}{suffix}", type=event_type, at=at, data=data))
            )
    return outcomes


def _accounts_of(
    s: Session, event: Mapping[str, Any], message: Message | None, to: str, *, every_contact: bool
) -> list[str]:
    account = _text(event, "touchpoint_account") or (message.account_id if message else None)
    if account:
        return [account]
    if not every_contact:
        return []
    # An opt-out for a message we cannot place (sent before custom args, or by hand): tell
    # every account that has this contact, as the unsubscribe link does.
    return sorted(set(s.scalars(select(Contact.account_id).where(Contact.email == to))))


def _suppress(
    sessions: sessionmaker[Session], outcomes: Sequence[_Outcome], batch: Sequence[Mapping[str, Any]]
) -> None:
    emails = {str(e["sg_event_id"]): str(e["email"]) for e in batch}
    wanted = [(emails[o.sg_event_id], o.suppress) for o in outcomes if o.suppress is not None]
    if not wanted:
        return
    with write_tx(sessions) as s:
        for email, reason in wanted:
            assert reason is not None
            repo.suppress(s, email, reason, "sendgrid")


def _record(sessions: sessionmaker[Session], done: Sequence[_Outcome]) -> None:
    """Record the events processed, and count each new one in the analytics of its message's
    step in the same transaction (a batch SendGrid retries counts nothing twice)."""
    if not done:
        return
    with write_tx(sessions) as s:
        for outcome in done:
            if repo.record_provider_event(s, outcome.sg_event_id) and outcome.message_id and outcome.event_type:
                repo.count_engagement(s, outcome.message_id, outcome.event_type)


def make_router(settings: Settings, client: Client, sessions: sessionmaker[Session]) -> APIRouter:
    """Routes for provider callbacks.

    Raises:
        WebhookKeyError: `TOUCHPOINT_SENDGRID_WEBHOOK_KEY` is set but is not a valid key.
    """
    router = APIRouter()
    verifier = load_verifier(settings.sendgrid_webhook_key) if settings.sendgrid_webhook_key else None
    queue = settings.task_queue

    # The body is read raw (its signature covers the exact bytes), so the document states its schema.
    batch_schema = {"type": "array", "maxItems": MAX_EVENTS, "items": SendGridEvent.model_json_schema()}
    # 401 comes from the signature check (a key is set) or, without a key on an API reachable
    # from other machines, from `touchpoint.api.ops.OpsMiddleware`, which refuses every batch.
    refused = (
        "A bad or missing signature, or a stale timestamp."
        if verifier is not None
        else "Unsigned batches are refused on an API reachable from other machines: set TOUCHPOINT_SENDGRID_WEBHOOK_KEY."
    )
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": why}
        for status, why in (
            (400, "Not a SendGrid event batch; nothing was recorded."),
            (401, refused),
            (503, "Temporal did not take some events; SendGrid retries the batch."),
        )
        if status != 401 or not settings.sendgrid_unsigned_allowed
    }

    @router.post(
        "/webhooks/sendgrid",
        response_model=WebhookReceipt,
        responses=errors,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": batch_schema}}}},
    )
    async def sendgrid_events(request: Request) -> WebhookReceipt:
        """SendGrid's Event Webhook: a JSON array of events, signed when a key is configured."""
        raw = await request.body()
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the body is not UTF-8 JSON") from None
        if verifier is not None:
            refused = verify(
                verifier,
                body,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
                now=time.time(),
            )
            if refused:
                raise HTTPException(401, refused)
        try:
            batch = parse_batch(body)
        except ValueError as exc:
            raise HTTPException(400, f"not a SendGrid event batch: {exc}") from None

        def plan() -> list[_Outcome]:
            with sessions() as s:
                return _plan(s, batch)

        outcomes = await asyncio.to_thread(plan)
        await asyncio.to_thread(_suppress, sessions, outcomes, batch)
        # Events of one account keep their batch order (an open before its click); accounts
        # proceed side by side.
        by_account: dict[str, list[EventIn]] = {}
        for outcome in outcomes:
            for account_id, event in outcome.events:
                by_account.setdefault(account_id, []).append(event)
        failed: set[str] = set()
        gate = asyncio.Semaphore(CONCURRENT_ACCOUNTS)

        async def deliver(account_id: str, events: list[EventIn]) -> None:
            async with gate:
                for event in events:
                    try:
                        await send_event(client, queue, sessions, account_id, event)
                    except Exception:
                        failed.add(account_id)
                        return

        await asyncio.gather(*(deliver(a, evs) for a, evs in by_account.items()))
        done = [o for o in outcomes if not any(a in failed for a, _ in o.events)]
        await asyncio.to_thread(_record, sessions, done)
        if failed:
            raise HTTPException(
                503, f"could not hand events of {len(failed)} account(s) to Temporal; SendGrid will retry them"
            )
        return WebhookReceipt(received=len(batch), processed=len(outcomes), duplicates=len(batch) - len(outcomes))

    return router
