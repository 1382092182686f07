"""``prism bench chaos``: streaming load while replicas die, Redis restarts and steps fail."""

from __future__ import annotations

import argparse
from pathlib import Path

from prism.bench.chaos.settings import ChaosSettings
from prism.bench.records import publish
from prism.cli.options import AddParser, add_json_option, add_plot_option, at_least, status
from prism.config import DEFAULT_PROFILE, load_config

DEFAULTS = ChaosSettings()


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (0 turns a fault off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def _share(text: str) -> float:
    """An argparse type: a share from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value:g}")
    return value


def add_bench_chaos(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "chaos",
        parents=parents,
        help="streaming load while replicas are killed, Redis restarts and engine steps fail",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PROFILE,
        metavar="YAML",
        help="deployment profile; its first model is loaded (default: local-cpu.yaml)",
    )
    parser.add_argument(
        "--duration",
        type=at_least(1),
        default=int(DEFAULTS.duration_s),
        metavar="S",
        help="seconds of load (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=at_least(1),
        default=DEFAULTS.concurrency,
        metavar="N",
        help="closed-loop streaming clients (default: %(default)s)",
    )
    parser.add_argument(
        "--max-tokens",
        type=at_least(DEFAULTS.cancel_after_chunks + 1),
        default=DEFAULTS.max_tokens,
        metavar="N",
        help="per request (default: %(default)s)",
    )
    parser.add_argument(
        "--cancel-share",
        type=_share,
        default=DEFAULTS.cancel_share,
        metavar="X",
        help=f"share of requests the client closes after {DEFAULTS.cancel_after_chunks} "
        "chunks (default: %(default)g)",
    )
    faults = parser.add_argument_group("faults (every S seconds; 0: never)")
    faults.add_argument(
        "--kill-every",
        type=_seconds,
        default=DEFAULTS.kill_every_s,
        metavar="S",
        help="kill a live replica actor; Serve starts another (default: %(default)g)",
    )
    faults.add_argument(
        "--redis-restart-every",
        type=_seconds,
        default=DEFAULTS.redis_restart_every_s,
        metavar="S",
        help="restart the embedded Redis index, emptying it (default: %(default)g)",
    )
    faults.add_argument(
        "--fault-every",
        type=_seconds,
        default=DEFAULTS.fault_every_s,
        metavar="S",
        help="make one replica's next engine step raise (default: %(default)g)",
    )
    parser.add_argument(
        "--timeout",
        type=at_least(1),
        default=int(DEFAULTS.request_timeout_s),
        metavar="S",
        help="an accepted request not over within S seconds is lost (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        help="of the cancels and the replicas killed (default: %(default)s)",
    )
    add_json_option(parser, "chaos")
    add_plot_option(parser)
    parser.set_defaults(run=_run_bench_chaos)


def _run_bench_chaos(args: argparse.Namespace) -> int:
    from prism.bench.chaos.bench import run_chaos_bench
    from prism.bench.chaos.plot import write_chaos_plot
    from prism.bench.chaos.report import format_chaos_report, write_chaos_json
    from prism.bench.chaos.results import summarize

    settings = ChaosSettings(
        duration_s=args.duration,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        cancel_share=args.cancel_share,
        kill_every_s=args.kill_every,
        redis_restart_every_s=args.redis_restart_every,
        fault_every_s=args.fault_every,
        request_timeout_s=args.timeout,
        seed=args.seed,
    )
    result = run_chaos_bench(load_config(args.config), settings, progress=status)
    publish(
        format_chaos_report(result),
        lambda path: write_chaos_json(result, path),
        args.json,
        "chaos",
        status,
        lambda path: write_chaos_plot(result, path),
        args.plot,
    )
    return 1 if summarize(result).problems else 0
