"""Email backends against real local servers: the outbox folder, a SendGrid stand-in, aiosmtpd."""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from python_http_client.exceptions import BadRequestsError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook

from tests.servers.sendgrid_server import EventWebhookSigner, FakeSendGrid, run_sendgrid_server
from touchpoint.email import (
    EmailBackend,
    EmailConfigurationError,
    EmailMessage,
    OutboxBackend,
    PermanentEmailError,
    RecipientRejected,
    SendGridBackend,
    SmtpBackend,
    TransientEmailError,
    make_backend,
)
from touchpoint.email.sendgrid_backend import MESSAGE_ID_ARG, retry_after_seconds

API_KEY = "SG.testkey123.secretpart456"
SENDER = "success@example.com"


def _message(**overrides: Any) -> EmailMessage:
    fields: dict[str, Any] = {
        "from_email": SENDER,
        "from_name": "Example Customer Success",
        "to_email": "kim@acme.example",
        "to_name": "Kim Park",
        "subject": "Welcome aboard, Acme Inc!",
        "html": "<html><body><p>Hello Kim, caf\u00e9 time.</p></body></html>",
        "text": "Hello Kim, caf\u00e9 time.",
        "categories": ["touchpoint", "onboarding"],
        "custom_args": {"run_id": "run-1", "account_id": "acme"},
        "unsubscribe_group_id": 42,
        "headers": {"List-Unsubscribe": "<https://cs.example.com/u/tok>"},
    }
    fields.update(overrides)
    return EmailMessage(**fields)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours HTTP(S)_PROXY; loopback traffic must never go through one.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def sendgrid(no_proxy: None) -> Iterator[FakeSendGrid]:
    with run_sendgrid_server(API_KEY, verified_senders=[SENDER], rejected_addresses=["bounced@acme.example"]) as server:
        yield server


def _backend(server: FakeSendGrid, *, timeout: float = 5.0, key: str | None = API_KEY) -> SendGridBackend:
    return SendGridBackend(key, host=server.url, timeout=timeout)


# --- outbox -------------------------------------------------------------------------------


def test_email_backends_outbox_writes_parseable_eml(tmp_path: Path) -> None:
    backend = OutboxBackend(tmp_path / "outbox")
    msg = _message()

    result = backend.send(msg)

    path = tmp_path / "outbox" / f"{msg.message_id}.eml"
    assert result.provider_message_id == msg.message_id
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert isinstance(parsed, MimeMessage)
    assert parsed["Message-ID"] == f"<{msg.message_id}@touchpoint>"
    assert parsed["From"] == "Example Customer Success <success@example.com>"
    assert parsed["To"] == "Kim Park <kim@acme.example>"
    assert parsed["Subject"] == "Welcome aboard, Acme Inc!"
    assert parsed["List-Unsubscribe"] == "<https://cs.example.com/u/tok>"
    assert parsed["X-Touchpoint-Categories"] == "touchpoint, onboarding"
    assert parsed["Date"].datetime.tzinfo is not None
    assert parsed.get_content_type() == "multipart/alternative"
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert text_part.get_content().strip() == "Hello Kim, caf\u00e9 time."
    assert html_part.get_content_type() == "text/html"
    assert "<p>Hello Kim, caf\u00e9 time.</p>" in html_part.get_content()


def test_email_backends_outbox_keeps_non_ascii_names_subjects_and_long_lines(tmp_path: Path) -> None:
    """Display names with commas or accents, an accented subject longer than a header line, a
    body line longer than quoted-printable's 76 characters: all read back as they were sent."""
    backend = OutboxBackend(tmp_path)
    subject = "Bienvenue \u00e0 bord, \u00c9lodie \u2014 votre plan d\u2019adoption pour les 90 prochains jours est pr\u00eat"
    long_line = "Une ligne tr\u00e8s longue " * 12
    link = "<https://cs.example.com/unsubscribe/" + "a1B2c3D4e5" * 9 + ">"  # one token past a 78-character line
    msg = _message(
        from_name="Success, Team \u00c9quipe", to_name="Park, Kim", subject=subject, text=long_line, html=f"<p>{long_line}</p>",
        headers={"List-Unsubscribe": link},
    )
    backend.send(msg)
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes((tmp_path / f"{msg.message_id}.eml").read_bytes())
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "Success, Team \u00c9quipe"
    assert parsed["From"].addresses[0].addr_spec == SENDER
    assert parsed["To"].addresses[0].display_name == "Park, Kim"
    assert parsed["List-Unsubscribe"] == link
    raw = (tmp_path / f"{msg.message_id}.eml").read_bytes()
    assert all(len(line) <= 998 for line in raw.splitlines())
    assert all(len(word) <= 75 for word in raw.decode().split() if word.startswith("=?"))  # RFC 2047's limit
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content().rstrip("\n") == long_line
    assert html_part.get_content().rstrip("\n") == f"<p>{long_line}</p>"
    assert "MIME-Version" not in text_part and parsed["MIME-Version"] == "1.0"


