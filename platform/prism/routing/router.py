"""``PrismRouter``: Serve's request router for ``LLMServer`` deployments.

It runs in the caller's process (the ingress) on the handle hop, where each request carries
a :class:`RoutingHint` with its prompt's block hashes. For the ``prefix`` policy one Redis
round trip gives each candidate's cached run; :class:`CostModel` ranks them with their load.
Serve then sends the request to the first rank that accepts it.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time

from ray.serve.request_router import (
    FIFOMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from prism.config import RedisSettings, RouterSettings
from prism.routing.hint import RoutingHint
from prism.routing.keys import IndexKeys
from prism.routing.link import IndexLink
from prism.routing.metrics import router_metrics
from prism.routing.policies import RoundRobin, session_order, two_random
from prism.routing.scoring import CostModel, ReplicaLoad


def routing_hint(pending_request: PendingRequest | None) -> RoutingHint | None:
    """The hint of a ``generate`` call (other methods, e.g. ``stats``, carry none)."""
    if pending_request is None or not pending_request.args:
        return None
    hint = getattr(pending_request.args[0], "routing", None)
    return hint if isinstance(hint, RoutingHint) else None


class PrismRouter(FIFOMixin, RequestRouter):
    """Routes by prefix cache and load, or by one of the load-only policies."""

    def initialize_state(self, model_id: str, router: dict, redis: dict) -> None:
        """Called by Serve with ``request_router_kwargs``."""
        settings = RouterSettings.model_validate(router)
        index = RedisSettings.model_validate(redis)
        self.model_id = model_id
        self.policy = settings.policy
        self.predicted_ttl_s = settings.predicted_ttl_s
        self.costs = CostModel.from_settings(settings)
        self.metrics = router_metrics()
        self._tags = {"model": model_id}
        self.link = IndexLink(
            index.url,
            IndexKeys(index.key_prefix, model_id),
            index.timeout_s,
            on_error=lambda: self.metrics.redis_errors.inc(1, self._tags),
            password=index.password(),
        )
        self.rng = random.Random()
        self.round_robin = RoundRobin()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self._writes: set[asyncio.Task] = set()

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        """Candidates in ranks, most preferred first."""
        started = time.perf_counter()
        hint = routing_hint(pending_request)
        policy = self.policy if hint is not None else "pow2"
        ranks, outcome = await self._rank(policy, candidate_replicas, hint)
        if hint is not None:
            hint.policy = policy
        tags = {**self._tags, "policy": policy}
        self.metrics.decisions.inc(1, {**tags, "outcome": outcome})
        self.metrics.decision_seconds.observe(time.perf_counter() - started, tags)
        return ranks

    async def _rank(
        self, policy: str, candidates: list[RunningReplica], hint: RoutingHint | None
    ) -> tuple[list[list[RunningReplica]], str]:
        if not candidates:
            return [], "none"
        by_id = {replica.replica_id.unique_id: replica for replica in candidates}
        if policy == "round_robin":
            return [[by_id[rid]] for rid in self.round_robin.order(list(by_id))], "load"
        if policy == "session" and hint is not None and hint.session_id is not None:
            order = session_order(hint.session_id, list(by_id))
            return [[by_id[rid]] for rid in order], "session"
        if policy == "prefix" and hint is not None:
            return await self._rank_by_prefix(by_id, hint)
        return [two_random(candidates, self.rng)], "load"

    async def _rank_by_prefix(
        self, by_id: dict[str, RunningReplica], hint: RoutingHint
    ) -> tuple[list[list[RunningReplica]], str]:
        runs: dict[str, int] | None = {}
        if hint.block_hashes:
            sent = time.perf_counter()
            runs = await self.link.leading_blocks(list(by_id), hint.block_hashes)
            if runs is not None:
                self.metrics.redis_seconds.observe(time.perf_counter() - sent, self._tags)
        outcome = "fallback" if runs is None else "miss"
        hint.replica_runs = (
            None if runs is None else {rid: max(run, 0) for rid, run in runs.items()}
        )
        held = hint.replica_runs or {}
        loads = [
            self._load(replica, hint.cached_tokens(held.get(rid, 0)))
            for rid, replica in by_id.items()
        ]
        ranked = self.costs.rank(hint.num_prompt_tokens, loads, self.rng)
        if runs is not None and ranked[0].cached_tokens > 0:
            outcome = "hit"
        return [[by_id[load.replica_id]] for load in ranked], outcome

    def _load(self, replica: RunningReplica, cached_tokens: int) -> ReplicaLoad:
        """The replica's load as the larger of what this router sent and what it reported."""
        replica_id = replica.replica_id.unique_id
        stats = replica.routing_stats or {}
        queue_len = self.replica_queue_len_cache.get(replica.replica_id) or 0
        reported = int(stats.get("running", 0)) + int(stats.get("waiting", 0))
        in_flight = max(self.in_flight[replica_id], reported, queue_len)
        return ReplicaLoad(replica_id, cached_tokens, in_flight, float(stats.get("kv_usage", 0.0)))

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: object
    ) -> None:
        """Count the request and record its blocks as predicted on the chosen replica."""
        chosen = replica_id.unique_id
        self.in_flight[chosen] += 1
        hint = routing_hint(pending_request)
        if hint is None or hint.policy != "prefix" or hint.replica_runs is None:
            return
        run = hint.replica_runs.get(chosen, 0)
        hint.predicted_cached_tokens = hint.cached_tokens(run)
        missing = hint.block_hashes[run:]
        if missing and self.link.available:
            write = asyncio.get_running_loop().create_task(
                self.link.predict(chosen, missing, self.predicted_ttl_s)
            )
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        """A request this router sent has finished."""
        chosen = replica_id.unique_id
        if self.in_flight[chosen] > 1:
            self.in_flight[chosen] -= 1
        else:
            del self.in_flight[chosen]
