"""The API key check shared by the HTTP and gRPC APIs."""

from __future__ import annotations

import hmac


def authorized(authorization: str | None, api_key: str | None) -> bool:
    """True when no key is required or ``authorization`` is ``Bearer <the key>``.

    The comparison is of UTF-8 bytes, in constant time: any text, non-ASCII included, is a
    wrong key rather than an error.
    """
    if not api_key:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode("utf-8", errors="surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, api_key.encode("utf-8"))
