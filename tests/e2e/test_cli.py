"""The ``prism`` command line, run as a subprocess on the embedded default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.prism_process import run_prism

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ranks", ["1", "3"])
def test_generate_streams_the_answer_to_a_factual_question(ranks: str) -> None:
    result = run_prism(
        "generate",
        "What is the capital of France?",
        "--max-tokens",
        "24",
        "--tensor-parallel-size",
        ranks,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "The capital of France is Paris.\n"


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [("--max-tokens", "0", "max_tokens"), ("--temperature", "-1", "temperature")],
)
def test_generate_rejects_bad_sampling_settings_with_one_error_line(
    option: str, value: str, field: str
) -> None:
    result = run_prism("generate", "Hello", option, value)

    assert result.returncode == 2
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("prism: error:")]
    assert len(errors) == 1
    assert field in errors[0]
    assert "Traceback" not in result.stderr


def test_bench_engine_writes_positive_numbers_for_both_engines(tmp_path: Path) -> None:
    output = tmp_path / "engine.json"

    result = run_prism(
        "bench",
        "engine",
        "--num-requests",
        "2",
        "--output-tokens",
        "4",
        "--prefill-tokens",
        "300",
        "--repeats",
        "2",
        "--json",
        str(output),
    )

    assert result.returncode == 0, result.stderr
    assert "output tok/s" in result.stdout
    assert "the median of 2 runs" in result.stdout
    record = json.loads(output.read_text())
    assert record["workload"]["num_requests"] == 2
    assert record["workload"]["prefill_tokens"] == 300
    assert record["machine"]["cpu_model"]
    assert record["threads"]["prism"] == record["threads"]["hf"] >= 1
    for engine in ("prism", "hf"):
        run = record[engine]
        assert [phase["output_tokens"] for phase in run["batch"]] == [2 * 4, 2 * 4]
        assert [phase["output_tokens"] for phase in run["single"]] == [4, 4]
        assert [phase["output_tokens"] for phase in run["prefill"]] == [1, 1]
        # The prefix cache is emptied before every run: the repeat gets no hits.
        assert run["single"][1]["cached_tokens"] == 0
        assert run["load_seconds"] > 0
        assert run["memory_added_bytes"] > 0
        for spread in run["summary"].values():
            assert 0 < spread["minimum"] <= spread["median"] <= spread["maximum"]
    for ratio in record["ratio_prism_over_hf"].values():
        assert ratio > 0


def test_generate_refuses_a_tensor_parallel_size_the_heads_do_not_divide() -> None:
    result = run_prism("generate", "Hello", "--tensor-parallel-size", "2")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "prism: error: tensor_parallel_size 2 does not divide the model's "
        "9 attention heads, 3 key/value heads; sizes that do: 1, 3"
    )


def test_serve_refuses_a_tensor_parallel_size_the_heads_do_not_divide(tmp_path: Path) -> None:
    profile = tmp_path / "tp2.yaml"
    profile.write_text("models: [{id: smollm2, engine: {tensor_parallel_size: 2}}]\n")

    result = run_prism("serve", "--config", str(profile))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "prism: error: model 'smollm2': tensor_parallel_size 2 does not divide the model's "
        "9 attention heads, 3 key/value heads; sizes that do: 1, 3"
    ) in result.stderr


def test_convert_prints_the_folder_replicas_load_and_refuses_unknown_sources(
    tmp_path: Path,
) -> None:
    converted = run_prism("convert")
    missing = run_prism("convert", "--model", str(tmp_path / "no-such-model"))

    assert converted.returncode == 0, converted.stderr
    folder = Path(converted.stdout.strip())
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("prism: error: unknown model")