def test_email_backends_outbox_is_idempotent_per_message_id(tmp_path: Path) -> None:
    backend = OutboxBackend(tmp_path)
    first = _message()
    backend.send(first)
    before = (tmp_path / f"{first.message_id}.eml").read_bytes()

    again = backend.send(_message(message_id=first.message_id, subject="A different subject"))

    assert again.provider_message_id == first.message_id
    assert (tmp_path / f"{first.message_id}.eml").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first.message_id}.eml"]  # no temp files left


def test_email_backends_message_refuses_header_injection() -> None:
    with pytest.raises(ValueError, match="single line"):
        _message(subject="Hi\r\nBcc: victim@example.com")
    with pytest.raises(ValueError, match="set from the message's own fields"):
        _message(headers={"Subject": "x"})


# --- SendGrid -----------------------------------------------------------------------------


def test_email_backends_sendgrid_sends_and_returns_message_id(sendgrid: FakeSendGrid) -> None:
    msg = _message(to_name="Park, Kim")

    result = _backend(sendgrid).send(msg)

    assert result.status_code == 202
    assert len(sendgrid.sent) == 1
    received = sendgrid.sent[0]
    assert result.provider_message_id == received.message_id
    assert received.headers["Authorization"] == f"Bearer {API_KEY}"
    assert received.headers["User-Agent"].startswith("sendgrid/")
    body = received.body
    assert body["personalizations"] == [{"to": [{"email": "kim@acme.example", "name": "Park Kim"}]}]
    assert body["from"] == {"email": SENDER, "name": "Example Customer Success"}
    assert body["subject"] == "Welcome aboard, Acme Inc!"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["categories"] == ["touchpoint", "onboarding"]
    assert body["custom_args"] == {"run_id": "run-1", "account_id": "acme", MESSAGE_ID_ARG: msg.message_id}
    assert body["asm"] == {"group_id": 42}
    assert body["headers"] == {"List-Unsubscribe": "<https://cs.example.com/u/tok>"}


def test_email_backends_sendgrid_rejected_recipient(sendgrid: FakeSendGrid) -> None:
    with pytest.raises(RecipientRejected) as info:
        _backend(sendgrid).send(_message(to_email="bounced@acme.example"))

    assert info.value.recipient == "bounced@acme.example"
    assert info.value.provider_message == "Does not contain a valid address."
    assert info.value.field == "personalizations.0.to.0.email"
    assert info.value.status_code == 400
    assert "Does not contain a valid address." in str(info.value)
    assert sendgrid.sent == []


def test_email_backends_sendgrid_other_400s_are_not_recipient_problems(sendgrid: FakeSendGrid) -> None:
    with pytest.raises(PermanentEmailError) as info:
        _backend(sendgrid).send(_message(categories=[f"c{i}" for i in range(11)]))
    assert info.value.field == "categories"
    assert "max number of categories is 10" in str(info.value)

    with pytest.raises(EmailConfigurationError, match="fix the sender in workspace.yaml"):
        _backend(sendgrid).send(_message(from_email="not-an-address"))


def test_email_backends_sendgrid_bad_key_is_configuration_error(sendgrid: FakeSendGrid) -> None:
    with pytest.raises(EmailConfigurationError) as info:
        _backend(sendgrid, key="SG.wrong.key").send(_message())

    assert info.value.status_code == 401
    assert "The provided authorization grant is invalid, expired, or revoked" in str(info.value)
    assert "SENDGRID_API_KEY" in str(info.value)


