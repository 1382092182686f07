"""The ``prism`` command line.

Each subcommand lives in its own module with an ``add_<name>`` function that declares its
arguments and a ``_run_<name>`` function that does the work. Declaring imports nothing heavy
(torch, transformers, Ray, openai, gRPC): ``--help`` answers at once, and each command loads
only what it runs. Results go to stdout; logs and
progress go to stderr. Prism's own errors end the command with one ``prism: error: ...``
line and status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from prism.cli.bench import add_bench
from prism.cli.chat import add_chat
from prism.cli.convert import add_convert
from prism.cli.engine_options import engine_options
from prism.cli.generate import add_generate
from prism.cli.options import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    common_options,
    server_options,
)
from prism.cli.serve import add_serve
from prism.config import ConfigError
from prism.errors import PrismError


def build_parser() -> argparse.ArgumentParser:
    """The ``prism`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="prism", description="Prism: an LLM serving platform")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    parents = [common_options(), engine_options()]
    add_generate(commands.add_parser, parents)
    add_chat(commands.add_parser, [common_options(), server_options()])
    add_serve(commands.add_parser, [common_options()])
    add_bench(commands.add_parser, parents)
    add_convert(commands.add_parser, [common_options()])
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # Read by huggingface_hub and transformers when they are first imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


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
