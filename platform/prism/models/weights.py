"""Load a Hugging Face safetensors checkpoint into a flat name -> tensor dict."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from prism.errors import ModelNotFound

_INDEX_FILE = "model.safetensors.index.json"


def load_state_dict(
    folder: Path, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Read every safetensors shard of ``folder`` into HF-named tensors on ``device``.

    Floating-point tensors are cast to ``dtype``; others keep theirs. With a shard index only
    the files it names are read (some repos ship extra ``consolidated.safetensors``).
    """
    state: dict[str, torch.Tensor] = {}
    for file in _shard_files(Path(folder)):
        with safe_open(file, framework="pt", device="cpu") as shard:
            for name in shard.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = shard.get_tensor(name)
                cast = dtype if tensor.is_floating_point() else tensor.dtype
                state[name] = tensor.to(device=device, dtype=cast)
    return state


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
