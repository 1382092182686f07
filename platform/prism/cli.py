"""The ``prism`` command line.

Each subcommand is an ``_add_<name>`` function that declares its arguments and a
``_run_<name>`` function that does the work. Results go to stdout; logs and progress go to
stderr. Prism's own errors end the command with one ``prism: error: ...`` line and status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import torch
from tqdm import tqdm
from transformers.utils import logging as transformers_logging

from prism.bench import Workload, default_json_path, format_report, run_engine_bench, write_json
from prism.bench.serve_bench import DEFAULT_TIMEOUT_SECONDS, run_serve_bench
from prism.bench.serve_prompts import PROMPT_SETS
from prism.bench.serve_report import (
    format_serve_report,
    write_serve_json,
)
from prism.bench.serve_results import ServeWorkload
from prism.chat import (
    PROMPT,
    ChatSession,
    converse,
    describe_api_error,
    enable_line_editing,
    first_model_id,
)
from prism.config import DEFAULT_PROFILE, ConfigError, PlatformConfig, load_config
from prism.engine import EngineConfig, LLMEngine, SamplingParams
from prism.errors import PrismError
from prism.launcher import Endpoints, serve_until_stopped
from prism.models import apply_chat_template

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_API_URL = "http://127.0.0.1:8000/v1"
API_KEY_VARIABLES = ("PRISM_API_KEY", "OPENAI_API_KEY")
NO_API_KEY = "none"  # the openai client insists on a key; a server without one ignores it

AddParser = Callable[..., argparse.ArgumentParser]  # a subparsers action's add_parser


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # how argparse names the type in its messages
    return parse


def _device(text: str) -> str:
    if text not in ("auto", "cpu") and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine")
    return text


def _common_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    return options


def _engine_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--model",
        metavar="SRC",
        help="model id, HF model folder or .gguf file (default: the embedded SmolLM2-135M)",
    )
    options.add_argument("--device", type=_device, default="auto", help="auto, cpu or cuda[:N]")
    options.add_argument("--dtype", choices=DTYPES, default="auto", help="weights and KV dtype")
    options.add_argument(
        "--threads",
        type=_at_least(1),
        metavar="N",
        help="torch CPU threads (default: the CPUs this process may use)",
    )
    return options


def _server_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url", default=DEFAULT_API_URL, help="the OpenAI API base URL (default: %(default)s)"
    )
    options.add_argument(
        "--model", metavar="ID", help="model id (default: the first the server lists)"
    )
    options.add_argument(
        "--api-key", metavar="KEY", help="API key (default: $PRISM_API_KEY, else $OPENAI_API_KEY)"
    )
    return options


def _api_key(args: argparse.Namespace) -> str:
    from_environment = (os.environ.get(name) for name in API_KEY_VARIABLES)
    return args.api_key or next(filter(None, from_environment), NO_API_KEY)


@contextlib.contextmanager
def _server_errors(url: str) -> Iterator[None]:
    """Turn the openai client's errors into Prism's one-line errors."""
    try:
        yield
    except openai.APIError as error:
        raise PrismError(describe_api_error(error, url)) from None


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(device=args.device, dtype=args.dtype, num_threads=args.threads)


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_generate(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "generate", parents=parents, help="answer one prompt, streaming the text to stdout"
    )
    parser.add_argument("prompt", metavar="PROMPT")
    parser.add_argument("--max-tokens", type=int, default=256, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, help="seed of the sampling noise")
    parser.add_argument(
        "--raw", action="store_true", help="tokenize PROMPT as is, without the chat template"
    )
    parser.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    engine = LLMEngine.from_source(args.model, _engine_config(args))
    if args.raw:
        prompt = list(engine.tokenizer.encode(args.prompt))
    else:
        prompt = apply_chat_template(engine.tokenizer, [{"role": "user", "content": args.prompt}])
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    engine.add_request("generate", prompt, params)
    while engine.has_unfinished_requests():
        for output in engine.step():
            sys.stdout.write(output.new_text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _add_chat(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "chat",
        parents=parents,
        help="talk with a running server; /reset forgets, /exit or Ctrl-D quits",
    )
    parser.add_argument("--system", metavar="TEXT", help="a system message to start with")
    parser.add_argument(
        "--temperature", type=float, default=0.7, metavar="T", help="(default: %(default)s)"
    )
    parser.add_argument("--max-tokens", type=_at_least(1), default=512, metavar="N")
    parser.set_defaults(run=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    with _server_errors(args.url):
        client = openai.OpenAI(base_url=args.url, api_key=_api_key(args), max_retries=0)
        session = ChatSession(
            client,
            args.model or first_model_id(client),
            system=args.system,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
        )
        if interactive:
            enable_line_editing()
            _status(f"chatting with {session.model} at {args.url}; /reset forgets, /exit quits")
        converse(
            session,
            input,
            sys.stdout,
            lambda message: print(f"prism: error: {message}", file=sys.stderr, flush=True),
            prompt=PROMPT if interactive else "",
        )
    return 0


def _add_bench(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser("bench", help="measure Prism against a baseline")
    benchmarks = parser.add_subparsers(required=True, metavar="BENCHMARK")
    engine = benchmarks.add_parser(
        "engine",
        parents=parents,
        help="the standard workload on Prism's engine and on HF transformers generate",
    )
    engine.add_argument("--num-requests", type=_at_least(1), default=64, metavar="N")
    engine.add_argument(
        "--output-tokens", type=_at_least(2), default=128, metavar="N", help="per request"
    )
    engine.add_argument(
        "--prefill-tokens",
        type=_at_least(1),
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
    engine.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the results (default: bench-results/engine-<timestamp>.json)",
    )
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
        progress=_status,
    )
    print(format_report(result))
    path = args.json or default_json_path("engine")
    write_json(result, path)
    _status(f"wrote {path}")
    return 0


def _add_bench_serve(add_parser: AddParser) -> None:
    parser = add_parser(
        "serve",
        parents=[_common_options(), _server_options()],
        help="concurrent streaming clients against a running OpenAI-compatible server",
    )
    parser.add_argument("--concurrency", type=_at_least(1), default=8, metavar="N")
    parser.add_argument("--requests", type=_at_least(1), default=64, metavar="N")
    parser.add_argument(
        "--max-tokens", type=_at_least(2), default=128, metavar="N", help="per request"
    )
    parser.add_argument("--prompt-set", choices=PROMPT_SETS, default=PROMPT_SETS[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="S",
        help="a request not done within S seconds counts as an error (default: %(default)g)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the results (default: bench-results/serve-<timestamp>.json)",
    )
    parser.set_defaults(run=_run_bench_serve)


def _run_bench_serve(args: argparse.Namespace) -> int:
    workload = ServeWorkload(
        num_requests=args.requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_set=args.prompt_set,
    )
    api_key = _api_key(args)
    with _server_errors(args.url):
        client = openai.OpenAI(base_url=args.url, api_key=api_key, max_retries=0)
        model = args.model or first_model_id(client)
    with tqdm(total=args.requests, unit="req", file=sys.stderr, disable=None) as bar:
        result = run_serve_bench(
            args.url,
            api_key,
            model,
            workload,
            timeout_seconds=args.timeout,
            progress=lambda message: bar.write(message, file=sys.stderr),
            on_request_done=lambda record: bar.update(),
        )
    summary = result.summary
    if not summary.completed:
        raise PrismError(f"every request failed: {next(iter(summary.error_messages))}")
    print(format_serve_report(result))
    path = args.json or default_json_path("serve")
    write_serve_json(result, path)
    _status(f"wrote {path}")
    return 0


def _add_serve(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "serve",
        parents=parents,
        help="run the platform: Ray, Redis and the OpenAI-compatible API, until Ctrl-C",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PROFILE,
        metavar="YAML",
        help="deployment profile (default: deployments/local-cpu.yaml)",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting an embedded one")
    parser.add_argument("--host", help="HTTP bind address (overrides the profile)")
    parser.add_argument("--port", type=int, help="HTTP port (overrides the profile)")
    parser.add_argument(
        "--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else start one)"
    )
    parser.set_defaults(run=_run_serve)


def _serve_config(args: argparse.Namespace) -> PlatformConfig:
    config = load_config(args.config)
    http = {
        name: value
        for name, value in (("host", args.host), ("port", args.port))
        if value is not None
    }
    redis = {"url": args.redis_url} if args.redis_url else {}
    return config.model_copy(
        update={
            "http": config.http.model_copy(update=http),
            "redis": config.redis.model_copy(update=redis),
        }
    )


def _announce(endpoints: Endpoints) -> None:
    print(f"OpenAI API:    {endpoints.openai_base_url}", flush=True)
    print(f"Ray dashboard: {endpoints.dashboard_url or '(not running)'}", flush=True)
    print(f"Metrics:       {endpoints.metrics_url}", flush=True)
    print(f"Redis:         {endpoints.redis_url}", flush=True)
    print("Prism is serving. Press Ctrl-C to stop.", flush=True)


def _run_serve(args: argparse.Namespace) -> int:
    serve_until_stopped(_serve_config(args), _announce, args.ray_address)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``prism`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="prism", description="Prism: an LLM serving platform")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    parents = [_common_options(), _engine_options()]
    _add_generate(commands.add_parser, parents)
    _add_chat(commands.add_parser, [_common_options(), _server_options()])
    _add_serve(commands.add_parser, [_common_options()])
    _add_bench(commands.add_parser, parents)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the ``prism`` command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.run(args)
    except (PrismError, ConfigError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (`prism generate ... | head`): point stdout at /dev/null so the
        # interpreter's final flush does not fail again, and stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
