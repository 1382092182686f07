"""Pre-quantized checkpoints written by each format's own tool, for the quantized-loading tests.

The tools (gptqmodel, AutoAWQ, llm-compressor) pin versions that conflict with Prism's venv, so
they live in their own venv, ``.venv/quant-tools`` (``make setup``), and run in a subprocess:
``tests/quantization-tools/write_checkpoints.py`` documents the variants and how each reference
is dequantized.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from support.models import TINY_SHAPE

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_VENV = REPO_ROOT / ".venv" / "quant-tools"
TOOLS_PYTHON = TOOLS_VENV / "bin" / "python"
TOOLS_STAMP = TOOLS_VENV / ".prism-setup"
"""Written by the Makefile once the tools' venv is complete."""
WRITER = REPO_ROOT / "tests" / "quantization-tools" / "write_checkpoints.py"
WRITE_TIMEOUT_S = 1800.0
"""Generous: gptqmodel's first run on a machine warms up for about 40 s, each variant then takes
seconds on the tiny model; SmolLM2-135M takes about two minutes with GPTQ."""

QUANTIZED_TINY_SHAPE = TINY_SHAPE | dict(
    hidden_size=256, intermediate_size=512, tie_word_embeddings=False
)
"""Every Linear's in_features (256 or 512) is a multiple of the tools' default group size, 128."""


def save_quantizable_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A seeded random fp32 Llama (2 layers, hidden 256) and an offline tokenizer, in ``folder``.

    The tools calibrate on random token ids, but gptqmodel loads the source's tokenizer anyway: a
    word-level one over ``<unk> <s> </s> <pad> w0 … w251`` (whitespace-split) serves.
    """
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    words = special + [f"w{i}" for i in range(QUANTIZED_TINY_SHAPE["vocab_size"] - len(special))]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, "<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # pyright: ignore[reportAttributeAccessIssue]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    torch.manual_seed(seed)
    config = LlamaConfig(**QUANTIZED_TINY_SHAPE, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_quantized(
    source: Path, out_root: Path, variants: list[str], group_size: int = 128
) -> dict[str, tuple[Path, Path]]:
    """Quantize ``source`` with the tools, one subprocess for all ``variants``.

    Returns ``{variant: (checkpoint_folder, reference_folder)}``: the checkpoint as the tool saved
    it, and a plain fp32 checkpoint holding the tool's own dequantization of its weights.
    """
    if not (TOOLS_PYTHON.is_file() and TOOLS_STAMP.is_file()):
        raise AssertionError(
            f"the quantization tools' venv {TOOLS_VENV} is missing or incomplete: run `make setup`"
        )
    command = [str(TOOLS_PYTHON), str(WRITER), str(source), str(out_root), *variants]
    command += ["--group-size", str(group_size)]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=WRITE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else ""
        raise AssertionError(
            f"{WRITER.name} timed out after {WRITE_TIMEOUT_S:.0f} s:\n{stderr[-4000:]}"
        ) from error
    if result.returncode != 0:
        raise AssertionError(
            f"{WRITER.name} {' '.join(variants)} failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
    for line in result.stdout.splitlines():
        if line.startswith("[write_checkpoints]"):  # per-variant timings
            print(line)
    return {
        variant: (out_root / variant, out_root / f"{variant}-reference") for variant in variants
    }
