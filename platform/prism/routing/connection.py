"""How both sides of the prefix index reach Redis: the client, its retries, one back-off.

The router (:class:`~prism.routing.link.IndexLink`) and each replica's publisher
(:class:`~prism.routing.publisher.KVEventPublisher`) open their clients here and pause after
failures by the same policy: redis-py's :class:`~redis.backoff.ExponentialBackoff`, from a
first pause to :data:`MAX_BACKOFF_S`, doubling on each failure in a row.

- The publisher's loop is a redis-py :class:`~redis.asyncio.retry.Retry` that retries every
  :data:`INDEX_ERRORS` forever with that back-off.
- The router cannot wait: it gives up after its timeout and then skips Redis for a
  :class:`Cooldown` whose length the same back-off computes, so no request waits on a dead
  server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

INDEX_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, asyncio.TimeoutError)
"""What an unreachable, restarting or slow Redis raises."""

MAX_BACKOFF_S = 5.0
"""The longest pause after failures, for the router and the publishers alike."""


def backoff(first_s: float, max_s: float = MAX_BACKOFF_S) -> ExponentialBackoff:
    """Pauses of ``first_s`` after one failure, doubling with each further one, up to ``max_s``.

    redis-py computes ``min(cap, base * 2 ** failures)``, so the base is half the first pause.
    """
    return ExponentialBackoff(cap=max_s, base=first_s / 2)


def open_redis(
    url: str, password: str | None, timeout_s: float, reconnect_retries: int = 0
) -> Redis:
    """A client whose connects and replies wait at most ``timeout_s``.

    ``password`` is the one from ``RedisSettings.password()`` (None: the URL's own, if any).
    With ``reconnect_retries`` a command that fails for a lost connection (e.g. a pooled one
    Redis closed when it restarted) reconnects and is sent again at once, that many times;
    other errors, timeouts included, reach the caller.
    """
    retry = Retry(NoBackoff(), reconnect_retries, supported_errors=(RedisConnectionError,))
    return Redis.from_url(
        url,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=retry,
    )


def retry_forever(pauses: ExponentialBackoff) -> Retry:
    """A redis-py ``Retry`` that calls again after any of :data:`INDEX_ERRORS`, pausing as
    ``pauses`` computes; each call starts again from the first pause."""
    # redis-py annotates RedisError types but catches whatever it is given (OSError too).
    return Retry(pauses, retries=-1, supported_errors=INDEX_ERRORS)  # type: ignore[arg-type]


class Cooldown:
    """No attempts for a while after failures: ``pauses.compute(failures in a row)`` seconds.

    For a caller that cannot wait on a retry (the router gives up within its timeout and
    routes by load alone): it asks :attr:`ready` before trying and reports the outcome.
    """

    def __init__(
        self, pauses: ExponentialBackoff, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pauses = pauses
        self.clock = clock
        self.failures = 0
        self._until = float("-inf")

    @property
    def ready(self) -> bool:
        """Whether the pause after the last failure is over (always, after a success)."""
        return self.clock() >= self._until

    def failed(self) -> float:
        """Count a failure and start a pause; returns its length in seconds."""
        self.failures += 1
        pause = self.pauses.compute(self.failures)
        self._until = self.clock() + pause
        return pause

    def succeeded(self) -> None:
        """Forget the failures: the next one pauses for the first pause again."""
        self.failures = 0
        self._until = float("-inf")
