"""Per-request sampling settings and their validation."""

from __future__ import annotations

from dataclasses import dataclass, field

from prism.errors import InvalidRequest
from prism.structured_output import StructuredOutput

MAX_LOGPROBS = 20


@dataclass(slots=True)
class SamplingParams:
    """How to pick each next token and when to stop.

    ``temperature == 0`` means greedy. ``max_tokens=None`` fills the context.
    ``logprobs=None`` returns none; ``0`` the sampled token's; ``k`` also the top ``k``.
    ``structured`` constrains the output to a schema, regex, choice or grammar.
    """

    max_tokens: int | None = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    structured: StructuredOutput | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    def validate(self, vocab_size: int) -> None:
        """Raise :class:`InvalidRequest` naming the first field that is out of range."""
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", "max_tokens")
        if self.min_tokens < 0:
            raise InvalidRequest("min_tokens must not be negative", "min_tokens")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise InvalidRequest("min_tokens must not exceed max_tokens", "min_tokens")
        if not 0.0 <= self.temperature <= 100.0:
            raise InvalidRequest("temperature must be between 0 and 100", "temperature")
        if self.top_k < 0:
            raise InvalidRequest("top_k must be 0 (off) or positive", "top_k")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p must be in (0, 1]", "top_p")
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidRequest("min_p must be in [0, 1]", "min_p")
        if self.repetition_penalty <= 0.0:
            raise InvalidRequest("repetition_penalty must be positive", "repetition_penalty")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise InvalidRequest(f"{name} must be between -2 and 2", name)
        if any(not text for text in self.stop):
            raise InvalidRequest("stop strings must not be empty", "stop")
        if any(not 0 <= token < vocab_size for token in self.stop_token_ids):
            raise InvalidRequest("stop_token_ids must be token ids of the model", "stop_token_ids")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise InvalidRequest(f"logprobs must be between 0 and {MAX_LOGPROBS}", "logprobs")
