"""One step's model inputs as plain ints: what rank 0 broadcasts to the other ranks.

Built from the scheduled chunks on rank 0; every rank turns it into the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prism.engine.kv_cache_manager import blocks_for
from prism.engine.scheduler import ScheduledChunk


def packing_order(chunks: list[ScheduledChunk]) -> list[ScheduledChunk]:
    """The order chunks take in the packed batch: decodes (one token each) first."""
    return [c for c in chunks if c.num_tokens == 1] + [c for c in chunks if c.num_tokens > 1]


@dataclass(frozen=True, slots=True)
class PrefillInput:
    """A prefill chunk: its rows in the packed batch and the blocks of its context.

    Its ``context_len`` keys fill ``block_ids`` from the first slot; its queries are the
    last ``query_len`` of them.
    """

    query_start: int
    query_len: int
    context_len: int
    block_ids: list[int]


@dataclass(slots=True)
class StepInput:
    """The packed tokens of one step: decodes first, then prefill chunks.

    A chunk's keys start at its request's first held block: the released ones before it
    lie outside every layer's window (see :class:`~prism.engine.request.Request`).
    ``decode_tables`` holds each decode's blocks, padded to one width with block 0 (masked
    out by ``decode_context_lens``, the keys each decode reads).
    """

    token_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    decode_context_lens: list[int] = field(default_factory=list)
    decode_tables: list[list[int]] = field(default_factory=list)
    prefills: list[PrefillInput] = field(default_factory=list)

    @classmethod
    def build(cls, chunks: list[ScheduledChunk], block_size: int) -> StepInput:
        """Pack the scheduled chunks; rows that sample are the last of each sampling chunk."""
        step = cls()
        for chunk in packing_order(chunks):
            request = chunk.request
            end = chunk.start + chunk.num_tokens
            first = request.num_released_blocks
            table = request.block_ids[first : blocks_for(end, block_size)]
            num_keys = end - first * block_size
            if chunk.num_tokens == 1:
                step.decode_context_lens.append(num_keys)
                step.decode_tables.append(table)
            else:
                step.prefills.append(
                    PrefillInput(len(step.token_ids), chunk.num_tokens, num_keys, table)
                )
            step.token_ids.extend(request.token_ids[chunk.start : end])
            step.positions.extend(range(chunk.start, end))
            step.slots.extend(
                request.block_ids[pos // block_size] * block_size + pos % block_size
                for pos in range(chunk.start, end)
            )
            if chunk.samples:
                step.sample_rows.append(len(step.token_ids) - 1)
        width = max((len(table) for table in step.decode_tables), default=0)
        for table in step.decode_tables:
            table.extend([0] * (width - len(table)))
        return step

    @property
    def num_decodes(self) -> int:
        return len(self.decode_context_lens)

    def pack(self) -> list[int]:
        """One flat list of ints: a header of counts, then each field in order."""
        width = len(self.decode_tables[0]) if self.decode_tables else 0
        values = [len(self.token_ids), len(self.sample_rows), self.num_decodes, width]
        values.append(len(self.prefills))
        values += self.token_ids + self.positions + self.slots + self.sample_rows
        values += self.decode_context_lens
        for table in self.decode_tables:
            values += table
        for prefill in self.prefills:
            values += [prefill.query_start, prefill.query_len, prefill.context_len]
            values += [len(prefill.block_ids), *prefill.block_ids]
        return values

    @classmethod
    def unpack(cls, values: list[int]) -> StepInput:
        """The inverse of :meth:`pack`."""
        reader = _Reader(values)
        num_tokens, num_samples, num_decodes, width, num_prefills = reader.take(5)
        step = cls(
            token_ids=reader.take(num_tokens),
            positions=reader.take(num_tokens),
            slots=reader.take(num_tokens),
            sample_rows=reader.take(num_samples),
            decode_context_lens=reader.take(num_decodes),
        )
        step.decode_tables = [reader.take(width) for _ in range(num_decodes)]
        for _ in range(num_prefills):
            query_start, query_len, context_len, num_blocks = reader.take(4)
            step.prefills.append(
                PrefillInput(query_start, query_len, context_len, reader.take(num_blocks))
            )
        reader.finish()
        return step


class _Reader:
    """Consumes a packed list front to back."""

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.offset = 0

    def take(self, count: int) -> list[int]:
        end = self.offset + count
        if end > len(self.values):
            raise ValueError("packed step input ends early")
        taken = self.values[self.offset : end]
        self.offset = end
        return taken

    def finish(self) -> None:
        if self.offset != len(self.values):
            raise ValueError("packed step input has trailing values")
