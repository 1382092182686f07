"""``prism bench``: one subcommand per benchmark, each in its own ``bench_<name>`` module.

``engine``, ``quality``, ``serve``, ``routing``, ``autoscale`` and ``chaos`` declare their
options here at once; each loads its benchmark only when it runs.
"""

from __future__ import annotations

import argparse

from prism.cli.bench_autoscale import add_bench_autoscale
from prism.cli.bench_chaos import add_bench_chaos
from prism.cli.bench_engine import add_bench_engine
from prism.cli.bench_quality import add_bench_quality
from prism.cli.bench_routing import add_bench_routing
from prism.cli.bench_serve import add_bench_serve
from prism.cli.options import AddParser, common_options, server_options


def add_bench(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    """The ``bench`` command; ``parents`` hold the options of commands that run an engine."""
    parser = add_parser("bench", help="measure Prism against a baseline")
    benchmarks = parser.add_subparsers(required=True, metavar="BENCHMARK")
    add_bench_engine(benchmarks.add_parser, parents)
    add_bench_quality(benchmarks.add_parser, parents)
    add_bench_serve(benchmarks.add_parser, [common_options(), server_options()])
    add_bench_routing(benchmarks.add_parser, [common_options()])
    add_bench_autoscale(benchmarks.add_parser, [common_options()])
    add_bench_chaos(benchmarks.add_parser, [common_options()])
