"""Rotary position embeddings (RoPE), with the Llama 3 and linear frequency scalings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prism.errors import InvalidRequest


def _base_inverse_frequencies(theta: float, head_dim: int) -> torch.Tensor:
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float) / head_dim
    return 1.0 / (theta**exponents)


def _llama3_scaled(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
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


def inverse_frequencies(theta: float, head_dim: int, scaling: dict | None) -> torch.Tensor:
    """Per-pair rotation frequencies of RoPE, after the model's scaling rule."""
    inv_freq = _base_inverse_frequencies(theta, head_dim)
    if scaling is None:
        return inv_freq
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return _llama3_scaled(inv_freq, scaling)
    raise InvalidRequest(f"RoPE scaling {rope_type!r} is not supported")


class RotaryEmbedding:
    """Precomputed cos/sin tables for every position up to ``max_positions``."""

    def __init__(
        self,
        head_dim: int,
        theta: float,
        scaling: dict | None,
        max_positions: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        inv_freq = inverse_frequencies(theta, head_dim, scaling)
        positions = torch.arange(max_positions, dtype=torch.int64).float()
        freqs = positions[:, None] * inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        self.cos = angles.cos().to(dtype=dtype, device=device)
        # The first half negated: a half-swap (a roll) times this is the rotated half.
        self.signed_sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1).to(
            dtype=dtype, device=device
        )

    def at(self, positions: torch.Tensor) -> Rotation:
        """The rotation of a step's tokens, looked up once and shared by every layer."""
        return Rotation(self.cos[positions].unsqueeze(1), self.signed_sin[positions].unsqueeze(1))


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
