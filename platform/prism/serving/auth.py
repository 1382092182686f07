"""The API key check shared by the HTTP and gRPC APIs."""

from __future__ import annotations

import hmac


def authorized(authorization: str | None, api_key: str | None) -> bool:
    """True when no key is required or ``authorization`` is ``Bearer <the key>``."""
    if not api_key:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), api_key)
