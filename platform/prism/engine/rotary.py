"""Rotary position embeddings (RoPE) with the frequency scalings of HF's ``rope_type``.

``default``, ``linear``, ``llama3`` and ``yarn`` rotate a position the same way whatever the
context: one precomputed cos/sin table serves every step. ``dynamic`` (dynamic NTK) and
``longrope`` change with the context length, which HF takes as ``max(position_ids) + 1`` of
the forward. Prism batches many requests in one step, so it applies the rule per token: a
token is rotated with the scaling of its request's context length at this step (a decode:
its context length; a prefill chunk: the chunk's end). That equals HF for a prompt
prefilled in one chunk and for every decode step.

Keys keep the rotation of the step that wrote them, as in HF's own KV cache across decode
steps. Beyond the original context, a prompt prefilled in several chunks, or one that
starts from a prefix-cache hit, can therefore be rotated differently from HF's one-pass
prefill; within the original context the rotation never depends on the length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from prism.engine.attention import AttentionBatch
from prism.errors import InvalidRequest


def _exponents(dim: int) -> torch.Tensor:
    """2i / dim for each rotated pair i."""
    return torch.arange(0, dim, 2, dtype=torch.int64).float() / dim


def _base_inverse_frequencies(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** _exponents(dim))


def _llama3_scaled(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = scaling["factor"]
    low = scaling["low_freq_factor"]
    high = scaling["high_freq_factor"]
    original_len = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original_len / low, inv_freq / factor, inv_freq)
    smooth = (original_len / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_between = (wavelength >= original_len / high) & (wavelength <= original_len / low)
    return torch.where(in_between, blended, scaled)


@dataclass(frozen=True, slots=True)
class _Rope:
    """What a scaling rule reads: theta, the rotated dims and HF's scaling dict."""

    theta: float
    dim: int
    scaling: dict[str, Any]
    max_position_embeddings: int | None

    @property
    def trained_len(self) -> int:
        """The config's ``max_position_embeddings``."""
        if self.max_position_embeddings is None:
            rope_type = self.scaling["rope_type"]
            raise ValueError(f"RoPE scaling {rope_type!r} needs max_position_embeddings")
        return self.max_position_embeddings

    @property
    def original_len(self) -> int:
        """The pretraining context, which HF defaults to ``max_position_embeddings``."""
        return self.scaling.get("original_max_position_embeddings") or self.trained_len

    @property
    def factor(self) -> float:
        """The extension factor; left out (None), it is the trained over the original length."""
        factor = self.scaling.get("factor")
        return self.trained_len / self.original_len if factor is None else factor


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn_attention_factor(rope: _Rope) -> float:
    """YaRN's cos/sin scale: given, or from ``mscale``/``mscale_all_dim``, or 0.1 ln(factor) + 1."""
    given = rope.scaling.get("attention_factor")
    if given is not None:
        return given
    mscale = rope.scaling.get("mscale")
    mscale_all_dim = rope.scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return _yarn_mscale(rope.factor, mscale) / _yarn_mscale(rope.factor, mscale_all_dim)
    return _yarn_mscale(rope.factor)


def _yarn_correction_dim(rope: _Rope, rotations: float) -> float:
    """The (fractional) dim whose wavelength turns ``rotations`` times over the original length."""
    turns = rope.original_len / (rotations * 2 * math.pi)
    return rope.dim * math.log(turns) / (2 * math.log(rope.theta))


