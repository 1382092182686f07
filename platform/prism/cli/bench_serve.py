"""``prism bench serve``: concurrent streaming clients against a running server."""

from __future__ import annotations

import argparse

from prism.bench.records import publish
from prism.bench.serve.prompts import PROMPT_SETS
from prism.bench.serve.workload import (
    DEFAULT_TIMEOUT_SECONDS,
    PROTOCOLS,
    ServeTarget,
    ServeWorkload,
)
from prism.cli.options import (
    AddParser,
    add_grpc_target,
    add_json_option,
    api_key,
    at_least,
    server_errors,
    status,
)
from prism.errors import PrismError


def add_bench_serve(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "serve",
        parents=parents,
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
        "--lone-requests",
        type=at_least(0),
        default=5,
        metavar="K",
        help="first, K long prompts one at a time: the first request's TTFT against the "
        "others', and what serving adds to the engine's TTFT (HTTP only; 0: none; "
        "default: %(default)s)",
    )
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
    from prism.bench.progress import RequestProgress
    from prism.bench.serve.bench import run_serve_bench
    from prism.bench.serve.report import format_serve_report, write_serve_json

    workload = ServeWorkload(
        num_requests=args.requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_set=args.prompt_set,
        lone_requests=args.lone_requests,
    )
    address = args.grpc_target if args.protocol == "grpc" else args.url
    target = ServeTarget(args.protocol, address, api_key(args))
    model = args.model or _first_model(target)
    with RequestProgress(args.requests) as bar:
        result = run_serve_bench(
            target,
            model,
            workload,
            timeout_seconds=args.timeout,
            progress=bar.message,
            on_request_done=bar.request_done,
        )
    summary = result.summary
    if not summary.completed:
        raise PrismError(f"every request failed: {next(iter(summary.error_messages))}")
    publish(
        format_serve_report(result),
        lambda path: write_serve_json(result, path),
        args.json,
        "serve",
        status,
    )
    return 0


def _first_model(target: ServeTarget) -> str:
    """The first model the server at ``target`` lists."""
    from prism.conversation import first_model

    if target.protocol == "grpc":
        from prism.client import PrismClient, rpc_errors

        with rpc_errors(), PrismClient(target.address, api_key=target.api_key) as client:
            return first_model(client)
    import openai

    with server_errors(target.address):
        client = openai.OpenAI(base_url=target.address, api_key=target.api_key, max_retries=0)
        return first_model(client)