def test_email_backends_sendgrid_unverified_sender_is_configuration_error(sendgrid: FakeSendGrid) -> None:
    with pytest.raises(EmailConfigurationError) as info:
        _backend(sendgrid).send(_message(from_email="someone@else.example"))

    assert info.value.status_code == 403
    assert "verified Sender Identity" in str(info.value)
    assert "someone@else.example" in str(info.value)


def test_email_backends_sendgrid_missing_key_fails_before_any_request(sendgrid: FakeSendGrid) -> None:
    with pytest.raises(EmailConfigurationError, match="SENDGRID_API_KEY is not set"):
        _backend(sendgrid, key=None).send(_message())
    assert sendgrid.requests == 0


def test_email_backends_sendgrid_429_retry_after(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(429, headers={"Retry-After": "7"}, times=2)
    backend = _backend(sendgrid)

    for _ in range(2):
        with pytest.raises(TransientEmailError) as info:
            backend.send(_message())
        assert info.value.retry_after == 7.0
        assert info.value.status_code == 429
        assert "too many requests" in str(info.value)

    assert backend.send(_message()).status_code == 202
    assert sendgrid.requests == 3


def test_email_backends_sendgrid_429_rate_limit_reset(sendgrid: FakeSendGrid) -> None:
    reset = int(time.time()) + 30
    sendgrid.fail_next(
        429, headers={"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    )

    with pytest.raises(TransientEmailError) as info:
        _backend(sendgrid).send(_message())

    assert info.value.retry_after is not None
    assert 27.0 <= info.value.retry_after <= 30.0


def test_email_backends_sendgrid_429_without_hints(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(429)

    with pytest.raises(TransientEmailError) as info:
        _backend(sendgrid).send(_message())

    assert info.value.retry_after is None


def test_email_backends_sendgrid_server_errors_are_transient(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(500)
    sendgrid.fail_next(502)  # an HTML page from a proxy, not JSON
    sendgrid.fail_next(503, body="upstream unavailable")
    backend = _backend(sendgrid)

    with pytest.raises(TransientEmailError) as first:
        backend.send(_message())
    assert first.value.status_code == 500
    assert first.value.provider_message == "internal server error"

    with pytest.raises(TransientEmailError) as second:
        backend.send(_message())
    assert second.value.status_code == 502
    assert "502 Bad Gateway" in str(second.value)

    with pytest.raises(TransientEmailError, match="upstream unavailable"):
        backend.send(_message())


def test_email_backends_sendgrid_server_down_is_transient(no_proxy: None) -> None:
    backend = SendGridBackend(API_KEY, host=f"http://127.0.0.1:{_free_port()}", timeout=2)

    with pytest.raises(TransientEmailError, match="could not reach SendGrid"):
        backend.send(_message())


def test_email_backends_sendgrid_slow_server_times_out(sendgrid: FakeSendGrid) -> None:
    sendgrid.delay_next(5.0)
    started = time.monotonic()

    with pytest.raises(TransientEmailError, match=r"did not answer within 0.3s"):
        _backend(sendgrid, timeout=0.3).send(_message())

    assert time.monotonic() - started < 2.0


def test_email_backends_sendgrid_refuses_content_that_looks_like_a_key(sendgrid: FakeSendGrid) -> None:
    with pytest.raises(PermanentEmailError, match="looks like a SendGrid API key"):
        _backend(sendgrid).send(_message(text="SG.abcdef.ghijkl is your key"))
    assert sendgrid.requests == 0


def test_email_backends_sendgrid_url_with_v3_suffix_is_accepted(sendgrid: FakeSendGrid) -> None:
    backend = SendGridBackend(API_KEY, host=sendgrid.url + "/v3/")

    assert backend.send(_message()).status_code == 202


def test_email_backends_fake_sendgrid_enforces_documented_limits(sendgrid: FakeSendGrid) -> None:
    client = SendGridAPIClient(api_key=API_KEY, host=sendgrid.url)
    client.client.timeout = 5
    base = {
        "from": {"email": SENDER},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }
    too_many = {**base, "personalizations": [{"to": [{"email": f"u{i}@acme.example"} for i in range(1001)]}]}
    no_from = {
        "personalizations": [{"to": [{"email": "kim@acme.example"}]}],
        "subject": "Hi",
        "content": base["content"],
    }
    html_first = {
        **base,
        "personalizations": [{"to": [{"email": "kim@acme.example"}]}],
        "content": [{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}],
    }

    for body, field in ((too_many, "personalizations"), (no_from, "from"), (html_first, "content.0.type")):
        with pytest.raises(BadRequestsError) as info:
            client.send(body)
        assert field in [e["field"] for e in info.value.to_dict["errors"]]

    sandbox = {
        **base,
        "personalizations": [{"to": [{"email": "kim@acme.example"}]}],
        "mail_settings": {"sandbox_mode": {"enable": True}},
    }
    assert client.send(sandbox).status_code == 200
    assert sendgrid.sent == [] and len(sendgrid.sandboxed) == 1


def test_email_backends_retry_after_reads_http_dates() -> None:
    now = 1_800_000_000.0
    http_date = "Fri, 15 Jan 2027 08:00:20 GMT"
    expected = dt.datetime(2027, 1, 15, 8, 0, 20, tzinfo=dt.UTC).timestamp() - now

    assert retry_after_seconds({"Retry-After": http_date}, now=now) == pytest.approx(expected)
    assert retry_after_seconds({"Retry-After": "soon"}, now=now) is None
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) - 5)}, now=now) == 0.0


def test_email_backends_event_webhook_signer_verifies_with_sendgrid_package(sendgrid: FakeSendGrid) -> None:
    _backend(sendgrid).send(_message())
    signer = EventWebhookSigner()
    event = sendgrid.event_for(sendgrid.sent[0], "delivered", response="250 OK")
    body, headers = signer.signed_batch([event], timestamp="1767225600")

    verifier = EventWebhook(signer.public_key_b64)
    signature = headers[EventWebhookSigner.SIGNATURE_HEADER]
    assert signer.public_key_b64.startswith("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
    assert body.endswith(b"\r\n")
    assert event["run_id"] == "run-1" and event["event"] == "delivered"
    assert verifier.verify_signature(body.decode(), signature, "1767225600")
    assert not verifier.verify_signature(body.decode().replace("delivered", "bounce"), signature, "1767225600")


# --- SMTP ---------------------------------------------------------------------------------


class _Recorder:
    """An aiosmtpd handler that keeps what it receives and can refuse listed recipients."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"mailer", b"p@ss")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, _Recorder]]:
    recorder = _Recorder(
        refuse={
            "gone@acme.example": "550 5.1.1 <gone@acme.example>: Recipient address rejected: User unknown",
            "busy@acme.example": "451 4.7.1 Greylisted, try again later",
        }
    )
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=_authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()


def _smtp_url(controller: Controller, *, auth: str = "") -> str:
    return f"smtp://{auth}127.0.0.1:{controller.port}"


def test_email_backends_smtp_delivers_multipart_message(smtp_server: tuple[Controller, _Recorder]) -> None:
    controller, recorder = smtp_server
    msg = _message()

    result = SmtpBackend(_smtp_url(controller, auth="mailer:p%40ss@"), timeout=5).send(msg)

    assert result.provider_message_id == msg.message_id
    (envelope,) = recorder.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == ["kim@acme.example"]
    assert isinstance(envelope.content, bytes)
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(envelope.content)
    assert parsed["Message-ID"] == f"<{msg.message_id}@touchpoint>"
    assert parsed["X-Touchpoint-Categories"] is None  # metadata stays out of real mail
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_email_backends_smtp_rejected_recipient(smtp_server: tuple[Controller, _Recorder]) -> None:
    controller, recorder = smtp_server

    with pytest.raises(RecipientRejected) as info:
        SmtpBackend(_smtp_url(controller), timeout=5).send(_message(to_email="gone@acme.example"))

    assert info.value.recipient == "gone@acme.example"
    assert info.value.status_code == 550
    assert "User unknown" in str(info.value)
    assert recorder.envelopes == []


def test_email_backends_smtp_deferred_recipient_is_transient(smtp_server: tuple[Controller, _Recorder]) -> None:
    controller, _ = smtp_server

    with pytest.raises(TransientEmailError, match="Greylisted") as info:
        SmtpBackend(_smtp_url(controller), timeout=5).send(_message(to_email="busy@acme.example"))

    assert info.value.status_code == 451


def test_email_backends_smtp_bad_login_is_configuration_error(smtp_server: tuple[Controller, _Recorder]) -> None:
    controller, _ = smtp_server

    with pytest.raises(EmailConfigurationError, match="check the user and password") as info:
        SmtpBackend(_smtp_url(controller, auth="mailer:wrong@"), timeout=5).send(_message())

    assert info.value.status_code == 535
    assert "wrong" not in str(info.value)  # never echo the password


def test_email_backends_smtp_server_down_is_transient() -> None:
    with pytest.raises(TransientEmailError, match="could not reach the SMTP server"):
        SmtpBackend(f"smtp://127.0.0.1:{_free_port()}", timeout=2).send(_message())


def _self_signed(tmp_path: Path) -> tuple[Path, Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, cert_pem.decode()


def test_email_backends_smtp_starttls_and_implicit_tls(tmp_path: Path) -> None:
    cert_path, key_path, cert_pem = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_path, key_path)
    trusted = ssl.create_default_context(cadata=cert_pem)
    recorder = _Recorder()

    starttls = Controller(
        recorder, hostname="127.0.0.1", port=_free_port(), tls_context=server_tls, require_starttls=True
    )
    starttls.start()
    try:
        SmtpBackend(f"smtp+starttls://127.0.0.1:{starttls.port}", timeout=5, ssl_context=trusted).send(_message())
        with pytest.raises(EmailConfigurationError, match="not trusted"):
            SmtpBackend(f"smtp+starttls://127.0.0.1:{starttls.port}", timeout=5).send(_message())
    finally:
        starttls.stop()

    implicit = Controller(recorder, hostname="127.0.0.1", port=_free_port(), ssl_context=server_tls)
    implicit.start()
    try:
        SmtpBackend(f"smtps://127.0.0.1:{implicit.port}", timeout=5, ssl_context=trusted).send(_message())
    finally:
        implicit.stop()

    assert len(recorder.envelopes) == 2


# --- factory ------------------------------------------------------------------------------


def test_email_backends_make_backend_by_name(tmp_path: Path) -> None:
    outbox = make_backend("Outbox", outbox_dir=tmp_path, sendgrid_api_key=None, sendgrid_url=None, smtp_url=None)
    sendgrid = make_backend("sendgrid", outbox_dir=tmp_path, sendgrid_api_key=API_KEY, sendgrid_url=None, smtp_url=None)
    smtp = make_backend(
        "smtp", outbox_dir=tmp_path, sendgrid_api_key=None, sendgrid_url=None, smtp_url="smtp://localhost:1025"
    )

    assert [b.name for b in (outbox, sendgrid, smtp)] == ["outbox", "sendgrid", "smtp"]
    assert all(isinstance(b, EmailBackend) for b in (outbox, sendgrid, smtp))
    assert isinstance(sendgrid, SendGridBackend) and sendgrid.host == "https://api.sendgrid.com"


def test_email_backends_make_backend_explains_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(EmailConfigurationError, match="known backends: outbox, sendgrid, smtp"):
        make_backend("mailgun", outbox_dir=tmp_path, sendgrid_api_key=None, sendgrid_url=None, smtp_url=None)
    with pytest.raises(EmailConfigurationError, match="TOUCHPOINT_SMTP_URL is not set"):
        make_backend("smtp", outbox_dir=tmp_path, sendgrid_api_key=None, sendgrid_url=None, smtp_url=None)
    with pytest.raises(EmailConfigurationError, match="use one of smtp://, smtps://, smtp\\+starttls://"):
        make_backend("smtp", outbox_dir=tmp_path, sendgrid_api_key=None, sendgrid_url=None, smtp_url="imap://x")
    with pytest.raises(EmailConfigurationError, match="not an http\\(s\\) URL"):
        make_backend(
            "sendgrid", outbox_dir=tmp_path, sendgrid_api_key=API_KEY, sendgrid_url="api.sendgrid.com", smtp_url=None
        )
