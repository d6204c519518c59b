"""Signed unsubscribe links: HMAC-SHA256 of the address with `TOUCHPOINT_SECRET_KEY`.

The token carries the address (base64url) and its signature, so there is no guessable id and no
lookup: a forged or altered link fails verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _sign(secret: str, email: str) -> str:
    digest = hmac.new(secret.encode(), email.strip().lower().encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def make_token(secret: str, email: str) -> str:
    """A token for ``email``: ``<base64url address>.<signature>``."""
    address = base64.urlsafe_b64encode(email.strip().lower().encode()).decode().rstrip("=")
    return f"{address}.{_sign(secret, email)}"


def read_token(secret: str, token: str) -> str | None:
    """The address of a valid token, else None."""
    address_part, _, signature = token.partition(".")
    try:
        email = base64.urlsafe_b64decode(address_part + "=" * (-len(address_part) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return email if signature and hmac.compare_digest(signature, _sign(secret, email)) else None


def unsubscribe_url(public_url: str, secret: str, email: str) -> str:
    """The link every email carries."""
    return f"{public_url.rstrip('/')}/unsubscribe/{make_token(secret, email)}"