def _yarn_ramp(rope: _Rope) -> torch.Tensor:
    """Per pair: 0 up to the ``beta_fast`` dim (kept as trained), 1 from the ``beta_slow`` dim
    on (interpolated by the factor), linear in between."""
    low = _yarn_correction_dim(rope, rope.scaling.get("beta_fast") or 32)
    high = _yarn_correction_dim(rope, rope.scaling.get("beta_slow") or 1)
    if rope.scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rope.dim - 1)
    if low == high:
        high += 0.001
    ramp = (torch.arange(rope.dim // 2, dtype=torch.float32) - low) / (high - low)
    return ramp.clamp(0, 1)


def _yarn(rope: _Rope) -> tuple[torch.Tensor, float]:
    """YaRN: high frequencies kept, low ones divided by the factor, a ramp between."""
    pair_bases = rope.theta ** _exponents(rope.dim)
    kept = 1 - _yarn_ramp(rope)
    inv_freq = (1.0 / (rope.factor * pair_bases)) * (1 - kept) + (1.0 / pair_bases) * kept
    return inv_freq, _yarn_attention_factor(rope)


def _longrope(rope: _Rope, which: str) -> tuple[torch.Tensor, float]:
    """LongRoPE with its ``short_factor`` or ``long_factor`` per pair, and its attention factor
    (given, or sqrt(1 + ln(factor) / ln(original length)))."""
    pair_factors = torch.tensor(rope.scaling[which], dtype=torch.float32)
    inv_freq = 1.0 / (pair_factors * rope.theta ** _exponents(rope.dim))
    attention_factor = rope.scaling.get("attention_factor")
    if attention_factor is None:
        factor = rope.factor
        growth = math.log(factor) / math.log(rope.original_len)
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + growth)
    return inv_freq, attention_factor


def _within_original(rope_type: str, rope: _Rope) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and attention factor of any context within the original length."""
    if rope_type in ("default", "dynamic"):
        return _base_inverse_frequencies(rope.theta, rope.dim), 1.0
    if rope_type == "linear":
        return _base_inverse_frequencies(rope.theta, rope.dim) / rope.scaling["factor"], 1.0
    if rope_type == "llama3":
        return _llama3_scaled(_base_inverse_frequencies(rope.theta, rope.dim), rope.scaling), 1.0
    if rope_type == "yarn":
        return _yarn(rope)
    if rope_type == "longrope":
        return _longrope(rope, "short_factor")
    raise InvalidRequest(f"RoPE scaling {rope_type!r} is not supported")


def _cos_sin(freqs: torch.Tensor, attention_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin [..., dim] of the angles ``freqs`` [..., dim / 2], both times
    ``attention_factor``. The signed sin has its first half negated: a half-swap (a roll)
    times it is the rotated half."""
    cos = torch.cat((freqs, freqs), dim=-1).cos() * attention_factor
    sin = freqs.sin() * attention_factor
    return cos, torch.cat((-sin, sin), dim=-1)


def _table(
    inv_freq: torch.Tensor, attention_factor: float, max_positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(max_positions, dtype=torch.int64).float()
    return _cos_sin(positions[:, None] * inv_freq[None, :], attention_factor)


def context_lengths(positions: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
    """Each packed token's context length at this step [tokens]: a decode's own position + 1,
    a prefill row's chunk end. Read off the positions, not the block tables (a windowed
    model's tables start at its first held block)."""
    lengths = positions + 1
    for span in batch.prefills:
        end = span.query_start + span.query_len
        lengths[span.query_start : end] = lengths[end - 1].clone()
    return lengths


class _BeyondOriginal(Protocol):
    """How a length-dependent scaling rotates tokens whose context passes ``original_len``."""

    original_len: int

    def rows(
        self, positions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin [tokens, dim] of ``positions`` in contexts of ``lengths``."""
        ...


class _LongTable:
    """LongRoPE beyond the original context: a second table, of the long factors."""

    def __init__(self, original_len: int, cos: torch.Tensor, signed_sin: torch.Tensor) -> None:
        self.original_len = original_len
        self.cos = cos
        self.signed_sin = signed_sin

    def rows(
        self, positions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        del lengths
        return self.cos[positions], self.signed_sin[positions]


class _DynamicNTK:
    """Dynamic NTK beyond the original context L0 (``max_position_embeddings``): a context
    of length L rotates with theta * (factor * L / L0 - (factor - 1)) ** (dim / (dim - 2))."""

    def __init__(self, rope: _Rope, dtype: torch.dtype, device: torch.device) -> None:
        self.original_len = rope.trained_len
        self.theta = rope.theta
        self.factor = rope.scaling["factor"]
        self.dim = rope.dim
        self.dtype = dtype
        self.exponents = _exponents(rope.dim).to(device)

    def rows(
        self, positions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # HF's fp32 operations in HF's order; lengths within L0 leave theta as is.
        lengths = lengths.clamp(min=self.original_len).float()
        stretch = self.factor * lengths / self.original_len - (self.factor - 1)
        # HF raises one length's stretch at a time, as a scalar: rounded from fp64, the power
        # is the same, where fp32 vector arithmetic is often an ulp off.
        growth = (stretch.double() ** (self.dim / (self.dim - 2))).float()
        theta = self.theta * growth
        inv_freq = 1.0 / (theta[:, None] ** self.exponents[None, :])
        cos, signed_sin = _cos_sin(positions.float()[:, None] * inv_freq, 1.0)
        return cos.to(self.dtype), signed_sin.to(self.dtype)


def _beyond_original(
    rope_type: str, rope: _Rope, max_positions: int, dtype: torch.dtype, device: torch.device
) -> _BeyondOriginal | None:
    """The rule for tokens past the original context, for the length-dependent scalings."""
    if rope_type == "dynamic":
        return _DynamicNTK(rope, dtype, device)
    if rope_type == "longrope":
        cos, signed_sin = _table(*_longrope(rope, "long_factor"), max_positions)
        placed = cos.to(dtype=dtype, device=device), signed_sin.to(dtype=dtype, device=device)
        return _LongTable(rope.original_len, *placed)
    return None


class RotaryEmbedding:
    """cos/sin tables for every position up to ``max_positions``, after the model's scaling.

    ``scaling`` is HF's rope dict (with ``rope_type``) or None for plain RoPE;
    ``max_position_embeddings`` is the config's, which ``dynamic`` always and ``yarn`` and
    ``longrope`` may read. ``cos`` and ``signed_sin`` are the rotation of contexts within
    the original length; ``dynamic`` and ``longrope`` rotate longer ones per token.
    """

    def __init__(
        self,
        head_dim: int,
        theta: float,
        scaling: dict[str, Any] | None,
        max_positions: int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        max_position_embeddings: int | None = None,
    ) -> None:
        scaling = scaling or {"rope_type": "default"}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        rope = _Rope(theta, head_dim, {**scaling, "rope_type": rope_type}, max_position_embeddings)
        cos, signed_sin = _table(*_within_original(rope_type, rope), max_positions)
        self.cos = cos.to(dtype=dtype, device=device)
        self.signed_sin = signed_sin.to(dtype=dtype, device=device)
        self._beyond_original = _beyond_original(rope_type, rope, max_positions, dtype, device)

    def at(self, positions: torch.Tensor, batch: AttentionBatch | None = None) -> Rotation:
        """The rotation of a step's tokens, looked up once and shared by every layer.

        ``batch`` gives each token's context length, which ``dynamic`` and ``longrope`` need.
        """
        cos, signed_sin = self.cos[positions], self.signed_sin[positions]
        beyond = self._beyond_original
        if beyond is not None:
            if batch is None:
                raise ValueError("a length-dependent RoPE scaling needs the step's batch")
            lengths = context_lengths(positions, batch)
            long_cos, long_signed_sin = beyond.rows(positions, lengths)
            longer = (lengths > beyond.original_len)[:, None]
            cos = torch.where(longer, long_cos, cos)
            signed_sin = torch.where(longer, long_signed_sin, signed_sin)
        return Rotation(cos.unsqueeze(1), signed_sin.unsqueeze(1))


@dataclass(frozen=True, slots=True)
class Rotation:
    """cos and signed sin [tokens, 1, dim] of one step's positions."""

    cos: torch.Tensor
    signed_sin: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [tokens, heads, dim] rotated by its tokens' positions (any number of heads).

        Each pair (x1, x2) of the two halves becomes (x1 cos - x2 sin, x2 cos + x1 sin):
        ``x * cos`` plus the halves swapped times ``(-sin, sin)``, the same products and sum
        as the usual ``x * cos + rotate_half(x) * sin``, in fewer operations.
        """
        rotated = x.roll(x.shape[-1] // 2, dims=-1).mul_(self.signed_sin)
        return (x * self.cos).add_(rotated)
