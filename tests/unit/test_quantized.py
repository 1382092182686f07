"""Prism's quantized matrix layout: round-to-nearest quantization, packing and its kernels."""

from __future__ import annotations

import pytest
import torch

from prism.engine.matmul import linear, prepare_quantized
from prism.engine.quantized_panels import panel_matmul, to_panels
from prism.models.quantized import QuantizationSpec, QuantizedMatrix, pack_int4, quantize

SPECS = [(8, None), (8, 16), (4, 32), (4, 64)]


def _weight(rows: int = 40, cols: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize(("bits", "group_size"), SPECS)
def test_round_to_nearest_error_is_within_half_a_step(bits: int, group_size: int | None) -> None:
    weight = _weight()
    matrix = quantize(weight, bits, group_size)
    cols = weight.shape[1]
    step = matrix.scales.repeat_interleave(group_size or cols, dim=1)

    error = (matrix.dequantize() - weight).abs()

    assert bool((error <= step / 2 + 1e-7).all())
    assert matrix.shape == tuple(weight.shape)


def test_int4_packs_columns_j_and_j_plus_16_into_one_byte() -> None:
    values = torch.arange(32).remainder(16).reshape(1, 32)

    packed = pack_int4(values)

    assert packed.shape == (1, 16)
    assert packed[0, 0].item() == 0 | (0 << 4)  # columns 0 and 16 hold 0 and 0
    assert packed[0, 3].item() == 3 | (3 << 4)
    matrix = QuantizedMatrix(4, 32, packed, torch.ones(1, 1), None)
    assert matrix.integers().tolist() == values.tolist()


def test_sizes_follow_the_bits_and_groups() -> None:
    weight = _weight(64, 256)

    int8 = quantize(weight, 8)
    int4 = quantize(weight, 4, 32)

    assert int8.nbytes == 64 * 256 + 64 * 4  # a byte per weight, a scale per row
    assert int4.nbytes == 64 * 128 + 2 * 64 * 8 * 4  # half a byte, a scale and offset per 32


def test_looked_up_rows_equal_the_dequantized_matrix_rows() -> None:
    matrix = quantize(_weight(), 4, 32)
    ids = torch.tensor([5, 0, 5, 39])

    assert torch.equal(matrix.take_rows(ids, torch.float32), matrix.dequantize()[ids])


@pytest.mark.parametrize(
    ("bits", "group_size", "message"),
    [(3, 32, "4 or 8 bits"), (8, 48, "does not divide"), (4, 16, "multiples of 32")],
)
def test_layouts_the_kernels_cannot_read_are_refused(
    bits: int, group_size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        QuantizedMatrix(
            bits, group_size, torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 1), None
        )


def test_modes_name_their_bits_and_default_groups() -> None:
    assert QuantizationSpec.for_mode("none") is None
    assert QuantizationSpec.for_mode("int8") == QuantizationSpec(8, None)
    assert QuantizationSpec.for_mode("int4") == QuantizationSpec(4, 32)
    assert QuantizationSpec.for_mode("int4", 64) == QuantizationSpec(4, 64)
    with pytest.raises(ValueError, match="quantization must be one of"):
        QuantizationSpec.for_mode("int3")


@pytest.mark.parametrize(("bits", "group_size"), SPECS)
@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 64, 121, 250])
def test_the_panel_product_equals_the_dequantized_product(
    bits: int, group_size: int | None, rows: int
) -> None:
    matrix = quantize(_weight(42, 128), bits, group_size)  # 42 rows: a partial panel
    x = torch.randn(rows, 128)
    bias = torch.randn(42)

    out = panel_matmul(x, to_panels(matrix), bias)

    torch.testing.assert_close(out, x @ matrix.dequantize().T + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("bits", "group_size"), SPECS)
def test_panel_rows_looked_up_equal_the_dequantized_rows(bits: int, group_size: int | None) -> None:
    matrix = quantize(_weight(), bits, group_size)
    ids = torch.tensor([39, 0, 17, 17, 16])

    rows = to_panels(matrix).take_rows(ids, torch.float32)

    torch.testing.assert_close(rows, matrix.dequantize()[ids], rtol=1e-6, atol=1e-7)


def test_panels_hold_the_same_bytes_plus_padding_to_16_rows() -> None:
    matrix = quantize(_weight(40, 128), 4, 32)

    panels = to_panels(matrix)

    assert panels.nbytes == matrix.nbytes * 48 // 40


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_products_keep_the_activations_dtype(dtype: torch.dtype) -> None:
    matrix = quantize(_weight(), 4, 32)
    x = torch.randn(5, 128).to(dtype)

    out = linear(x, prepare_quantized(matrix))

    expected = (x.float() @ matrix.dequantize().T).to(dtype)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-3)


def test_without_the_native_kernels_matrices_stay_in_their_layout_and_multiply(
    torch_path_only: None,
) -> None:
    matrix = quantize(_weight(), 8)
    x = torch.randn(3, 128)

    prepared = prepare_quantized(matrix)

    assert prepared is matrix
    torch.testing.assert_close(linear(x, prepared), x @ matrix.dequantize().T)


def test_mismatched_activations_are_refused() -> None:
    with pytest.raises(ValueError, match=r"x must be \[rows, 128\]"):
        panel_matmul(torch.randn(2, 64), to_panels(quantize(_weight(), 8)))


def test_a_product_of_no_rows_is_empty() -> None:
    out = panel_matmul(torch.empty(0, 128), to_panels(quantize(_weight(), 4, 32)))

    assert out.shape == (0, 40)
