"""``prism bench quality``: perplexity and top-1 agreement of each quantization."""

from __future__ import annotations

import argparse

from prism.bench.records import publish
from prism.cli.engine_options import QUANTIZATIONS
from prism.cli.options import AddParser, add_json_option, at_least, status


def add_bench_quality(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "quality",
        parents=parents,
        help="perplexity and top-1 agreement of each weight quantization on a fixed text",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=QUANTIZATIONS,
        default=list(QUANTIZATIONS),
        metavar="MODE",
        help="quantizations to score; none (the reference) always runs (default: all)",
    )
    parser.add_argument(
        "--window",
        type=at_least(2),
        default=1024,
        metavar="N",
        help="tokens per scored window (default: %(default)s)",
    )
    add_json_option(parser, "quality")
    parser.set_defaults(run=_run_bench_quality)


def _run_bench_quality(args: argparse.Namespace) -> int:
    from prism.bench.quality.bench import run_quality_bench
    from prism.bench.quality.report import format_report, write_json

    result = run_quality_bench(
        source=args.model,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        modes=args.modes,
        group_size=args.quantization_group_size,
        window=args.window,
        progress=status,
    )
    publish(
        format_report(result), lambda path: write_json(result, path), args.json, "quality", status
    )
    return 0
