"""The routing benchmark's workloads: token-id prompts that share prefixes in known ways.

Prompts are raw token ids drawn from ordinary vocabulary ids (:data:`TOKEN_IDS`, clear of the
special tokens at the start of SmolLM2's vocabulary), seeded and deterministic, so every
policy sees exactly the same requests.

- ``shared-prefix``: ``groups`` system prompts of ``prefix_tokens`` tokens; each request is
  its group's system prompt followed by ``question_tokens`` tokens of its own.
- ``multi-turn``: ``groups`` conversations. The first turn is ``prefix_tokens`` of context
  and a user turn of ``question_tokens``; each later turn is the previous prompt, a synthetic
  answer of ``output_tokens`` ids and a new user turn, and is sent only once the previous
  turn has finished. The answer is synthetic, not what the model said, so every prompt is
  known before the run; the engine therefore holds the previous *prompt* in its cache, not
  the answer, and the ideal counts only the previous prompt's full blocks.
- ``unique``: the control; every prompt is ``prefix_tokens + question_tokens`` fresh tokens.

Requests come in rounds of one request per group, each round in a seeded order of its own,
so groups interleave without lining up with a round-robin over the replicas.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import takewhile

from prism.hashing import BlockHash, block_hashes

TOKEN_IDS = range(1000, 20000)
WARMUP_TOKEN_IDS = range(20000, 30000)
"""Warm-up prompts draw from ids no workload prompt uses, so they share no prefix with it."""
WARMUP_PROMPT_TOKENS = 8
WORKLOADS = ("shared-prefix", "multi-turn", "unique")

Prompt = list[int]


@dataclass(frozen=True, slots=True)
class RoutingWorkload:
    """``requests`` prompts of ``groups`` groups (see the module docstring for the kinds)."""

    name: str
    requests: int
    groups: int
    prefix_tokens: int
    question_tokens: int
    output_tokens: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in WORKLOADS:
            raise ValueError(f"unknown workload {self.name!r}; expected one of {WORKLOADS}")
        counts = ("requests", "groups", "prefix_tokens", "question_tokens", "output_tokens")
        for field_name in counts:
            if getattr(self, field_name) < 1:
                raise ValueError(f"a routing workload needs {field_name} of at least 1")

    def describe(self) -> str:
        """One line saying what the prompts are."""
        head = f"{self.name}, {self.requests} requests of {self.output_tokens} output tokens"
        if self.name == "shared-prefix":
            return (
                f"{head}, {self.groups} groups: {self.prefix_tokens} shared + "
                f"{self.question_tokens} own prompt tokens"
            )
        if self.name == "multi-turn":
            return (
                f"{head}, {self.groups} conversations: {self.prefix_tokens} tokens of context, "
                f"each turn adds a {self.output_tokens}-token answer and a "
                f"{self.question_tokens}-token question"
            )
        return f"{head}, {self.prefix_tokens + self.question_tokens} fresh prompt tokens each"


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of a workload, before it is sent."""

    index: int
    group: int
    prompt: Prompt
    ideal_cached_tokens: int
    """Prompt tokens a cache holding every earlier request's prompt could serve."""
    after: int | None = None
    """The request that must finish before this one is sent (a conversation's last turn)."""

    @property
    def session(self) -> str:
        """The session id the request is sent with: its group."""
        return f"group-{self.group}"


def _tokens(rng: random.Random, count: int, ids: range = TOKEN_IDS) -> Prompt:
    return [rng.choice(ids) for _ in range(count)]


def interleaved_groups(requests: int, groups: int, rng: random.Random) -> list[int]:
    """The group of each request: rounds of every group once, each round shuffled."""
    order: list[int] = []
    while len(order) < requests:
        order.extend(rng.sample(range(groups), groups))
    return order[:requests]


def _shared_prefix(workload: RoutingWorkload, order: list[int], rng: random.Random) -> list[Prompt]:
    prefixes = [_tokens(rng, workload.prefix_tokens) for _ in range(workload.groups)]
    return [prefixes[group] + _tokens(rng, workload.question_tokens) for group in order]


def _multi_turn(workload: RoutingWorkload, order: list[int], rng: random.Random) -> list[Prompt]:
    last: dict[int, Prompt] = {}
    prompts = []
    for group in order:
        if group in last:
            context = last[group] + _tokens(rng, workload.output_tokens)
        else:
            context = _tokens(rng, workload.prefix_tokens)
        last[group] = context + _tokens(rng, workload.question_tokens)
        prompts.append(last[group])
    return prompts


def _unique(workload: RoutingWorkload, order: list[int], rng: random.Random) -> list[Prompt]:
    return [_tokens(rng, workload.prefix_tokens + workload.question_tokens) for _ in order]


_PROMPTS: dict[str, Callable[[RoutingWorkload, list[int], random.Random], list[Prompt]]] = {
    "shared-prefix": _shared_prefix,
    "multi-turn": _multi_turn,
    "unique": _unique,
}


def ideal_cached_tokens(prompts: Sequence[Sequence[int]], block_size: int) -> list[int]:
    """For each prompt in order, the tokens a cache holding every earlier prompt could serve.

    Only whole blocks count, and never the last prompt token, which the engine always
    recomputes.
    """
    seen: set[BlockHash] = set()
    ideal = []
    for prompt in prompts:
        hashes = block_hashes(prompt, block_size)
        usable = hashes[: (len(prompt) - 1) // block_size]
        ideal.append(sum(1 for _ in takewhile(seen.__contains__, usable)) * block_size)
        seen.update(hashes)
    return ideal


def plan_requests(workload: RoutingWorkload, block_size: int) -> list[PlannedRequest]:
    """Every request of ``workload`` in sending order, with its ideal cached tokens."""
    rng = random.Random(workload.seed)
    order = interleaved_groups(workload.requests, workload.groups, rng)
    prompts = _PROMPTS[workload.name](workload, order, rng)
    ideal = ideal_cached_tokens(prompts, block_size)
    previous: dict[int, int] = {}
    planned = []
    for index, (group, prompt) in enumerate(zip(order, prompts, strict=True)):
        after = previous.get(group) if workload.name == "multi-turn" else None
        planned.append(PlannedRequest(index, group, prompt, ideal[index], after))
        previous[group] = index
    return planned


def warmup_prompts(count: int, seed: int = 0) -> list[Prompt]:
    """``count`` short distinct prompts that share no prefix with any workload prompt."""
    rng = random.Random(seed)
    return [_tokens(rng, WARMUP_PROMPT_TOKENS, WARMUP_TOKEN_IDS) for _ in range(count)]
