"""Packed integers, zero points and act-order groups brought into Prism's quantized layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prism.engine.matmul import linear
from prism.engine.quantization_plan import QuantizationPlan
from prism.errors import IncompatibleSettings
from prism.models.prequantized import checkpoint_quantization
from prism.models.prequantized.awq import AWQ_FIELD_OF_VALUE
from prism.models.prequantized.packing import matrix_from_unsigned, unpack_int32
from prism.models.quantized import quantize, stack_rows
from support.models import ReferenceModel


def _reference(
    values: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group_of_column: torch.Tensor
) -> torch.Tensor:
    """``(q - zero) * scale`` column by column, each column with its own group's pair."""
    return (values - zeros[:, group_of_column]).float() * scales[:, group_of_column]


def _random(rows: int, cols: int, groups: int, bits: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 1 << bits, (rows, cols), generator=generator, dtype=torch.int32)
    zeros = torch.randint(0, 1 << bits, (rows, groups), generator=generator, dtype=torch.int32)
    scales = torch.rand(rows, groups, generator=generator) / 10 + 0.01
    return values, zeros, scales


def test_words_unpack_lowest_bits_first_along_either_dimension() -> None:
    word = torch.tensor([[0x76543210]], dtype=torch.int32)
    assert unpack_int32(word, 4, dim=1).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    assert unpack_int32(word, 4, dim=0).flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert unpack_int32(word, 8, dim=1).tolist() == [[0x10, 0x32, 0x54, 0x76]]
    high = torch.tensor([[-1]], dtype=torch.int32)  # all bits set: the sign is no value
    assert unpack_int32(high, 4, dim=1).tolist() == [[15] * 8]


def test_awq_words_hold_columns_interleaved() -> None:
    # AWQ packs output columns 0, 2, 4, 6, 1, 3, 5, 7 into bit fields 0..7.
    fields = [0, 2, 4, 6, 1, 3, 5, 7]
    word = sum(value << (4 * field) for field, value in enumerate(fields))
    packed = torch.tensor([[word]], dtype=torch.int64).to(torch.int32)
    assert unpack_int32(packed, 4, dim=1, field_of_value=AWQ_FIELD_OF_VALUE).tolist() == [
        list(range(8))
    ]


@pytest.mark.parametrize("bits", [4, 8])
def test_zero_points_become_offsets(bits: int) -> None:
    values, zeros, scales = _random(5, 128, 2, bits)
    matrix = matrix_from_unsigned(values, zeros, scales, bits, 64)

    expected = _reference(values, zeros, scales, torch.arange(128) // 64)
    torch.testing.assert_close(matrix.dequantize(), expected)
    assert (matrix.bits, matrix.group_size, matrix.input_order) == (bits, 64, None)


def test_symmetric_8_bit_needs_no_offsets() -> None:
    values, _, scales = _random(3, 64, 1, 8)
    matrix = matrix_from_unsigned(values, torch.full((3, 1), 128), scales, 8, 64)
    assert matrix.offsets is None
    torch.testing.assert_close(matrix.dequantize(), (values - 128).float() * scales)


def test_a_short_last_group_is_cut_into_even_groups() -> None:
    # 96 columns in groups of 64: GPTQ stores a second group of 32 columns.
    values, zeros, scales = _random(4, 96, 2, 4)
    matrix = matrix_from_unsigned(values, zeros, scales, 4, 64)

    assert matrix.group_size == 32
    torch.testing.assert_close(
        matrix.dequantize(), _reference(values, zeros, scales, torch.arange(96) // 64)
    )


def test_act_order_groups_are_sorted_and_the_activations_follow() -> None:
    values, zeros, scales = _random(6, 128, 4, 4, seed=1)
    group_index = torch.randperm(128, generator=torch.Generator().manual_seed(2)) // 32
    matrix = matrix_from_unsigned(values, zeros, scales, 4, 32, group_index)
    weight = _reference(values, zeros, scales, group_index)

    assert matrix.input_order is not None
    x = torch.randn(3, 128)
    torch.testing.assert_close(linear(x, matrix), x @ weight.T, rtol=1e-5, atol=1e-5)


def test_groups_of_uneven_sizes_are_refused() -> None:
    values, zeros, scales = _random(2, 64, 2, 4)
    lopsided = torch.tensor([0] * 40 + [1] * 24)
    with pytest.raises(ValueError, match="do not each hold 32 columns"):
        matrix_from_unsigned(values, zeros, scales, 4, 32, lopsided)


def test_fused_matrices_share_the_widest_integers_and_smallest_group() -> None:
    weights = [torch.randn(rows, 128) for rows in (32, 16, 16)]
    parts = [quantize(weights[0], 4, 64), quantize(weights[1], 8, 32), quantize(weights[2], 4, 32)]
    fused = stack_rows(parts)

    assert (fused.bits, fused.group_size, fused.shape) == (8, 32, (64, 128))
    torch.testing.assert_close(fused.dequantize(), torch.cat([p.dequantize() for p in parts]))


def test_rank_spans_keep_groups_whole_and_pad_rows_with_zeros() -> None:
    matrix = quantize(torch.randn(10, 128), 4, 32)
    dense = matrix.dequantize()

    torch.testing.assert_close(matrix.column_span(64, 128).dequantize(), dense[:, 64:])
    padded = matrix.row_span(8, 10, 4).dequantize()
    torch.testing.assert_close(padded[:2], dense[8:])
    assert not padded[2:].any()
    with pytest.raises(ValueError, match="split a group"):
        matrix.column_span(16, 128)


def _folder_with(tmp_path: Path, source: Path, quantization_config: dict) -> Path:
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_a_full_precision_checkpoint_declares_no_quantization(tiny_llama: ReferenceModel) -> None:
    assert checkpoint_quantization(tiny_llama.path) is None


@pytest.mark.parametrize(
    ("quantization_config", "message"),
    [
        ({"quant_method": "bitsandbytes"}, "'bitsandbytes' is not supported"),
        ({"quant_method": "gptq", "bits": 3}, "3 bits is not supported"),
        ({"quant_method": "gptq", "checkpoint_format": "marlin"}, "'marlin' is not supported"),
        ({"quant_method": "awq", "version": "gemv"}, "Prism loads 4-bit GEMM"),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}},
            },
            "'float-quantized' is not supported",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "config_groups": {
                    "group_0": {
                        "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                        "input_activations": {"num_bits": 8, "type": "int"},
                    }
                },
            },
            "quantizes activations",
        ),
    ],
    ids=["bitsandbytes", "gptq-3-bit", "gptq-marlin", "awq-gemv", "ct-fp8", "ct-w8a8"],
)
def test_quantizations_prism_cannot_run_are_named(
    tmp_path: Path, tiny_llama: ReferenceModel, quantization_config: dict, message: str
) -> None:
    folder = _folder_with(tmp_path, tiny_llama.path, quantization_config)
    with pytest.raises(IncompatibleSettings, match=message):
        QuantizationPlan.for_model("none", None, folder)


def test_a_quantized_checkpoint_is_not_quantized_again(
    tmp_path: Path, tiny_llama: ReferenceModel
) -> None:
    folder = _folder_with(tmp_path, tiny_llama.path, {"quant_method": "gptq", "bits": 4})
    assert QuantizationPlan.for_model("none", None, folder).describe() == "gptq"
    with pytest.raises(IncompatibleSettings, match="already quantized \\(gptq\\)"):
        QuantizationPlan.for_model("int8", None, folder)
