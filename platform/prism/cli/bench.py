"""``prism bench engine``, ``prism bench serve`` and ``prism bench routing`` (and ``autoscale``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import openai
from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from prism.bench import Workload, default_json_path, format_report, run_engine_bench, write_json
from prism.bench.routing_bench import run_routing_bench
from prism.bench.routing_load import LoadShape
from prism.bench.routing_plot import write_routing_plot
from prism.bench.routing_report import format_routing_report, write_routing_json
from prism.bench.routing_results import RoutingDeployment
from prism.bench.routing_workloads import WORKLOADS, RoutingWorkload
from prism.bench.serve_bench import (
    DEFAULT_TIMEOUT_SECONDS,
    PROTOCOLS,
    ServeTarget,
    run_serve_bench,
)
from prism.bench.serve_prompts import PROMPT_SETS
from prism.bench.serve_report import format_serve_report, write_serve_json
from prism.bench.serve_results import ServeWorkload
from prism.conversation import first_listed_model, first_model_id
from prism.cli.bench_autoscale import add_bench_autoscale
from prism.cli.options import (
    DTYPES,
    AddParser,
    add_grpc_target,
    add_json_option,
    add_plot_option,
    api_key,
    at_least,
    common_options,
    server_errors,
    server_options,
    status,
)
from prism.client import PrismClient, rpc_errors
from prism.config import DEFAULT_PROFILE, ROUTING_POLICIES, ByteSize, load_config
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
    add_json_option(engine, "engine")
    engine.set_defaults(run=_run_bench_engine)
    _add_bench_serve(benchmarks.add_parser)
    _add_bench_routing(benchmarks.add_parser)
    add_bench_autoscale(benchmarks.add_parser)


def _run_bench_engine(args: argparse.Namespace) -> int:
    result = run_engine_bench(
        Workload(args.num_requests, args.output_tokens, prefill_tokens=args.prefill_tokens),
        source=args.model,
        device=args.device,
        dtype=args.dtype,
        weight_dtype=args.weight_dtype,
        threads=args.threads,
        tensor_parallel_size=args.tensor_parallel_size,
        with_hf=not args.skip_hf,
        progress=status,
    )
    _publish(format_report(result), lambda path: write_json(result, path), args.json, "engine")
    return 0


def _add_bench_serve(add_parser: AddParser) -> None:
    parser = add_parser(
        "serve",
        parents=[common_options(), server_options()],
        help="concurrent streaming clients against a running server, over HTTP or gRPC",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=PROTOCOLS[0],
        help="the OpenAI API at --url, or the gRPC API at --grpc-target (default: %(default)s)",
    )
    add_grpc_target(parser)
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
    add_json_option(parser, "serve")
    parser.set_defaults(run=_run_bench_serve)


def _run_bench_serve(args: argparse.Namespace) -> int:
    workload = ServeWorkload(
        num_requests=args.requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_set=args.prompt_set,
    )
    address = args.grpc_target if args.protocol == "grpc" else args.url
    target = ServeTarget(args.protocol, address, api_key(args))
    model = args.model or _first_model(target)
    with tqdm(total=args.requests, unit="req", file=sys.stderr, disable=None) as bar:
        result = run_serve_bench(
            target,
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


def _first_model(target: ServeTarget) -> str:
    """The first model the server at ``target`` lists."""
    if target.protocol == "grpc":
        with rpc_errors(), PrismClient(target.address, api_key=target.api_key) as client:
            return first_listed_model(client)
    with server_errors(target.address):
        client = openai.OpenAI(base_url=target.address, api_key=target.api_key, max_retries=0)
        return first_model_id(client)


def _policy_list(text: str) -> list[str]:
    """An argparse type: comma-separated routing policies, each once."""
    policies = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in policies if name not in ROUTING_POLICIES]
    if unknown or not policies:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(ROUTING_POLICIES)}, got {text!r}"
        )
    if len(set(policies)) < len(policies):
        raise argparse.ArgumentTypeError(f"a policy is listed twice in {text!r}")
    return policies


def _byte_size(text: str) -> int:
    """An argparse type: a size such as 128MiB or 1GiB."""
    try:
        return TypeAdapter(ByteSize).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 128MiB or 1GiB)") from None


def _positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def _add_bench_routing(add_parser: AddParser) -> None:
    parser = add_parser(
        "routing",
        parents=[common_options()],
        help="one workload on one fresh deployment per routing policy, compared",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PROFILE,
        metavar="YAML",
        help="deployment profile; its first model is benchmarked (default: local-cpu.yaml)",
    )
    parser.add_argument(
        "--policies",
        type=_policy_list,
        default=["prefix", "pow2"],
        metavar="LIST",
        help=f"comma-separated, from {', '.join(ROUTING_POLICIES)} (default: prefix,pow2)",
    )
    workload = parser.add_argument_group("workload")
    workload.add_argument(
        "--workload", choices=WORKLOADS, default=WORKLOADS[0], help="(default: %(default)s)"
    )
    workload.add_argument(
        "--requests", type=at_least(1), default=96, metavar="N", help="(default: %(default)s)"
    )
    workload.add_argument(
        "--groups",
        type=at_least(1),
        default=12,
        metavar="N",
        help="prefix groups or conversations (default: %(default)s)",
    )
    workload.add_argument(
        "--prefix-tokens",
        type=at_least(1),
        default=512,
        metavar="N",
        help="shared system prompt, or first-turn context (default: %(default)s)",
    )
    workload.add_argument(
        "--question-tokens",
        type=at_least(1),
        default=32,
        metavar="N",
        help="each request's own tokens, or a new user turn (default: %(default)s)",
    )
    workload.add_argument(
        "--output-tokens",
        type=at_least(1),
        default=16,
        metavar="N",
        help="per request (default: %(default)s)",
    )
    workload.add_argument(
        "--seed", type=int, default=0, help="of prompts and arrivals (default: %(default)s)"
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency", type=at_least(1), default=6, metavar="N", help="(default: %(default)s)"
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        metavar="R",
        help="Poisson arrivals at R requests/s instead of a fixed concurrency",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="S",
        help="a request not done within S seconds counts as an error (default: %(default)g)",
    )
    deployment = parser.add_argument_group("deployment")
    deployment.add_argument(
        "--replicas", type=at_least(1), default=3, metavar="N", help="(default: %(default)s)"
    )
    deployment.add_argument(
        "--kv-cache",
        type=_byte_size,
        default="128MiB",
        metavar="SIZE",
        help="KV cache per replica (default: %(default)s, 182 blocks of SmolLM2 fp32 KV: room "
        "for the prefixes one replica serves under prefix routing, 4 of the 12 default groups "
        "and the requests in flight, but not for all 12)",
    )
    deployment.add_argument(
        "--num-cpus",
        type=_positive_float,
        metavar="N",
        help="CPUs Ray reserves per replica (default: 2 / replicas)",
    )
    deployment.add_argument(
        "--ingress-replicas",
        type=at_least(1),
        default=1,
        metavar="N",
        help="each routes on its own (default: %(default)s)",
    )
    add_json_option(parser, "routing")
    add_plot_option(parser)
    parser.set_defaults(run=_run_bench_routing)


def _run_bench_routing(args: argparse.Namespace) -> int:
    workload = RoutingWorkload(
        name=args.workload,
        requests=args.requests,
        groups=args.groups,
        prefix_tokens=args.prefix_tokens,
        question_tokens=args.question_tokens,
        output_tokens=args.output_tokens,
        seed=args.seed,
    )
    deployment = RoutingDeployment(
        replicas=args.replicas,
        kv_cache_bytes=args.kv_cache,
        num_cpus=args.num_cpus or 2 / args.replicas,
        ingress_replicas=args.ingress_replicas,
    )
    load = LoadShape(args.concurrency, args.rate, args.timeout, args.seed)
    total = args.requests * len(args.policies)
    with tqdm(total=total, unit="req", file=sys.stderr, disable=None) as bar:
        result = run_routing_bench(
            load_config(args.config),
            deployment,
            args.policies,
            workload,
            load,
            progress=lambda message: bar.write(message, file=sys.stderr),
            on_request_done=lambda record: bar.update(),
        )
    path = args.json or default_json_path("routing")
    _publish(
        format_routing_report(result),
        lambda json_path: write_routing_json(result, json_path),
        path,
        "routing",
    )
    plot = args.plot or path.with_suffix(".png")
    write_routing_plot(result, plot)
    status(f"wrote {plot}")
    return 0


def _publish(report: str, write: Callable[[Path], None], path: Path | None, benchmark: str) -> None:
    """Print the table, write the JSON record (to the default path if none was given)."""
    print(report)
    path = path or default_json_path(benchmark)
    write(path)
    status(f"wrote {path}")
