"""The standard benchmark workload: what is asked, how much is generated, how it is sampled."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from prism.bench.prompts import STORY_PROMPT, WARMUP_TEXT
from prism.models import apply_chat_template
from prism.sampling_params import SamplingParams

PREFILL_SENTENCE = "Robot {index} crossed the old bridge to the market and counted the apples."


@dataclass(frozen=True, slots=True)
class Workload:
    """``num_requests`` chat prompts, each decoded greedily for exactly ``output_tokens``.

    Request ``i`` is the single user message ``prompt_template.format(index=i)``, rendered by
    the model's chat template. EOS is ignored so every request generates the same count.
    """

    num_requests: int
    output_tokens: int
    prefill_tokens: int
    prompt_template: str = STORY_PROMPT

    def __post_init__(self) -> None:
        if self.num_requests < 1:
            raise ValueError("a workload needs at least one request")
        if self.output_tokens < 2:
            raise ValueError("a decode rate needs at least 2 output tokens per request")

    def prompt_texts(self) -> list[str]:
        return [self.prompt_template.format(index=i) for i in range(self.num_requests)]

    def prompt_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
        """Every request's prompt, chat-templated and tokenized."""
        return [
            apply_chat_template(tokenizer, [{"role": "user", "content": text}])
            for text in self.prompt_texts()
        ]

    def warmup_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """A short raw prompt for untimed warm-up runs."""
        return list(tokenizer.encode(WARMUP_TEXT))

    def prefill_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """One long raw prompt of exactly ``prefill_tokens`` tokens, shared with nothing else."""
        ids: list[int] = []
        index = 0
        while len(ids) < self.prefill_tokens:
            ids.extend(tokenizer.encode(PREFILL_SENTENCE.format(index=index) + " "))
            index += 1
        return ids[: self.prefill_tokens]

    def sampling_params(self) -> SamplingParams:
        """Greedy, EOS ignored: exactly ``output_tokens`` per request."""
        return SamplingParams(max_tokens=self.output_tokens, temperature=0.0, ignore_eos=True)
