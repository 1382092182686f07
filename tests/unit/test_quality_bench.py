"""The quality benchmark's text, windows, perplexity and report."""

from __future__ import annotations

import math

import torch

from prism.bench.machine import Machine
from prism.bench.quality.bench import TEXT_PATH, ModeQuality, QualityResult, perplexity, windows
from prism.bench.quality.report import format_report


def test_the_shipped_text_is_long_enough_to_measure() -> None:
    text = TEXT_PATH.read_text(encoding="utf-8")

    assert text.startswith("CHAPTER I.")
    assert len(text.split()) > 5000  # words; SmolLM2's tokenizer makes 8,079 tokens of it


def test_windows_cover_the_text_and_drop_a_lone_last_token() -> None:
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert windows(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_perplexity_is_the_exponent_of_the_mean_negative_log_likelihood() -> None:
    logprobs = torch.tensor([math.log(0.5), math.log(0.25)])

    expected = math.exp(-(math.log(0.5) + math.log(0.25)) / 2)

    assert math.isclose(perplexity(logprobs), expected, rel_tol=1e-6)


def test_the_report_compares_each_mode_with_full_precision() -> None:
    machine = Machine("a CPU", 2, 2, 2, "cpu", "a CPU", "2.13.0", "5.0", "3.11")
    result = QualityResult(
        date="2026-12-02T08:00:00+00:00",
        machine=machine,
        model_id="tiny",
        dtype="float32",
        text="a text",
        text_tokens=100,
        window=50,
        scored_tokens=98,
        modes=[
            ModeQuality("none", None, 400 << 20, 20.0, None),
            ModeQuality("int8", None, 100 << 20, 20.2, 0.96),
            ModeQuality("int4", 32, 75 << 20, 23.0, 0.8),
        ],
    )

    lines = format_report(result).splitlines()

    assert lines[-3].split() == ["none", "-", "400.0", "100.0%", "20.000", "+0.0%", "-"]
    assert lines[-2].split() == ["int8", "row", "100.0", "25.0%", "20.200", "+1.0%", "96.0%"]
    assert lines[-1].split() == ["int4", "32", "75.0", "18.8%", "23.000", "+15.0%", "80.0%"]
