"""The architecture facts of a Hugging Face checkpoint, read from its ``config.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism.errors import InvalidRequest, ModelNotFound
from prism.models.architectures import FAMILIES, Family, MixtureOfExperts, mixture_of_experts

_DEFAULT_ROPE_THETA = 10_000.0
_DEFAULT_RMS_NORM_EPS = 1e-6
_ACTIVATIONS = frozenset({"silu", "gelu_pytorch_tanh"})


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shapes and constants a decoder-only Llama-family model needs to run.

    ``attention_bias``: the q/k/v projections carry a bias (always for Qwen2, whose o_proj
    has none; Llama's ``attention_bias`` gives o_proj one as well).
    ``rope_scaling`` is the HF rope dict (with ``rope_type``) or None for plain RoPE.
    ``qk_norm``: each query and key head is RMS-normalised before RoPE (Qwen3, Gemma 3).
    ``mixture``: the routed experts of a mixture-of-experts model (None: dense MLPs).
    ``gemma``: Gemma's decoder: norms scale by (1 + w), embeddings by sqrt(hidden_size),
    attention and MLP outputs are normalised before the residual add, queries are scaled by
    ``query_pre_attn_scalar`` ** -0.5 and windowed layers rotate with ``local_rope_theta``.
    ``final_logit_softcap``: logits become cap * tanh(logits / cap).
    ``layer_windows``: per layer, the sliding attention window in tokens, or None where the
    layer attends to the whole sequence.
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    layer_windows: tuple[int | None, ...] = ()
    qk_norm: bool = False
    hidden_act: str = "silu"
    mixture: MixtureOfExperts | None = None
    gemma: bool = False
    query_pre_attn_scalar: float | None = None
    local_rope_theta: float | None = None
    final_logit_softcap: float | None = None

    @property
    def bounded_window(self) -> int | None:
        """The window every layer slides (so older KV is never read again), if they all do."""
        windows = set(self.layer_windows)
        if len(windows) != 1:
            return None
        return next(iter(windows))

    @classmethod
    def from_folder(cls, path: Path | str) -> ModelConfig:
        """Read ``config.json`` (and ``generation_config.json`` if present) of an HF folder."""
        folder = Path(path)
        raw = _read_json(folder / "config.json", required=True)
        generation = _read_json(folder / "generation_config.json", required=False)

        architectures = raw.get("architectures") or []
        architecture = architectures[0] if architectures else None
        family = FAMILIES.get(architecture or "")
        if architecture is None or family is None:
            supported = ", ".join(FAMILIES)
            raise InvalidRequest(
                f"unsupported model architecture {architecture!r} in {folder}; "
                f"supported: {supported}"
            )
        _check_unsupported_features(raw, folder)
        hidden_size = _require(raw, "hidden_size", folder)
        num_heads = _require(raw, "num_attention_heads", folder)
        rope_theta, rope_scaling, local_rope_theta = _ropes(raw)
        bos_token_id = raw.get("bos_token_id")
        if bos_token_id is None:
            bos_token_id = generation.get("bos_token_id")
        return cls(
            architecture=architecture,
            vocab_size=_require(raw, "vocab_size", folder),
            hidden_size=hidden_size,
            intermediate_size=_require(raw, "intermediate_size", folder),
            num_layers=_require(raw, "num_hidden_layers", folder),
            num_heads=num_heads,
            num_kv_heads=raw.get("num_key_value_heads") or num_heads,
            head_dim=raw.get("head_dim") or hidden_size // num_heads,
            rms_norm_eps=float(raw.get("rms_norm_eps", _DEFAULT_RMS_NORM_EPS)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=_require(raw, "max_position_embeddings", folder),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=family.qkv_bias or bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)),
            bos_token_id=bos_token_id,
            eos_token_ids=_eos_token_ids(raw, generation),
            layer_windows=_layer_windows(raw, family),
            qk_norm=family.qk_norm,
            hidden_act=_activation(raw, folder),
            mixture=mixture_of_experts(raw, family),
            gemma=family.gemma,
            query_pre_attn_scalar=raw.get("query_pre_attn_scalar") if family.gemma else None,
            local_rope_theta=local_rope_theta if family.gemma else None,
            final_logit_softcap=raw.get("final_logit_softcapping"),
        )


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ModelNotFound(f"no {path.name} in {path.parent}")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}") from exc


def _require(raw: dict[str, Any], key: str, folder: Path) -> Any:
    if raw.get(key) is None:
        raise InvalidRequest(f"{folder / 'config.json'} lacks {key!r}")
    return raw[key]


def _check_unsupported_features(raw: dict[str, Any], folder: Path) -> None:
    if raw.get("attn_logit_softcapping") is not None:
        raise InvalidRequest(f"{folder}: attention logit soft-capping is not supported")


def _activation(raw: dict[str, Any], folder: Path) -> str:
    activation = raw.get("hidden_activation") or raw.get("hidden_act") or "silu"
    if activation not in _ACTIVATIONS:
        raise InvalidRequest(f"{folder}: MLP activation {activation!r} is not supported")
    return activation


def _ropes(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None, float]:
    """(theta, scaling) of the global layers and the theta of windowed ones (Gemma 3 keeps
    one rope per layer type; older configs give ``rope_local_base_freq``)."""
    params = raw.get("rope_parameters") or {}
    if "full_attention" in params:
        theta, scaling = _rope(raw, params["full_attention"])
        local_theta, _ = _rope(raw, params.get("sliding_attention") or {})
        return theta, scaling, local_theta
    theta, scaling = _rope(raw, params or raw.get("rope_scaling") or {})
    return theta, scaling, float(raw.get("rope_local_base_freq", _DEFAULT_ROPE_THETA))


def _rope(raw: dict[str, Any], rope: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """Return (theta, scaling) from transformers-5 ``rope_parameters`` or v4 keys."""
    params = dict(rope)
    theta = float(params.pop("rope_theta", raw.get("rope_theta", _DEFAULT_ROPE_THETA)))
    # transformers 4 configs sometimes say "type" where newer ones say "rope_type".
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type == "default":
        return theta, None
    if "original_max_position_embeddings" in raw:  # a top-level value wins, as in HF (Phi-3)
        params["original_max_position_embeddings"] = raw["original_max_position_embeddings"]
    return theta, {"rope_type": rope_type, **params}


def _eos_token_ids(raw: dict[str, Any], generation: dict[str, Any]) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (raw, generation):
        value = source.get("eos_token_id")
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
    return tuple(ids)


def _layer_windows(raw: dict[str, Any], family: Family) -> tuple[int | None, ...]:
    """Each layer's attention window, from ``layer_types`` where the config lists them."""
    num_layers = int(raw["num_hidden_layers"])
    window = raw.get("sliding_window")
    if not window or (family.window_opt_in and not raw.get("use_sliding_window", False)):
        return (None,) * num_layers
    layer_types = raw.get("layer_types")
    if layer_types is None and family.gemma:  # older configs: every sixth layer is global
        pattern = int(raw.get("sliding_window_pattern", 6))
        layer_types = [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(num_layers)
        ]
    if layer_types is None:  # older configs: Qwen slides from max_window_layers on
        first = int(raw.get("max_window_layers", 0)) if family.window_opt_in else 0
        layer_types = [
            "sliding_attention" if i >= first else "full_attention" for i in range(num_layers)
        ]
    return tuple(int(window) if kind == "sliding_attention" else None for kind in layer_types)
