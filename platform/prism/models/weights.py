"""Read a Hugging Face safetensors checkpoint tensor by tensor, whole or one shard of it."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import safe_open

from prism.errors import ModelNotFound

_INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True, slots=True)
class Shard:
    """Part ``index`` of ``count`` equal parts of a tensor along ``dim``.

    A part spans ``ceil(size / count)`` rows; the last one is padded with zeros when
    ``count`` does not divide the size (a vocabulary split over ranks, for instance).
    """

    dim: int
    index: int
    count: int

    def span(self, size: int) -> tuple[int, int, int]:
        """``(start, stop, part_size)`` of this part of a dimension of ``size``."""
        part = -(-size // self.count)
        start = min(self.index * part, size)
        return start, min(start + part, size), part


class Checkpoint:
    """The tensors of a safetensors checkpoint folder, read on demand.

    Only what is asked for is read from disk, so a tensor-parallel rank never holds another
    rank's part of the weights. Use as a context manager; :meth:`unread` lists what no one
    asked for.
    """

    def __init__(self, folder: Path) -> None:
        self._stack = ExitStack()
        self._files: dict[str, Any] = {}
        for file in _shard_files(Path(folder)):
            handle = self._stack.enter_context(safe_open(file, framework="pt", device="cpu"))
            self._files.update(dict.fromkeys(handle.keys(), handle))
        self._read: set[str] = set()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def names(self) -> list[str]:
        """Every tensor name in the checkpoint, sorted."""
        return sorted(self._files)

    def read(
        self,
        name: str,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        shard: Shard | None = None,
    ) -> torch.Tensor:
        """One tensor (or one shard of it) on ``device``; floating-point data cast to ``dtype``."""
        try:
            handle = self._files[name]
        except KeyError:
            raise ValueError(f"checkpoint has no tensor {name!r}") from None
        self._read.add(name)
        if shard is None:
            tensor = handle.get_tensor(name)
        else:
            tensor = _read_shard(handle.get_slice(name), shard)
        cast = dtype if tensor.is_floating_point() else tensor.dtype
        return tensor.to(device=device, dtype=cast)

    def skip(self, name: str) -> None:
        """Count ``name`` as used without reading it (another copy of it was read)."""
        if name in self._files:
            self._read.add(name)

    def unread(self) -> list[str]:
        """Names of the tensors never read, sorted."""
        return sorted(set(self._files) - self._read)


def _read_shard(view: Any, shard: Shard) -> torch.Tensor:
    shape = view.get_shape()
    start, stop, part = shard.span(shape[shard.dim])
    index = tuple(
        slice(start, stop) if dim == shard.dim else slice(None) for dim in range(len(shape))
    )
    tensor = view[index]
    missing = part - (stop - start)
    if missing:
        pad = list(tensor.shape)
        pad[shard.dim] = missing
        tensor = torch.cat([tensor, tensor.new_zeros(pad)], dim=shard.dim)
    return tensor


def _shard_files(folder: Path) -> list[Path]:
    index = folder / _INDEX_FILE
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise ModelNotFound(f"{folder} lacks shards named in {_INDEX_FILE}: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelNotFound(f"no *.safetensors files in {folder}")
    return files
