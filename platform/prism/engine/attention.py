"""Attention over a paged KV cache.

Decodes (one query token each) run as one batch: on CPU through Prism's native kernel,
which reads keys and values in their cache blocks (:mod:`prism.engine.cpu_kernels`),
elsewhere as a padded batch of gathered blocks through SDPA. Prefill chunks run one by one,
each attending to its cached prefix and, causally, to itself.

A layer with a sliding ``window`` follows HF's definition: the query at position i sees the
keys at positions j with i - window < j <= i. Each sequence's keys are numbered from its
first block table entry, which need not be position 0: blocks wholly outside every layer's
window may have left the table (see :mod:`prism.engine.kv_cache_manager`), and the window
only depends on distances, so attention never needs the absolute positions. The masks and
window starts are built once per step for each window, by the first layer that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from prism.engine.cpu_kernels import decode_attention, supports_decode_attention
from prism.engine.matmul import widens


@dataclass(slots=True)
class PrefillSpan:
    """A prefill chunk's rows in the packed batch and the blocks its keys live in.

    Its ``context_len`` keys are the rows of ``block_ids``; its queries are the last
    ``query_len`` of them.
    """

    query_start: int
    query_len: int
    context_len: int
    block_ids: torch.Tensor
    # Built by the first layer of each window that needs them, shared by the others.
    masks: dict[int | None, torch.Tensor | None] = field(
        default_factory=dict, init=False, repr=False
    )

    def mask(self, window: int | None) -> torch.Tensor | None:
        """[query_len, context_len]: the keys each query sees; None where plain causal
        attention is exact (the keys are exactly the queries, and no window cuts them)."""
        if window is not None and window >= self.context_len:
            window = None  # the window reaches back past the first key: it cuts nothing
        if window not in self.masks:
            self.masks[window] = self._build_mask(window)
        return self.masks[window]

    def _build_mask(self, window: int | None) -> torch.Tensor | None:
        if window is None and self.query_len == self.context_len:
            return None
        device = self.block_ids.device
        keys = torch.arange(self.context_len, device=device)
        queries = keys[self.context_len - self.query_len :, None]
        visible = keys[None, :] <= queries
        if window is not None:
            visible &= keys[None, :] > queries - window
        return visible


@dataclass(slots=True)
class AttentionBatch:
    """Where one step's tokens write K/V and what each of them attends to.

    The packed batch holds the decode tokens first, then the prefill chunks. Decode i's
    query is the last of its ``decode_context_lens[i]`` keys, the first slots of its row of
    ``decode_block_tables`` (padded with block 0).
    """

    slot_mapping: torch.Tensor
    num_decodes: int
    decode_block_tables: torch.Tensor | None
    decode_context_lens: torch.Tensor | None
    prefills: list[PrefillSpan]
    # Built by the first layer of each window that needs them, shared by the others.
    decode_starts: dict[int | None, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False
    )
    decode_masks: dict[int | None, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False
    )

    def decode_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decodes' block tables [decodes, width] and context lengths [decodes]."""
        tables, lengths = self.decode_block_tables, self.decode_context_lens
        if tables is None or lengths is None:
            raise ValueError("the step has no decodes")
        return tables, lengths

    def decode_start(self, window: int | None) -> torch.Tensor:
        """[decodes]: the first table slot each decode reads under ``window``."""
        if window not in self.decode_starts:
            _, lengths = self.decode_tables()
            starts = torch.zeros_like(lengths) if window is None else lengths - window
            self.decode_starts[window] = starts.clamp_(min=0)
        return self.decode_starts[window]

    def decode_key_mask(self, block_size: int, window: int | None) -> torch.Tensor:
        """[decodes, 1, 1, table slots]: which slots of its padded table each decode reads."""
        if window not in self.decode_masks:
            tables, lengths = self.decode_tables()
            slots = torch.arange(tables.shape[1] * block_size, device=tables.device)[None, :]
            starts = self.decode_start(window)[:, None]
            visible = (slots >= starts) & (slots < lengths[:, None])
            self.decode_masks[window] = visible[:, None, None, :]
        return self.decode_masks[window]


