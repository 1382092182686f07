"""How a model's matrices end up quantized: at load, as the checkpoint stores them, or not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prism.errors import IncompatibleSettings
from prism.models.prequantized import PrequantizedFormat, checkpoint_quantization
from prism.models.prequantized.gguf import GGUFFormat
from prism.models.quantized import QuantizationSpec


@dataclass(frozen=True, slots=True)
class QuantizationPlan:
    """``at_load``: round-to-nearest of a full-precision checkpoint (the ``quantization``
    setting); ``stored``: the format of a checkpoint quantized by another tool. At most one
    is set."""

    at_load: QuantizationSpec | None = None
    stored: PrequantizedFormat | None = None

    @classmethod
    def for_model(cls, mode: str, group_size: int | None, folder: Path) -> QuantizationPlan:
        """The plan for a model folder under the ``quantization`` settings: ``gguf`` reads the
        GGUF file the folder was converted from; a checkpoint quantized by another tool is
        read as stored.

        Raises :class:`IncompatibleSettings` for a checkpoint quantization Prism cannot run,
        or a ``quantization`` mode asked of a checkpoint that is already quantized.
        """
        try:
            at_load = QuantizationSpec.for_mode(mode, group_size)
            stored = GGUFFormat.open(folder) if mode == "gguf" else checkpoint_quantization(folder)
        except ValueError as error:
            raise IncompatibleSettings(str(error)) from None
        if stored is not None and at_load is not None:
            raise IncompatibleSettings(
                f"the checkpoint is already quantized ({stored.name}): quantization {mode!r} "
                "applies to full-precision checkpoints, so leave it at 'none'"
            )
        return cls(at_load, stored)

    def group_size(self, tensor_parallel_size: int) -> int | None:
        """Columns per scale that every matrix, and a tensor-parallel split of it, must hold
        whole (None: any width). A stored checkpoint's matrices are laid out as they load,
        so only a split constrains them."""
        if self.at_load is not None:
            return self.at_load.group_size
        if self.stored is None or tensor_parallel_size == 1:
            return None
        return self.stored.group_size

    def describe(self) -> str:
        """A word for logs: ``unquantized``, ``int8``, ``int4`` or the checkpoint's format."""
        if self.stored is not None:
            return self.stored.name
        if self.at_load is not None:
            return f"int{self.at_load.bits}"
        return "unquantized"
