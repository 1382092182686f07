"""Options, argument types and helpers shared by the ``prism`` subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from prism.client.base import DEFAULT_TARGET
from prism.config import HTTPSettings, openai_base_url
from prism.errors import PrismError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
DEFAULT_API_URL = openai_base_url(HTTPSettings())
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


def common_options() -> argparse.ArgumentParser:
    """Options every command takes."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    return options


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """``--model SRC``: the model a command loads in this process (absent: the default)."""
    parser.add_argument(
        "--model",
        metavar="SRC",
        help="an embedded model's id, an HF model folder or a .gguf file "
        "(default: the embedded SmolLM2-135M)",
    )


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
    import openai

    from prism.conversation import describe_api_error

    try:
        yield
    except openai.APIError as error:
        raise PrismError(describe_api_error(error, url)) from None


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
