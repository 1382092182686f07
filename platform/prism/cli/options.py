"""Options, argument types and helpers shared by the ``prism`` subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import torch

from prism.conversation import describe_api_error
from prism.client import DEFAULT_TARGET
from prism.engine import EngineConfig
from prism.errors import PrismError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_API_URL = "http://127.0.0.1:8000/v1"
API_KEY_VARIABLES = ("PRISM_API_KEY", "OPENAI_API_KEY")
NO_API_KEY = "none"  # the openai client insists on a key; a server without one ignores it

AddParser = Callable[..., argparse.ArgumentParser]  # a subparsers action's add_parser


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # how argparse names the type in its messages
    return parse


def device_type(text: str) -> str:
    if text not in ("auto", "cpu") and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine")
    return text


def common_options() -> argparse.ArgumentParser:
    """Options every command takes."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    return options


def engine_options() -> argparse.ArgumentParser:
    """Options of commands that run an engine in this process."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--model",
        metavar="SRC",
        help="model id, HF model folder or .gguf file (default: the embedded SmolLM2-135M)",
    )
    options.add_argument("--device", type=device_type, default="auto", help="auto, cpu or cuda[:N]")
    options.add_argument("--dtype", choices=DTYPES, default="auto", help="weights and KV dtype")
    options.add_argument(
        "--threads",
        type=at_least(1),
        metavar="N",
        help="torch CPU threads (default: the CPUs this process may use)",
    )
    options.add_argument(
        "--tensor-parallel-size",
        type=at_least(1),
        default=1,
        metavar="N",
        help="split the model over N ranks, run as local processes (default: %(default)s)",
    )
    return options


def server_options() -> argparse.ArgumentParser:
    """Options of commands that talk to a running server."""
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


def add_grpc_target(parser: argparse.ArgumentParser) -> None:
    """The ``--grpc-target`` option of commands that can talk to the gRPC API."""
    parser.add_argument(
        "--grpc-target",
        default=DEFAULT_TARGET,
        metavar="HOST:PORT",
        help="the gRPC API's address (default: %(default)s)",
    )


def api_key(args: argparse.Namespace) -> str:
    """The API key from --api-key, else the environment, else a placeholder."""
    from_environment = (os.environ.get(name) for name in API_KEY_VARIABLES)
    return args.api_key or next(filter(None, from_environment), NO_API_KEY)


@contextlib.contextmanager
def server_errors(url: str) -> Iterator[None]:
    """Turn the openai client's errors into Prism's one-line errors."""
    try:
        yield
    except openai.APIError as error:
        raise PrismError(describe_api_error(error, url)) from None


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine settings the engine options ask for."""
    return EngineConfig(
        device=args.device,
        dtype=args.dtype,
        num_threads=args.threads,
        tensor_parallel_size=args.tensor_parallel_size,
    )


def status(message: str) -> None:
    """Progress for the user, on stderr."""
    print(message, file=sys.stderr, flush=True)


def add_json_option(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """``--json PATH``: where a benchmark writes its record."""
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"where to write the results (default: bench-results/{benchmark}-<timestamp>.json)",
    )


def add_plot_option(parser: argparse.ArgumentParser) -> None:
    """``--plot PATH``: where a benchmark draws its PNG."""
    parser.add_argument(
        "--plot", type=Path, metavar="PATH", help="where to draw the PNG (default: beside the JSON)"
    )