def write_kv(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store one step's keys and values [tokens, kv_heads, dim] in their cache slots.

    A layer's cache is head-major, [kv_heads, blocks, block_size, dim], so the keys of a
    run of blocks gather into one contiguous [kv_heads, tokens, dim] tensor per head.
    A slot is ``block * block_size + offset``.
    """
    num_kv_heads, _, _, head_dim = k_cache.shape
    k_cache.view(num_kv_heads, -1, head_dim).index_copy_(1, slot_mapping, key.transpose(0, 1))
    v_cache.view(num_kv_heads, -1, head_dim).index_copy_(1, slot_mapping, value.transpose(0, 1))


def _gather(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """Cached rows of ``block_ids`` ([blocks] or [seqs, blocks]): [kv_heads, ..., tokens, dim].

    ``index_select`` on the flattened ids: two to three times faster on CPU than advanced
    indexing for the few blocks of a decode.
    """
    num_kv_heads, _, block_size, head_dim = cache.shape
    blocks = cache.index_select(1, block_ids.flatten())
    *lead, num_blocks = block_ids.shape
    return blocks.view(num_kv_heads, *lead, num_blocks * block_size, head_dim)


def _decode_attention_sdpa(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    attended = F.scaled_dot_product_attention(
        query.unsqueeze(2),
        keys.transpose(0, 1),
        values.transpose(0, 1),
        attn_mask=mask,
        enable_gqa=True,
    )
    return attended.squeeze(2)


def _decode_attention_cpu(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """One query token per sequence as two batched matrix products per KV head.

    On CPU this beats SDPA's kernels for single-token queries (badly so in bf16): the query
    heads sharing a KV head form one matrix, so each K and V row is read once. ``keys`` and
    ``values`` are [kv_heads, seqs, tokens, dim], as gathered from the head-major cache.
    bf16 inputs are computed in fp32 where the CPU has no bf16 units (see
    :mod:`prism.engine.matmul`); the output is rounded back to bf16.
    """
    if widens(query):  # bf16 batched products on a CPU without bf16 units: far slower
        wide = _decode_attention_cpu(query.float(), keys.float(), values.float(), mask)
        return wide.to(query.dtype)
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = keys.shape[0]
    grouped = query.view(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim)
    grouped = grouped.transpose(0, 1)  # [kv_heads, seqs, group, dim]
    scores = torch.matmul(grouped, keys.transpose(-1, -2)) * head_dim**-0.5
    scores = scores.masked_fill(~mask.transpose(0, 1), float("-inf"))
    attended = torch.matmul(scores.softmax(dim=-1), values)
    return attended.transpose(0, 1).reshape(num_seqs, num_heads, head_dim)


def paged_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    batch: AttentionBatch,
    window: int | None = None,
) -> torch.Tensor:
    """Attention output [tokens, heads, head_dim] for the packed ``query`` [tokens, heads, dim].

    ``window``: each query attends only to the last ``window`` positions up to its own
    (None: to every position up to its own).
    """
    out = torch.empty_like(query)
    if batch.num_decodes:
        out[: batch.num_decodes] = _decodes(
            query[: batch.num_decodes], k_cache, v_cache, batch, window
        )
    for span in batch.prefills:
        rows = slice(span.query_start, span.query_start + span.query_len)
        out[rows] = _prefill(query[rows], k_cache, v_cache, span, window)
    return out


def _decodes(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    batch: AttentionBatch,
    window: int | None,
) -> torch.Tensor:
    """The decodes' outputs [decodes, heads, dim]: the native kernel where it runs."""
    tables, lengths = batch.decode_tables()
    if supports_decode_attention(k_cache):
        starts = None if window is None else batch.decode_start(window)
        return decode_attention(query, k_cache, v_cache, tables, lengths, starts)
    keys = _gather(k_cache, tables)
    values = _gather(v_cache, tables)
    mask = batch.decode_key_mask(k_cache.shape[2], window)
    decode = _decode_attention_cpu if query.device.type == "cpu" else _decode_attention_sdpa
    return decode(query, keys, values, mask)


def _prefill(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    span: PrefillSpan,
    window: int | None,
) -> torch.Tensor:
    """One prefill chunk's output [query_len, heads, dim]."""
    keys = _gather(k_cache, span.block_ids)[:, : span.context_len].unsqueeze(0)
    values = _gather(v_cache, span.block_ids)[:, : span.context_len].unsqueeze(0)
    mask = span.mask(window)
    attended = F.scaled_dot_product_attention(
        query.transpose(0, 1).unsqueeze(0),
        keys,
        values,
        attn_mask=mask,
        is_causal=mask is None,
        enable_gqa=True,
    )
    return attended.squeeze(0).transpose(0, 1)
