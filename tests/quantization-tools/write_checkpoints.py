"""Write pre-quantized checkpoints with each format's own tool, and an fp32 reference for each.

Run by the quantization tools' venv (``.venv/quant-tools``, built by ``make setup``), never by
Prism's: it imports the tools and not Prism::

    write_checkpoints.py SOURCE_FOLDER OUT_ROOT VARIANT [VARIANT...] [--group-size N] [--seed N]

For each VARIANT it writes

* ``OUT_ROOT/VARIANT/``: the quantized checkpoint as the tool saves it, plus the source's tokenizer
  files where the tool did not save them;
* ``OUT_ROOT/VARIANT-reference/``: a plain fp32 HF safetensors checkpoint of the same model. Each
  quantized Linear's weight is the tool's own dequantization of the saved quantized tensors; every
  other tensor is the quantized checkpoint's, cast to fp32 (so AWQ's rescaled norms and GPTQ's
  bf16-rounded embeddings are the checkpoint's, not the source's). Its config.json has no
  ``quantization_config``.

Variants (``--group-size``, default 128, is every variant's group size):

``gptq-sym``, ``gptq-asym``, ``gptq-sym-act``, ``gptq-asym-act``
    gptqmodel GPTQ, 4-bit, symmetric or not, ``desc_act`` False or True, calibrated on seeded
    random token ids passed pre-tokenized (gptqmodel still loads the source's tokenizer, so the
    source must have one). gptqmodel loads the source in bf16 on CPU, so the unquantized tensors
    are saved in bf16 and the scales in fp16, in GPTQ v1 format (``qzeros`` hold zero - 1).
    Reference: ``gptqmodel.utils.model_dequant.convert_gptq_file``,
    gptqmodel's checkpoint dequantizer (adds the v1 +1 back, gathers through ``g_idx``, fp32 math).
``awq-gemm``
    AutoAWQ GEMM, w4, zero point, calibrated on the same kind of token ids (AutoAWQ takes a list of
    token-id lists, so no tokenizer). Reference: ``awq.utils.packing_utils.dequantize_gemm``, the
    CPU path of ``WQLinear_GEMM.forward``, given the fp16 scales cast to fp32 (fp32 math).
``ct-w4a16``, ``ct-w4a16-asym``, ``ct-w8a16``
    llm-compressor ``oneshot`` with a data-free round-to-nearest ``QuantizationModifier`` (no
    calibration), lm_head ignored: compressed-tensors' W4A16, W4A16_ASYM and W8A16 presets (all
    int, group strategy, group 128) with the group size replaced, saved ``save_compressed=True``
    (``pack-quantized``). The source is loaded in its own dtype, so the scales are in that dtype.
    Reference: compressed-tensors' ``PackedQuantizationCompressor.decompress`` (what transformers
    runs to decompress such a checkpoint), given the scales cast to fp32 (fp32 math).

All variants of one call run in this one process: importing the tools is the slow part.
"""

from __future__ import annotations

import os

# gptqmodel sizes its CPU worker pool as (cores + 1) // 2: on 2 cores, 1, fewer than the 2 its
# model-loader pool then asks for, and quantize() fails. Read when gptqmodel is imported.
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

GPTQ_VARIANTS = {
    "gptq-sym": (True, False),
    "gptq-asym": (False, False),
    "gptq-sym-act": (True, True),
    "gptq-asym-act": (False, True),
}
"""Variant: (sym, desc_act)."""
AWQ_VARIANTS = ("awq-gemm",)
CT_VARIANTS = {"ct-w4a16": "W4A16", "ct-w4a16-asym": "W4A16_ASYM", "ct-w8a16": "W8A16"}
"""Variant: compressed-tensors preset scheme (its group size replaced by --group-size)."""
VARIANTS = (*GPTQ_VARIANTS, *AWQ_VARIANTS, *CT_VARIANTS)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
CALIBRATION_SAMPLES = 16
CALIBRATION_LENGTH = 64


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def calibration_ids(source: Path, seed: int) -> list[list[int]]:
    """Seeded random token ids over the source's vocabulary: no tokenizer or text needed."""
    vocab_size = AutoConfig.from_pretrained(source).vocab_size
    generator = torch.Generator().manual_seed(seed)
    shape = (CALIBRATION_SAMPLES, CALIBRATION_LENGTH)
    return torch.randint(0, vocab_size, shape, generator=generator).tolist()


