"""Present a quality benchmark result: a text table and a JSON record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prism.bench.quality.bench import QualityResult
from prism.bench.records import write_record

_MIB = 1 << 20


def format_report(result: QualityResult) -> str:
    """One line per quantization: weights, perplexity (and its change), top-1 agreement."""
    reference = result.modes[0]
    lines = [
        f"Quality: {result.model_id}, activations {result.dtype}, {result.machine.device} "
        f"({result.machine.device_name}), torch {result.machine.torch_version}",
        f"text: {result.text}, {result.text_tokens} tokens in windows of {result.window}; "
        f"{result.scored_tokens} tokens scored",
        "",
        f"{'quantization':<14}{'group':>8}{'weights MiB':>13}{'of none':>9}"
        f"{'perplexity':>12}{'vs none':>9}{'top-1 agree':>13}",
    ]
    for mode in result.modes:
        group = "-" if mode.group_size is None else str(mode.group_size)
        if mode.mode == "int8" and mode.group_size is None:
            group = "row"
        if mode.mode == "gguf":
            group = "blocks"
        change = mode.perplexity / reference.perplexity - 1.0
        agreement = "-" if mode.agreement is None else f"{mode.agreement:.1%}"
        lines.append(
            f"{mode.mode:<14}{group:>8}{mode.weight_bytes / _MIB:>13.1f}"
            f"{mode.weight_bytes / reference.weight_bytes:>9.1%}"
            f"{mode.perplexity:>12.3f}{change:>+9.1%}{agreement:>13}"
        )
    return "\n".join(lines)


def to_json(result: QualityResult) -> dict[str, Any]:
    return {"benchmark": "quality", **dataclasses.asdict(result)}


def write_json(result: QualityResult, path: Path) -> None:
    """Write :func:`to_json` of ``result`` to ``path``, creating its folder."""
    write_record(to_json(result), path)
