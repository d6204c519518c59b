"""The console's sessions: a signed HttpOnly cookie, a CSRF token per session, form bodies.

With `TOUCHPOINT_API_TOKEN` set, the login form takes the token and the reviewer's address and
issues a new session cookie marked signed-in; without a token the console is as open as the API
and a visitor gets a session at once (forms still need its CSRF token). The cookie holds
``{sid, auth, by, exp}`` as base64 JSON plus an HMAC-SHA256 of it under a key derived from
`TOUCHPOINT_SECRET_KEY` and the API token, so changing either signs everybody out. It is
``HttpOnly``, ``SameSite=Strict``, scoped to ``/console``, ``Secure`` behind HTTPS, and lives 12
hours. Every form carries ``csrf`` = HMAC(key, sid): a post without the right one (a forged
cross-site form cannot read it), or whose ``Origin`` is neither the request's host nor
`TOUCHPOINT_PUBLIC_URL`'s, is refused with 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from touchpoint.config import Settings

COOKIE = "touchpoint_console"
LIFETIME = 12 * 3600
MAX_FORM = 64 * 1024
"""Bytes a console form body may have (a refused bigger one gets 413); an approval's edit may
have more (`touchpoint.console.approvals`)."""
_PROCESS_KEY = secrets.token_bytes(32)
"""Signs sessions of an app built without a secret key (tests in one process only: `touchpoint
api`, `worker` and `dev` always have one)."""


@dataclass(frozen=True)
class Visit:
    """Who is looking: the session id, whether signed in, the reviewer's address."""

    sid: str
    auth: bool
    by: str | None
    exp: int


class FormError(ValueError):
    """A form body the console cannot take; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Sessions:
    """Issues and checks console session cookies and CSRF tokens for one app."""

    def __init__(self, settings: Settings) -> None:
        token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
        secret = settings.secret_key.get_secret_value().encode() or _PROCESS_KEY
        self.key = hmac.new(secret, b"touchpoint console session\0" + token.encode(), hashlib.sha256).digest()
        self.token = token or None
        self.secure = settings.public_url.startswith("https://")
        # A proxy may rewrite Host: a post whose Origin is the public address is ours too.
        self.public_host = urlsplit(settings.public_url).netloc

    @property
    def required(self) -> bool:
        """Whether pages need a signed-in session (the API has a token)."""
        return self.token is not None

    def check_token(self, given: str) -> bool:
        """Whether ``given`` is the API token (constant time)."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def new(self, *, auth: bool, by: str | None = None) -> Visit:
        """A fresh session (a new id: signing in never keeps the id a visitor had before)."""
        return Visit(sid=secrets.token_urlsafe(18), auth=auth, by=by, exp=int(time.time()) + LIFETIME)

    def read(self, request: Request) -> Visit | None:
        """The request's valid session, or None (no cookie, a bad signature, expired)."""
        raw = request.cookies.get(COOKIE, "")
        payload, _, signature = raw.partition(".")
        if not payload or not signature:
            return None
        expected = self._sign(payload)
        if not hmac.compare_digest(signature, expected):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            visit = Visit(sid=str(data["sid"]), auth=bool(data["auth"]), by=data.get("by"), exp=int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return visit if visit.exp > time.time() else None

    def viewer(self, request: Request) -> Visit | None:
        """The session if it may see pages: signed in, or any session when there is no token."""
        visit = self.read(request)
        if visit is None:
            return None
        return visit if visit.auth or not self.required else None

    def write(self, response: Response, visit: Visit) -> None:
        """Set the session cookie on a response."""
        body = json.dumps({"sid": visit.sid, "auth": visit.auth, "by": visit.by, "exp": visit.exp}, separators=(",", ":"))
        payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        response.set_cookie(
            COOKIE, f"{payload}.{self._sign(payload)}", max_age=LIFETIME, path="/console", httponly=True, samesite="strict", secure=self.secure
        )

    def clear(self, response: Response) -> None:
        """Remove the session cookie."""
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict", secure=self.secure)

    def csrf(self, visit: Visit) -> str:
        """The CSRF token every form of this session carries."""
        return hmac.new(self.key, b"csrf\0" + visit.sid.encode(), hashlib.sha256).hexdigest()[:40]

    def _sign(self, payload: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    async def form(self, request: Request, visit: Visit | None, *, limit: int = MAX_FORM) -> dict[str, str]:
        """The posted form's fields, once the post is known to come from this session's page.

        Raises:
            FormError: 413 for a body over ``limit`` bytes, 403 for a post without a session,
                with a wrong CSRF token or from another origin.
        """
        declared = request.headers.get("content-length", "0")
        too_big = FormError(413, f"this console form is at most {limit // 1024} KiB")
        if not declared.isdigit() or int(declared) > limit:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():  # a chunked body declares no length: count as it comes
            body.extend(chunk)
            if len(body) > limit:
                raise too_big
        origin = request.headers.get("origin")
        if origin is not None and origin != "null" and urlsplit(origin).netloc not in (request.headers.get("host", ""), self.public_host):
            raise FormError(403, "this form was posted from another site; open the console and try again")
        try:
            fields = {k: v[-1] for k, v in parse_qs(bytes(body).decode("utf-8"), keep_blank_values=True, max_num_fields=50).items()}
        except (UnicodeDecodeError, ValueError):
            raise FormError(400, "the form's body is not a URL-encoded form") from None
        if visit is None or not hmac.compare_digest(fields.get("csrf", ""), self.csrf(visit)):
            raise FormError(403, "this form has expired or did not come from the console: reload the page and try again")
        return fields


def safe_next(value: str | None) -> str:
    """A path inside the console to go back to (anything else, e.g. another site, is dropped)."""
    if value and value.startswith("/console") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console"