def safetensors_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    return files


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in safetensors_files(folder):
        with safe_open(str(path), framework="pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})  # noqa: SIM118
    return tensors


def quantization_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["quantization_config"]


def copy_tokenizer(source: Path, folder: Path) -> None:
    """The source's tokenizer and generation files that the tool did not write itself."""
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (source / name).is_file() and not (folder / name).exists():
            shutil.copy2(source / name, folder / name)


# ---- the tools: each writes OUT (the quantized checkpoint) from SOURCE ----


def write_gptq(source: Path, out: Path, variant: str, group_size: int, seed: int) -> None:
    from gptqmodel import GPTQModel, QuantizeConfig

    sym, desc_act = GPTQ_VARIANTS[variant]
    config = QuantizeConfig(bits=4, group_size=group_size, sym=sym, desc_act=desc_act)
    model = GPTQModel.load(str(source), config, device="cpu")
    calibration = [
        {"input_ids": ids, "attention_mask": [1] * len(ids)}
        for ids in calibration_ids(source, seed)
    ]
    model.quantize(calibration, batch_size=1)
    model.save(str(out))


def write_awq(source: Path, out: Path, variant: str, group_size: int, seed: int) -> None:
    from awq import AutoAWQForCausalLM

    model = AutoAWQForCausalLM.from_pretrained(str(source), device_map="cpu")
    config = {"zero_point": True, "q_group_size": group_size, "w_bit": 4, "version": "GEMM"}
    model.quantize(
        None,  # no tokenizer: the calibration data is token ids already
        quant_config=config,
        calib_data=calibration_ids(source, seed),
        max_calib_samples=CALIBRATION_SAMPLES,
        max_calib_seq_len=CALIBRATION_LENGTH,
    )
    model.save_quantized(str(out))


def write_ct(source: Path, out: Path, variant: str, group_size: int, seed: int) -> None:
    from compressed_tensors.quantization import preset_name_to_scheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    scheme = preset_name_to_scheme(CT_VARIANTS[variant], ["Linear"])
    assert scheme.weights is not None
    scheme.weights = scheme.weights.model_copy(update={"group_size": group_size})
    recipe = QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    oneshot(model=model, recipe=recipe)
    model.save_pretrained(out, save_compressed=True)


# ---- the tools' dequantization: the quantized folder's tensors, dense, in fp32 ----


def dense_gptq(folder: Path) -> dict[str, torch.Tensor]:
    from gptqmodel.utils.model_dequant import convert_gptq_file

    config = quantization_config(folder)
    tensors: dict[str, torch.Tensor] = {}
    for path in safetensors_files(folder):
        tensors.update(convert_gptq_file(path, torch.float32, config, "cpu"))
    return tensors


def dense_awq(folder: Path) -> dict[str, torch.Tensor]:
    from awq.utils.packing_utils import dequantize_gemm

    config = quantization_config(folder)
    tensors = read_tensors(folder)
    dense: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith(".qweight"):
            prefix = name.removesuffix(".qweight")
            weight = dequantize_gemm(
                tensor,
                tensors[f"{prefix}.qzeros"],
                tensors[f"{prefix}.scales"].float(),
                config["bits"],
                config["group_size"],
            )
            dense[f"{prefix}.weight"] = weight.t().contiguous()
        elif not name.endswith((".qzeros", ".scales")):
            dense[name] = tensor.float()
    return dense


def dense_ct(folder: Path) -> dict[str, torch.Tensor]:
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    config = QuantizationConfig.model_validate(quantization_config(folder))
    (scheme,) = config.config_groups.values()
    compressor = BaseCompressor.get_value_from_registry(config.format)
    parts = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
    tensors = read_tensors(folder)
    dense: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith(".weight_packed"):
            prefix = name.removesuffix(".weight_packed")
            module = {p: tensors[f"{prefix}.{p}"] for p in parts if f"{prefix}.{p}" in tensors}
            module["weight_scale"] = module["weight_scale"].float()
            dense[f"{prefix}.weight"] = compressor.decompress(module, scheme)["weight"]
        elif name.rpartition(".")[2] not in parts:
            dense[name] = tensor.float()
    return dense


def write_reference(folder: Path, reference: Path, dense: dict[str, torch.Tensor]) -> None:
    """``dense`` saved as a plain fp32 HF checkpoint with ``folder``'s config, unquantized."""
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    dense = {name: tensor.float() for name, tensor in dense.items()}
    missing, unexpected = model.load_state_dict(dense, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"reference state dict: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(reference)
    assert "quantization_config" not in json.loads((reference / "config.json").read_text())
    copy_tokenizer(folder, reference)


Writer = Callable[[Path, Path, str, int, int], None]
Dequantizer = Callable[[Path], dict[str, torch.Tensor]]


def tool_for(variant: str) -> tuple[Writer, Dequantizer]:
    if variant in GPTQ_VARIANTS:
        return write_gptq, dense_gptq
    if variant in AWQ_VARIANTS:
        return write_awq, dense_awq
    return write_ct, dense_ct


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("source", type=Path, help="an fp HF checkpoint folder")
    parser.add_argument("out_root", type=Path)
    parser.add_argument("variants", nargs="+", choices=VARIANTS, metavar="VARIANT")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source: Path = args.source.resolve()
    out_root: Path = args.out_root.resolve()
    if not (source / "config.json").is_file():
        parser.error(f"{source} is not an HF checkpoint folder (no config.json)")
    has_tokenizer = any((source / name).is_file() for name in TOKENIZER_FILES)
    if not has_tokenizer and any(variant in GPTQ_VARIANTS for variant in args.variants):
        parser.error(f"gptqmodel loads the source's tokenizer, and {source} has none")
    out_root.mkdir(parents=True, exist_ok=True)

    # Some tools write logs and offload files under the working directory: keep them out of the
    # caller's.
    with tempfile.TemporaryDirectory(prefix="write-checkpoints-") as scratch:
        os.chdir(scratch)
        for variant in args.variants:
            folder, reference = out_root / variant, out_root / f"{variant}-reference"
            for path in (folder, reference):
                shutil.rmtree(path, ignore_errors=True)
            write, dequantize = tool_for(variant)
            started = time.perf_counter()
            seed_everything(args.seed)
            write(source, folder, variant, args.group_size, args.seed)
            copy_tokenizer(source, folder)
            written = time.perf_counter()
            write_reference(folder, reference, dequantize(folder))
            done = time.perf_counter()
            print(
                f"[write_checkpoints] {variant}: quantized {written - started:.1f} s, "
                f"reference {done - written:.1f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
