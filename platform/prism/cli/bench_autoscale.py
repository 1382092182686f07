"""``prism bench autoscale``: a step-shaped load, replicas and TTFT over time, as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from prism.bench.autoscale.settings import AutoscaleSettings, LoadStep, parse_steps
from prism.bench.records import publish
from prism.cli.options import AddParser, add_json_option, add_plot_option, at_least, status
from prism.config import DEPLOYMENTS_DIR, load_config

DEFAULT_STEPS = "1x30,10x120,1x60"


def _steps(text: str) -> list[LoadStep]:
    try:
        return parse_steps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_bench_autoscale(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "autoscale",
        parents=parents,
        help="a step-shaped load against an autoscaled deployment; replicas and TTFT over time",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEPLOYMENTS_DIR / "autoscale-cpu.yaml",
        metavar="YAML",
        help="deployment profile whose first model has autoscaling "
        "(default: autoscale-cpu.yaml, shipped in prism/deployments)",
    )
    parser.add_argument(
        "--steps",
        type=_steps,
        default=parse_steps(DEFAULT_STEPS),
        metavar="LIST",
        help=f"CLIENTSxSECONDS steps, in order (default: {DEFAULT_STEPS}); the load then "
        "stops and the bench waits for the replicas to return to the minimum",
    )
    parser.add_argument(
        "--max-tokens", type=at_least(1), default=32, metavar="N", help="per request"
    )
    add_json_option(parser, "autoscale")
    add_plot_option(parser)
    parser.set_defaults(run=_run_bench_autoscale)


def _run_bench_autoscale(args: argparse.Namespace) -> int:
    from prism.bench.autoscale.bench import run_autoscale_bench
    from prism.bench.autoscale.report import (
        format_autoscale_report,
        write_autoscale_json,
        write_autoscale_plot,
    )

    settings = AutoscaleSettings(steps=args.steps, max_tokens=args.max_tokens)
    result = run_autoscale_bench(load_config(args.config), settings, progress=status)
    publish(
        format_autoscale_report(result),
        lambda path: write_autoscale_json(result, path),
        args.json,
        "autoscale",
        status,
        lambda path: write_autoscale_plot(result, path),
        args.plot,
    )
    return 0
