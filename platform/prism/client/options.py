"""What every call of a client carries: its metadata and its deadline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

APPLICATION_KEY = "application"
"""The metadata entry by which Serve's gRPC proxy picks one of several Serve applications."""
AUTHORIZATION_KEY = "authorization"


@dataclass(frozen=True, slots=True)
class CallOptions:
    """The metadata sent with every call, and the deadline of a call that names none."""

    timeout: float | None
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def of(
        cls,
        timeout: float | None,
        application: str | None,
        api_key: str | None,
        metadata: Sequence[tuple[str, str]],
    ) -> CallOptions:
        """The options of a client built with these arguments."""
        entries = [(key, value) for key, value in metadata]
        if application:
            entries.append((APPLICATION_KEY, application))
        if api_key:
            entries.append((AUTHORIZATION_KEY, f"Bearer {api_key}"))
        return cls(timeout, tuple(entries))

    def call(self, timeout: float | None) -> dict[str, Any]:
        """The ``timeout`` and ``metadata`` keyword arguments of one stub call."""
        return {"timeout": self.timeout if timeout is None else timeout, "metadata": self.metadata}
