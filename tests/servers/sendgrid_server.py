"""A local SendGrid stand-in: ``POST /v3/mail/send`` as documented, plus a webhook signer.

It follows /work/shared/contracts/sendgrid.md: 401 without the right ``Bearer`` key, 202 with an
empty body and ``X-Message-Id``, 200 in sandbox mode, 400 ``errors[]`` (with ``field``) for
invalid bodies and for addresses on a "rejected" list, 403 for an unverified sender, and a
programmable queue of failures and delays::

    with run_sendgrid_server("SG.test.key") as sg:
        sg.fail_next(429, headers={"Retry-After": "1"}, times=2)
        sg.storm(0.3)  # or: refuse 30% of requests with 429 (Retry-After) and 5xx
        backend = SendGridBackend("SG.test.key", host=sg.url)
        ...
        assert sg.sent[0].body["subject"] == "Welcome"

``EventWebhookSigner`` signs Event Webhook batches the way SendGrid does (ECDSA P-256 over
timestamp + raw body) for tests of the webhook endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "EventWebhookSigner",
    "FakeSendGrid",
    "ReceivedMail",
    "post_events",
    "run_sendgrid_server",
    "validate_mail_send",
]

MAIL_SEND_PATH = "/v3/mail/send"
_MAX_RECIPIENTS = 1000
_MAX_CATEGORIES = 10
_MAX_CUSTOM_ARGS_BYTES = 10_000
_RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
_DEFAULT_FAILURE_MESSAGES = {
    400: "Bad Request",
    401: "authorization required",
    403: "access forbidden",
    404: "resource not found",
    413: "content too large",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}
_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    b"<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)

Error = dict[str, Any]


def _error(message: str, field: str | None) -> Error:
    return {"message": message, "field": field, "help": None}


def _errors_body(errors: Sequence[Error]) -> bytes:
    return json.dumps({"errors": list(errors)}).encode()


def _valid_email(value: object) -> bool:
    if not isinstance(value, str) or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain and not any(c.isspace() for c in value)


def _check_address(value: object, where: str, *, recipient: bool) -> list[Error]:
    if not isinstance(value, Mapping) or "email" not in value:
        return [_error("The email parameter is required.", f"{where}.email")]
    if not _valid_email(value["email"]):
        return [_error("Does not contain a valid address.", f"{where}.email")]
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        return [_error("Invalid type. Expected: string.", f"{where}.name")]
    if recipient and isinstance(name, str) and (";" in name or "," in name):
        return [_error("The name may not contain ; or , characters.", f"{where}.name")]
    return []


def validate_mail_send(body: object) -> list[Error]:
    """Check a ``/v3/mail/send`` body against the documented rules; return ``errors[]``."""
    if not isinstance(body, Mapping):
        return [_error("Bad Request", None)]
    errors: list[Error] = []
    uses_template = bool(body.get("template_id"))

    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > _MAX_RECIPIENTS:
        errors.append(_error("The personalizations field may have at most 1000 items.", "personalizations"))
    seen: dict[str, str] = {}
    total = 0
    for i, p in enumerate(personalizations):
        where = f"personalizations.{i}"
        if not isinstance(p, Mapping):
            errors.append(_error("Invalid type. Expected: object.", where))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
                    f"{where}.to",
                )
            )
        for kind in ("to", "cc", "bcc"):
            addresses = p.get(kind) or []
            if not isinstance(addresses, list):
                errors.append(_error("Invalid type. Expected: array.", f"{where}.{kind}"))
                continue
            for j, address in enumerate(addresses):
                total += 1
                errors.extend(_check_address(address, f"{where}.{kind}.{j}", recipient=True))
                email = address.get("email") if isinstance(address, Mapping) else None
                if isinstance(email, str):
                    key = email.lower()
                    if key in seen:
                        errors.append(
                            _error(
                                "Each email address in the personalization block should be unique between to, cc,"
                                f" and bcc. We found the first duplicate instance of [{email}] in the"
                                f" {where}.{kind} field.",
                                f"{where}.{kind}",
                            )
                        )
                    seen[key] = f"{where}.{kind}.{j}"
    if total > _MAX_RECIPIENTS:
        errors.append(
            _error(
                f"The total number of recipients (to, cc and bcc) must be at most 1000; found {total}.",
                "personalizations",
            )
        )

    sender = body.get("from")
    if sender is None:
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that requires the email"
                " parameter, but may also contain a name parameter.",
                "from",
            )
        )
    else:
        errors.extend(_check_address(sender, "from", recipient=False))
    if body.get("reply_to") is not None and body.get("reply_to_list"):
        errors.append(_error("The reply_to and reply_to_list fields are mutually exclusive.", "reply_to"))

    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        errors.append(_error("The subject must be a string of at least one character.", "subject"))
    every_personalization_has_subject = bool(personalizations) and all(
        isinstance(p, Mapping) and p.get("subject") for p in personalizations
    )
    if not uses_template and not subject and not every_personalization_has_subject:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a template with a subject"
                " defined or if every personalization has a subject defined.",
                "subject",
            )
        )

    content = body.get("content")
    if not uses_template and (not isinstance(content, list) or not content):
        errors.append(
            _error(
                "Unless a valid template_id is provided, the content parameter is required. There must be at least"
                " one defined content block.",
                "content",
            )
        )
    elif isinstance(content, list):
        types: list[str] = []
        for i, block in enumerate(content):
            if not isinstance(block, Mapping):
                errors.append(_error("Invalid type. Expected: object.", f"content.{i}"))
                continue
            for key in ("type", "value"):
                value = block.get(key)
                if not isinstance(value, str) or not value:
                    errors.append(
                        _error(
                            f"The content {key} must be a string at least one character in length.",
                            f"content.{i}.{key}",
                        )
                    )
            types.append(str(block.get("type")))
        if "text/plain" in types and types[0] != "text/plain":
            errors.append(_error("The text/plain content type must be first in the content array.", "content.0.type"))

    categories = body.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            errors.append(_error("Invalid type. Expected: array.", "categories"))
        else:
            if len(categories) > _MAX_CATEGORIES:
                errors.append(_error("Too many categories. The max number of categories is 10.", "categories"))
            if len({str(c) for c in categories}) != len(categories):
                errors.append(_error("The categories must be unique.", "categories"))
            for i, c in enumerate(categories):
                if not isinstance(c, str) or not c or len(c) > 255:
                    errors.append(_error("A category must be a string of 1 to 255 characters.", f"categories.{i}"))

    custom_args = body.get("custom_args")
    if custom_args is not None:
        if not isinstance(custom_args, Mapping):
            errors.append(_error("Invalid type. Expected: object.", "custom_args"))
        else:
            for key, value in custom_args.items():
                if not isinstance(value, str):
                    errors.append(
                        _error(f"Invalid type. Expected: string, given: {type(value).__name__}.", f"custom_args.{key}")
                    )
            if len(json.dumps(custom_args).encode()) >= _MAX_CUSTOM_ARGS_BYTES:
                errors.append(_error("The custom arguments must total less than 10000 bytes.", "custom_args"))

    asm = body.get("asm")
    if asm is not None:
        if (
            not isinstance(asm, Mapping)
            or not isinstance(asm.get("group_id"), int)
            or isinstance(asm.get("group_id"), bool)
        ):
            errors.append(_error("The asm group_id is required and must be an integer.", "asm.group_id"))
        elif len(asm.get("groups_to_display") or []) > 25:
            errors.append(_error("The asm groups_to_display may have at most 25 items.", "asm.groups_to_display"))

    headers = body.get("headers")
    if headers is not None:
        if not isinstance(headers, Mapping):
            errors.append(_error("Invalid type. Expected: object.", "headers"))
        else:
            for key, value in headers.items():
                if str(key).lower() in _RESERVED_HEADERS:
                    errors.append(_error(f"The header {key} is reserved and cannot be set.", f"headers.{key}"))
                elif not isinstance(value, str):
                    errors.append(_error("Invalid type. Expected: string.", f"headers.{key}"))
    return errors


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted ``/v3/mail/send`` request."""

    body: dict[str, Any]
    headers: dict[str, str]
    message_id: str

    @property
    def recipients(self) -> list[str]:
        """Every ``to`` address of every personalization."""
        return [a["email"] for p in self.body.get("personalizations", []) for a in p.get("to", [])]


