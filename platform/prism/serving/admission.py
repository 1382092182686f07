"""What a call must pass before it reaches a model, over HTTP and gRPC alike: its API key,
the size limit on requests, and its tenant's limit on requests in flight."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prism.errors import PrismError
from prism.serving.auth import APIKeys, Tenant


class RequestTooLarge(PrismError):
    """The request body (or gRPC message) is over ``http.max_request_bytes``."""


class TooManyRequests(PrismError):
    """The tenant already has as many requests in flight as it may."""


@dataclass
class Admission:
    """The checks of one ingress replica; the in-flight counts are this replica's own."""

    api_keys: APIKeys
    max_request_bytes: int
    _in_flight: Counter[str] = field(default_factory=Counter)

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The caller's tenant (None: no keys configured); :class:`Unauthorized` if none."""
        return self.api_keys.authenticate(authorization)

    def check_size(self, size: int) -> None:
        """Raise :class:`RequestTooLarge` for a request of more than the limit's bytes."""
        if size > self.max_request_bytes:
            raise RequestTooLarge(
                f"the request is larger than the limit of {self.max_request_bytes} bytes"
            )

    @contextmanager
    def hold(self, tenant: Tenant | None) -> Iterator[None]:
        """Count a request of ``tenant`` in flight for as long as the block runs.

        Raises :class:`TooManyRequests` when the tenant is at its limit. Runs on the
        ingress's event loop only, so the counts need no lock.
        """
        limit = tenant.max_concurrent_requests if tenant is not None else None
        if tenant is None or limit is None:
            yield
            return
        if self._in_flight[tenant.name] >= limit:
            raise TooManyRequests(
                f"this API key already has {limit} requests in flight, its limit; "
                "retry when one has finished"
            )
        self._in_flight[tenant.name] += 1
        try:
            yield
        finally:
            self._in_flight[tenant.name] -= 1
            if not self._in_flight[tenant.name]:
                del self._in_flight[tenant.name]
