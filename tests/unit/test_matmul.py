"""Matrix products: bf16 weights are widened to fp32 only where that changes just the speed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prism.engine import matmul


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul, "cpu_has_native_bf16", lambda: False)


def _inputs(rows: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 64, generator=generator).to(dtype)
    weight = torch.randn(96, 64, generator=generator).bfloat16()
    bias = torch.randn(96, generator=generator).bfloat16()
    return x, weight, bias


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_widened_product_matches_the_bf16_kernel(
    no_native_bf16: None, dtype: torch.dtype
) -> None:
    x, weight, bias = _inputs(matmul.WIDEN_MIN_ROWS * 4, dtype)

    out = matmul.linear(x, weight, bias)

    expected = F.linear(x.bfloat16().float(), weight.float(), bias.float())
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)


def test_a_product_of_few_rows_keeps_the_bf16_kernel(no_native_bf16: None) -> None:
    x, weight, bias = _inputs(matmul.WIDEN_MIN_ROWS - 1, torch.float32)

    out = matmul.linear(x, weight, bias)

    assert torch.equal(out, F.linear(x.bfloat16(), weight, bias).float())


def test_a_cpu_with_bf16_instructions_never_widens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul, "cpu_has_native_bf16", lambda: True)
    x, weight, bias = _inputs(matmul.WIDEN_MIN_ROWS * 4, torch.bfloat16)

    assert torch.equal(matmul.linear(x, weight, bias), F.linear(x, weight, bias))


def test_fp32_products_agree_with_linear_to_rounding() -> None:
    x = torch.randn(16, 64)
    weight = torch.randn(32, 64)
    bias = torch.randn(32)

    out = matmul.linear(x, weight, bias)

    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_a_packed_fp32_weight_gives_the_plain_product() -> None:
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(96, 64, generator=generator)
    bias = torch.randn(96, generator=generator)
    packed = matmul.pack_weight(weight)

    assert packed.is_mkldnn
    assert packed.shape == weight.shape
    for rows in (1, 5, matmul.PACK_ROWS_HINT, 300):
        x = torch.randn(rows, 64, generator=generator)
        torch.testing.assert_close(matmul.linear(x, packed, bias), F.linear(x, weight, bias))


def test_weights_the_gemm_library_does_not_pack_stay_as_they_are() -> None:
    weight = torch.randn(96, 64).bfloat16()

    assert matmul.pack_weight(weight) is weight