@dataclass(frozen=True)
class _Failure:
    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSendGrid

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests) is expected; anything else is worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeSendGrid/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _reply(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.body:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        response = self.server.fake._handle(self.path, dict(self.headers.items()), raw)
        if response is not None:
            self._reply(response)

    def _not_allowed(self) -> None:
        self._reply(_Response(405, _errors_body([_error("method not allowed", None)])))

    do_GET = do_PUT = do_PATCH = do_DELETE = _not_allowed


class FakeSendGrid:
    """The server's state and controls; get one from :func:`run_sendgrid_server`.

    Attributes:
        api_key: The only key accepted.
        verified_senders: From addresses allowed to send (case-insensitive); None allows any.
        rejected_addresses: Recipients answered with 400 (as SendGrid does for an invalid
            address).
        sent: Every accepted (202) request, in order.
        sandboxed: Every valid sandbox-mode (200) request.
        requests: How many ``/v3/mail/send`` requests arrived, whatever the answer.
    """

    def __init__(
        self,
        api_key: str,
        *,
        verified_senders: Iterable[str] | None = None,
        rejected_addresses: Iterable[str] = (),
    ) -> None:
        self.api_key = api_key
        self.verified_senders = {s.lower() for s in verified_senders} if verified_senders is not None else None
        self.rejected_addresses = {a.lower() for a in rejected_addresses}
        self.sent: list[ReceivedMail] = []
        self.sandboxed: list[ReceivedMail] = []
        self.requests = 0
        self._failures: deque[_Failure] = deque()
        self._delays: deque[float] = deque()
        self._storm: tuple[float, tuple[int, ...], str, random.Random] | None = None
        self.storm_failures: dict[int, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-sendgrid", daemon=True
        )

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the ``sendgrid`` client as ``host`` (no ``/v3``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving, wake delayed requests, and release the socket."""
        self._closing.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def fail_next(
        self,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` authenticated requests with ``status``.

        Args:
            status: The status code, e.g. 429, 500, 502.
            headers: Extra response headers (``Retry-After``, ``X-RateLimit-Reset``, ...).
            body: The body; by default SendGrid's ``errors[]`` for the status, and for 502 an
                HTML page like a proxy's.
            times: How many requests fail this way.
        """
        content_type = "application/json"
        if body is None:
            if status == 502:
                payload, content_type = _BAD_GATEWAY_HTML, "text/html"
            else:
                payload = _errors_body([_error(_DEFAULT_FAILURE_MESSAGES.get(status, "error"), None)])
        elif isinstance(body, bytes):
            payload, content_type = body, "text/html" if body.lstrip().startswith(b"<") else "text/plain"
        elif isinstance(body, str):
            payload, content_type = body.encode(), "text/html" if body.lstrip().startswith("<") else "text/plain"
        else:
            payload = json.dumps(dict(body)).encode()
        with self._lock:
            self._failures.extend(_Failure(status, dict(headers or {}), payload, content_type) for _ in range(times))

    def storm(self, rate: float, *, statuses: Sequence[int] = (429, 500, 502, 503), retry_after: str = "1", seed: int = 0) -> None:
        """Refuse a share ``rate`` of authenticated requests (0 stops the storm) without sending them.

        Each refused request gets one of ``statuses``, chosen at random like the share (a
        seeded generator): 429 with ``Retry-After: retry_after``, a 5xx with SendGrid's body
        (502: a proxy's HTML page). `storm_failures` counts them by status.
        """
        with self._lock:
            self._storm = (rate, tuple(statuses), retry_after, random.Random(seed)) if rate > 0 else None

    def _storm_failure(self) -> _Failure | None:
        if self._storm is None:
            return None
        rate, statuses, retry_after, rng = self._storm
        if rng.random() >= rate:
            return None
        status = rng.choice(statuses)
        self.storm_failures[status] = self.storm_failures.get(status, 0) + 1
        if status == 502:
            return _Failure(status, {}, _BAD_GATEWAY_HTML, "text/html")
        headers = {"Retry-After": retry_after} if status == 429 else {}
        return _Failure(status, headers, _errors_body([_error(_DEFAULT_FAILURE_MESSAGES.get(status, "error"), None)]), "application/json")

    def delay_next(self, seconds: float, *, times: int = 1) -> None:
        """Wait ``seconds`` before answering each of the next ``times`` requests."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def _handle(self, path: str, headers: Mapping[str, str], raw: bytes) -> _Response | None:
        if path.split("?")[0] != MAIL_SEND_PATH:
            return _Response(404, _errors_body([_error("resource not found", None)]))
        with self._lock:
            self.requests += 1
            delay = self._delays.popleft() if self._delays else 0.0
        if delay and self._closing.wait(delay):
            return None  # shutting down: the client has long given up
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not auth.startswith("Bearer "):
            return _Response(401, _errors_body([_error("authorization required", None)]))
        if auth != f"Bearer {self.api_key}":
            return _Response(
                401, _errors_body([_error("The provided authorization grant is invalid, expired, or revoked", None)])
            )
        with self._lock:
            failure = self._failures.popleft() if self._failures else self._storm_failure()
        if failure is not None:
            return _Response(failure.status, failure.body, dict(failure.headers), failure.content_type)
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            return _Response(400, _errors_body([_error("Bad Request", None)]))
        errors = validate_mail_send(body)
        if errors:
            return _Response(400, _errors_body(errors))
        sender = str(body["from"]["email"]).lower()
        if self.verified_senders is not None and sender not in self.verified_senders:
            return _Response(
                403,
                _errors_body(
                    [
                        _error(
                            "The from address does not match a verified Sender Identity. Mail cannot be sent until"
                            " this error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/"
                            "sender-identity/ to see the Sender Identity requirements",
                            "from",
                        )
                    ]
                ),
            )
        rejected = [
            _error("Does not contain a valid address.", f"personalizations.{i}.{kind}.{j}.email")
            for i, p in enumerate(body["personalizations"])
            for kind in ("to", "cc", "bcc")
            for j, address in enumerate(p.get(kind) or [])
            if str(address["email"]).lower() in self.rejected_addresses
        ]
        if rejected:
            return _Response(400, _errors_body(rejected))
        message_id = secrets.token_urlsafe(16)[:22]
        received = ReceivedMail(body=body, headers=dict(headers), message_id=message_id)
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") is True
        with self._lock:
            (self.sandboxed if sandbox else self.sent).append(received)
        return _Response(200 if sandbox else 202, headers={"X-Message-Id": message_id})

    def event_for(self, mail: ReceivedMail, event: str, *, index: int = 0, **extra: Any) -> dict[str, Any]:
        """Build the Event Webhook event SendGrid would post for an accepted mail.

        Custom args are copied to the top level (SendGrid's reserved fields win on a clash).

        Args:
            mail: An entry of :attr:`sent`.
            event: ``processed``, ``delivered``, ``bounce``, ``open``, ...
            index: Which ``to`` recipient (across personalizations) the event is for.
            **extra: Event-specific fields, e.g. ``reason=...``, ``type="bounce"``.
        """
        body = mail.body
        categories = body.get("categories") or []
        result: dict[str, Any] = dict(body.get("custom_args") or {})
        result.update(
            {
                "email": mail.recipients[index],
                "timestamp": int(time.time()),
                "event": event,
                "sg_event_id": secrets.token_urlsafe(16),
                "sg_message_id": f"{mail.message_id}.recvd-{secrets.token_hex(4)}-{index}",
                "smtp-id": f"<{mail.message_id}@ismtpd0001p1>",
                "category": categories[0] if len(categories) == 1 else categories,
            }
        )
        result.update(extra)
        return result


@contextlib.contextmanager
def run_sendgrid_server(
    api_key: str,
    *,
    verified_senders: Iterable[str] | None = None,
    rejected_addresses: Iterable[str] = (),
) -> Iterator[FakeSendGrid]:
    """Run a :class:`FakeSendGrid` on 127.0.0.1 (a free port) for the ``with`` block."""
    server = FakeSendGrid(api_key, verified_senders=verified_senders, rejected_addresses=rejected_addresses)
    server.start()
    try:
        yield server
    finally:
        server.close()


class EventWebhookSigner:
    """Signs Event Webhook posts like SendGrid: ECDSA P-256 / SHA-256 over timestamp + body.

    Give :attr:`public_key_b64` to the code under test as its verification key.
    """

    SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
    TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key_b64(self) -> str:
        """Base64 of the DER SubjectPublicKeyInfo, as SendGrid shows it."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, payload: bytes, timestamp: str) -> str:
        """Return the base64 DER signature of ``timestamp`` + ``payload`` (the raw body)."""
        signature = self._key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def signed_batch(
        self, events: Sequence[Mapping[str, Any]], *, timestamp: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Serialize ``events`` as SendGrid does (compact JSON + CRLF) and sign them.

        Returns:
            The raw body and the headers to post it with.
        """
        body = json.dumps(list(events), separators=(",", ":")).encode() + b"\r\n"
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        return body, {
            "Content-Type": "application/json",
            self.SIGNATURE_HEADER: self.sign(body, stamp),
            self.TIMESTAMP_HEADER: stamp,
        }


def post_events(
    url: str,
    events: Sequence[Mapping[str, Any]],
    signer: EventWebhookSigner | None = None,
    *,
    timestamp: str | None = None,
    timeout: float = 5.0,
) -> int:
    """POST an Event Webhook batch to ``url`` (signed when a signer is given); return the status."""
    if signer is not None:
        body, headers = signer.signed_batch(events, timestamp=timestamp)
    else:
        body = json.dumps(list(events), separators=(",", ":")).encode() + b"\r\n"
        headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)
