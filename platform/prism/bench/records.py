"""What every benchmark report shares: table cells and JSON records under bench-results/."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

LABEL_WIDTH = 28
VALUE_WIDTH = 11


def cell(value: float | None, spec: str) -> str:
    """A right-aligned table cell; ``-`` for a missing value."""
    return f"{'-' if value is None else format(value, spec):>{VALUE_WIDTH}}"


def default_json_path(benchmark: str, now: datetime | None = None) -> Path:
    """``bench-results/<benchmark>-<timestamp>.json`` under the working directory."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("bench-results") / f"{benchmark}-{stamp}.json"


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write a JSON record to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def publish(
    report: str,
    write_json: Callable[[Path], None],
    json_path: Path | None,
    benchmark: str,
    progress: Callable[[str], None],
    write_plot: Callable[[Path], None] | None = None,
    plot_path: Path | None = None,
) -> None:
    """Print a benchmark's table, then write its JSON record (by default to
    :func:`default_json_path`) and, with ``write_plot``, its PNG (by default beside the
    record); ``progress`` hears of each file written."""
    print(report)
    sys.stdout.flush()
    json_path = json_path or default_json_path(benchmark)
    write_json(json_path)
    progress(f"wrote {json_path}")
    if write_plot is not None:
        plot_path = plot_path or json_path.with_suffix(".png")
        write_plot(plot_path)
        progress(f"wrote {plot_path}")
