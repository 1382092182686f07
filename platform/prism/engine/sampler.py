"""Turns each sampling row's logits into the next token.

Order: penalties, the grammar masks of constrained requests, the ``min_tokens`` mask,
log-probabilities (of the distribution so far: penalised and constrained), then greedy argmax
or temperature / top-k / top-p / min-p sampling. Each
request draws its noise from its own generator, so a seeded request samples the same tokens
whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prism.engine.grammar import mask_disallowed
from prism.engine.request import Request
from prism.outputs import TokenLogprob


@dataclass(frozen=True, slots=True)
class SampledToken:
    token_id: int
    logprob: TokenLogprob | None


def _apply_penalties(logits: torch.Tensor, request: Request) -> None:
    params = request.params
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(request.token_ids)), dtype=torch.long, device=logits.device)
        values = logits[seen]
        logits[seen] = torch.where(
            values > 0, values / params.repetition_penalty, values * params.repetition_penalty
        )
    if request.output_token_ids and (params.presence_penalty or params.frequency_penalty):
        outputs = torch.tensor(request.output_token_ids, dtype=torch.long, device=logits.device)
        counts = torch.bincount(outputs, minlength=logits.shape[-1]).to(logits.dtype)
        logits -= counts * params.frequency_penalty + (counts > 0) * params.presence_penalty


def _block_stop_tokens(logits: torch.Tensor, request: Request) -> None:
    banned = set(request.params.stop_token_ids)
    if not request.params.ignore_eos:
        banned |= request.eos_token_ids
    if not banned:
        return
    stops = sorted(banned)
    if request.matcher is not None:
        others = torch.isfinite(logits)
        others[stops] = False
        if not others.any():
            return  # the grammar allows nothing but a stop: it wins over min_tokens
    logits[stops] = float("-inf")


def _filter(logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p masks, for rows that sample at random."""
    device = logits.device
    temperatures = torch.tensor([r.params.temperature for r in requests], device=device)
    logits = logits / temperatures[:, None]
    vocab = logits.shape[-1]
    top_ks = [r.params.top_k if 0 < r.params.top_k < vocab else vocab for r in requests]
    if any(k < vocab for k in top_ks):
        kth = torch.tensor(top_ks, device=device) - 1
        sorted_desc = logits.sort(dim=-1, descending=True).values
        threshold = sorted_desc.gather(-1, kth[:, None])
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    top_ps = torch.tensor([r.params.top_p for r in requests], device=device)
    if bool((top_ps < 1.0).any()):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        outside = cumulative - sorted_logits.softmax(dim=-1) >= top_ps[:, None]
        mask = torch.zeros_like(outside).scatter(-1, order, outside)
        logits = logits.masked_fill(mask, float("-inf"))
    min_ps = torch.tensor([r.params.min_p for r in requests], device=device)
    if bool((min_ps > 0.0).any()):
        probs = logits.softmax(dim=-1)
        floor = probs.max(dim=-1, keepdim=True).values * min_ps[:, None]
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def _top_logprobs(row: torch.Tensor, token_id: int, count: int) -> TokenLogprob:
    top: tuple[tuple[int, float], ...] = ()
    if count:
        values, indices = row.topk(count)
        top = tuple(zip(indices.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token_id, float(row[token_id]), top)


def sample(logits: torch.Tensor, requests: list[Request]) -> list[SampledToken]:
    """Pick one token per row of ``logits`` [rows, vocab] (fp32; modified in place)."""
    for row, request in enumerate(requests):
        if request.params.has_penalties:
            _apply_penalties(logits[row], request)
    constrained = [row for row, r in enumerate(requests) if r.matcher is not None]
    if constrained:
        mask_disallowed(logits, constrained, [requests[row].matcher for row in constrained])
    for row, request in enumerate(requests):
        if len(request.output_token_ids) < request.params.min_tokens:
            _block_stop_tokens(logits[row], request)

    token_ids = logits.argmax(dim=-1)
    random_rows = [row for row, r in enumerate(requests) if not r.params.greedy]
    if random_rows:
        filtered = _filter(logits[random_rows], [requests[row] for row in random_rows])
        probs = filtered.softmax(dim=-1)
        noise = torch.stack(
            [
                torch.empty_like(probs[0]).exponential_(generator=requests[row].generator)
                for row in random_rows
            ]
        )
        token_ids[random_rows] = (probs / noise).argmax(dim=-1)

    chosen = token_ids.tolist()
    logprob_rows = [row for row, r in enumerate(requests) if r.params.logprobs is not None]
    logprobs: dict[int, TokenLogprob] = {}
    if logprob_rows:
        log_softmax = logits[logprob_rows].log_softmax(dim=-1)
        for index, row in enumerate(logprob_rows):
            count = requests[row].params.logprobs or 0
            logprobs[row] = _top_logprobs(log_softmax[index], chosen[row], count)
    return [SampledToken(chosen[row], logprobs.get(row)) for row in range(len(requests))]
