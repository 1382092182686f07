"""Convert a GGUF checkpoint into a float32 Hugging Face safetensors folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from prism.errors import InvalidRequest, ModelNotFound


def convert_gguf(gguf_path: Path, out_dir: Path, chat_template: str | None = None) -> Path:
    """Dequantize ``gguf_path`` and write model, tokenizer and generation config to ``out_dir``.

    ``chat_template``, if given, becomes the tokenizer's (a pretrained model's GGUF has none).

    The folder is built next to ``out_dir`` and renamed into place, so an interrupted
    conversion never leaves a partial ``out_dir``; a complete ``out_dir`` that appeared
    meanwhile is kept. Raises InvalidRequest for a file transformers cannot read.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ModelNotFound(f"GGUF file {gguf_path} does not exist")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary cache folder
    try:
        _write_hf_folder(gguf_path, staging, chat_template)
        _publish(staging, out_dir)
    except ValueError as exc:  # not a GGUF, or an architecture transformers cannot read
        raise InvalidRequest(f"cannot convert {gguf_path}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _publish(staging: Path, out_dir: Path) -> None:
    try:
        staging.rename(out_dir)
    except OSError:
        # Another process renamed the same conversion into place first: keep that one.
        if not (out_dir / "config.json").is_file():
            raise


def _write_hf_folder(gguf_path: Path, folder: Path, chat_template: str | None) -> None:
    directory, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    dequantized_model(gguf_path).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def dequantized_model(gguf_path: Path) -> PreTrainedModel:
    """transformers' float32 model of a GGUF file, as a plain model that can be saved."""
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
    )
    # save_pretrained refuses GGUF-quantized models: copy the weights into a plain one.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model.eval()
