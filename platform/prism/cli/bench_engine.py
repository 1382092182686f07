"""``prism bench engine``: the standard workload on Prism's engine and on HF ``generate``."""

from __future__ import annotations

import argparse

from prism.bench.records import publish
from prism.cli.engine_options import DTYPES
from prism.cli.options import AddParser, add_json_option, at_least, status


def add_bench_engine(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "engine",
        parents=parents,
        help="the standard workload on Prism's engine and on HF transformers generate",
    )
    parser.add_argument("--num-requests", type=at_least(1), default=64, metavar="N")
    parser.add_argument(
        "--output-tokens", type=at_least(2), default=128, metavar="N", help="per request"
    )
    parser.add_argument(
        "--prefill-tokens",
        type=at_least(1),
        default=2000,
        metavar="N",
        help="length of the long prompt whose prefill is timed (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=at_least(1),
        default=3,
        metavar="N",
        help="runs of each phase on each engine; figures are their medians (default: %(default)s)",
    )
    parser.add_argument("--skip-hf", action="store_true", help="measure Prism only")
    parser.add_argument(
        "--weight-dtype",
        choices=DTYPES[1:],
        help="mixed-precision extra: store Prism's matrices in this dtype while the rest, "
        "and HF, stay in --dtype (not a like-for-like comparison)",
    )
    parser.add_argument(
        "--structured",
        choices=["json"],
        help="instead of the HF comparison, time Prism's batch free and constrained by a "
        "JSON schema, in the same run, with grammar compile times (try --num-requests 16)",
    )
    add_json_option(parser, "engine")
    parser.set_defaults(run=_run_bench_engine)


def _run_bench_structured(args: argparse.Namespace) -> int:
    from prism.bench.engine.workload import Workload
    from prism.bench.structured.bench import run_structured_bench
    from prism.bench.structured.report import format_report, write_json

    result = run_structured_bench(
        Workload(args.num_requests, args.output_tokens, args.prefill_tokens),
        source=args.model,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        repeats=args.repeats,
        progress=status,
    )
    publish(
        format_report(result),
        lambda path: write_json(result, path),
        args.json,
        "engine-structured",
        status,
    )
    return 0


def _run_bench_engine(args: argparse.Namespace) -> int:
    if args.structured:
        return _run_bench_structured(args)
    from prism.bench.engine.bench import run_engine_bench
    from prism.bench.engine.report import format_report, write_json
    from prism.bench.engine.workload import Workload

    result = run_engine_bench(
        Workload(args.num_requests, args.output_tokens, args.prefill_tokens),
        source=args.model,
        device=args.device,
        dtype=args.dtype,
        weight_dtype=args.weight_dtype,
        threads=args.threads,
        quantization=args.quantization or "none",
        quantization_group_size=args.quantization_group_size,
        tensor_parallel_size=args.tensor_parallel_size,
        repeats=args.repeats,
        with_hf=not args.skip_hf,
        progress=status,
    )
    publish(
        format_report(result), lambda path: write_json(result, path), args.json, "engine", status
    )
    return 0
