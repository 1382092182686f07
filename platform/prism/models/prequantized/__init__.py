"""Checkpoints quantized by other tools (GPTQ, AWQ, compressed-tensors), read into Prism's
quantized layout as their layers load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from prism.models.prequantized.awq import AWQFormat
from prism.models.prequantized.compressed_tensors import CompressedTensorsFormat
from prism.models.prequantized.gptq import GPTQFormat
from prism.models.quantized import QuantizedMatrix
from prism.models.weights import Checkpoint


class PrequantizedFormat(Protocol):
    """How one checkpoint format stores quantized linear layers."""

    @property
    def name(self) -> str: ...

    @property
    def group_size(self) -> int | None: ...

    def read(self, checkpoint: Checkpoint, prefix: str) -> QuantizedMatrix | None:
        """The linear layer ``prefix`` in Prism's layout, or None where it is not quantized."""
        ...


_FORMATS: dict[str, type[GPTQFormat] | type[AWQFormat] | type[CompressedTensorsFormat]] = {
    "gptq": GPTQFormat,
    "awq": AWQFormat,
    "compressed-tensors": CompressedTensorsFormat,
}


def checkpoint_quantization(folder: Path) -> PrequantizedFormat | None:
    """The quantization a checkpoint folder's ``config.json`` declares, or None.

    Raises ValueError for a quantization method or scheme Prism cannot run, naming it.
    """
    config: dict[str, Any] = json.loads((Path(folder) / "config.json").read_text("utf-8"))
    settings = config.get("quantization_config")
    if not settings:
        return None
    method = str(settings.get("quant_method", "")).lower()
    if method not in _FORMATS:
        raise ValueError(
            f"checkpoint quantization {method!r} is not supported: Prism loads "
            f"{', '.join(_FORMATS)} checkpoints"
        )
    return _FORMATS[method].from_config(settings)


__all__ = ["PrequantizedFormat", "checkpoint_quantization"]
