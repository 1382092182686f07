"""Greedy parity against HF ``generate``, the oracle, with the near-tie allowance."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

# Batched fp32 arithmetic may sum in another order than HF's batch-1 pass. Where HF's top
# two candidates are this close in log-probability, either token is a correct greedy pick,
# and the outputs may legitimately differ from that step on.
NEAR_TIE_LOGPROB = 1e-4


@torch.inference_mode()
def hf_greedy(model: PreTrainedModel, prompt: list[int], max_new_tokens: int):
    return model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )


def assert_greedy_parity(
    model: PreTrainedModel, prompt: list[int], tokens: list[int], max_new_tokens: int
) -> bool:
    """Assert ``tokens`` is HF's greedy continuation of ``prompt``.

    Returns True if the sequences matched fully, False if they parted at a near tie
    (which the caller may count; anything else fails the assertion).
    """
    reference = hf_greedy(model, prompt, max_new_tokens)
    expected = reference.sequences[0, len(prompt) :].tolist()
    for step, (got, want) in enumerate(zip(tokens, expected, strict=False)):
        if got != want:
            top = reference.logits[step][0].float().log_softmax(-1).topk(2).values
            margin = float(top[0] - top[1])
            assert margin < NEAR_TIE_LOGPROB, (
                f"output differs from HF at step {step}: got {got}, HF {want}, "
                f"HF's top-2 margin {margin:.2e} is no near tie"
            )
            return False
    assert tokens == expected
    return True


def assert_batch_parity(
    model: PreTrainedModel,
    prompts: list[list[int]],
    outputs: list[list[int]],
    max_new_tokens: int,
) -> None:
    """Assert every output is HF's greedy continuation of its prompt, at most one of them
    parting at a near tie."""
    full_matches = sum(
        assert_greedy_parity(model, prompt, tokens, max_new_tokens)
        for prompt, tokens in zip(prompts, outputs, strict=True)
    )
    assert full_matches >= len(prompts) - 1, "more than one prompt parted at a near tie"
