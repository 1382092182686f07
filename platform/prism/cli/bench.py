"""``prism bench engine`` and ``prism bench serve``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import openai
from tqdm import tqdm

from prism.bench import Workload, default_json_path, format_report, run_engine_bench, write_json
from prism.bench.serve_bench import DEFAULT_TIMEOUT_SECONDS, run_serve_bench
from prism.bench.serve_prompts import PROMPT_SETS
from prism.bench.serve_report import format_serve_report, write_serve_json
from prism.bench.serve_results import ServeWorkload
from prism.chat import first_model_id
from prism.cli.options import (
    DTYPES,
    AddParser,
    api_key,
    at_least,
    common_options,
    server_errors,
    server_options,
    status,
)
from prism.errors import PrismError


def add_bench(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser("bench", help="measure Prism against a baseline")
    benchmarks = parser.add_subparsers(required=True, metavar="BENCHMARK")
    engine = benchmarks.add_parser(
        "engine",
        parents=parents,
        help="the standard workload on Prism's engine and on HF transformers generate",
    )
    engine.add_argument("--num-requests", type=at_least(1), default=64, metavar="N")
    engine.add_argument(
        "--output-tokens", type=at_least(2), default=128, metavar="N", help="per request"
    )
    engine.add_argument(
        "--prefill-tokens",
        type=at_least(1),
        default=2000,
        metavar="N",
        help="length of the long prompt whose prefill is timed (default: %(default)s)",
    )
    engine.add_argument("--skip-hf", action="store_true", help="measure Prism only")
    engine.add_argument(
        "--weight-dtype",
        choices=DTYPES[1:],
        help="store Prism's matrices in this dtype (HF stays in --dtype)",
    )
    _add_json_option(engine, "engine")
    engine.set_defaults(run=_run_bench_engine)
    _add_bench_serve(benchmarks.add_parser)


def _run_bench_engine(args: argparse.Namespace) -> int:
    result = run_engine_bench(
        Workload(args.num_requests, args.output_tokens, prefill_tokens=args.prefill_tokens),
        source=args.model,
        device=args.device,
        dtype=args.dtype,
        weight_dtype=args.weight_dtype,
        threads=args.threads,
        with_hf=not args.skip_hf,
        progress=status,
    )
    _publish(format_report(result), lambda path: write_json(result, path), args.json, "engine")
    return 0


def _add_bench_serve(add_parser: AddParser) -> None:
    parser = add_parser(
        "serve",
        parents=[common_options(), server_options()],
        help="concurrent streaming clients against a running OpenAI-compatible server",
    )
    parser.add_argument("--concurrency", type=at_least(1), default=8, metavar="N")
    parser.add_argument("--requests", type=at_least(1), default=64, metavar="N")
    parser.add_argument(
        "--max-tokens", type=at_least(2), default=128, metavar="N", help="per request"
    )
    parser.add_argument("--prompt-set", choices=PROMPT_SETS, default=PROMPT_SETS[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="S",
        help="a request not done within S seconds counts as an error (default: %(default)g)",
    )
    _add_json_option(parser, "serve")
    parser.set_defaults(run=_run_bench_serve)


def _run_bench_serve(args: argparse.Namespace) -> int:
    workload = ServeWorkload(
        num_requests=args.requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_set=args.prompt_set,
    )
    key = api_key(args)
    with server_errors(args.url):
        client = openai.OpenAI(base_url=args.url, api_key=key, max_retries=0)
        model = args.model or first_model_id(client)
    with tqdm(total=args.requests, unit="req", file=sys.stderr, disable=None) as bar:
        result = run_serve_bench(
            args.url,
            key,
            model,
            workload,
            timeout_seconds=args.timeout,
            progress=lambda message: bar.write(message, file=sys.stderr),
            on_request_done=lambda record: bar.update(),
        )
    summary = result.summary
    if not summary.completed:
        raise PrismError(f"every request failed: {next(iter(summary.error_messages))}")
    _publish(
        format_serve_report(result), lambda path: write_serve_json(result, path), args.json, "serve"
    )
    return 0


def _add_json_option(parser: argparse.ArgumentParser, benchmark: str) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"where to write the results (default: bench-results/{benchmark}-<timestamp>.json)",
    )


def _publish(report: str, write: Callable[[Path], None], path: Path | None, benchmark: str) -> None:
    """Print the table, write the JSON record (to the default path if none was given)."""
    print(report)
    path = path or default_json_path(benchmark)
    write(path)
    status(f"wrote {path}")
