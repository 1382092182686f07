"""``prism chat``: a terminal chat with a running server, over HTTP or gRPC."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prism.cli.options import (
    AddParser,
    add_grpc_target,
    api_key,
    at_least,
    server_errors,
    status,
)

if TYPE_CHECKING:
    from prism.conversation import StreamReply

Connection = tuple["StreamReply", str, str]
"""How answers stream, the model that gives them and the server's address."""


def add_chat(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "chat",
        parents=parents,
        help="talk with a running server; /reset forgets, /exit or Ctrl-D quits",
    )
    parser.add_argument("--system", metavar="TEXT", help="a system message to start with")
    parser.add_argument(
        "--temperature", type=float, default=0.7, metavar="T", help="(default: %(default)s)"
    )
    parser.add_argument("--max-tokens", type=at_least(1), default=512, metavar="N")
    parser.add_argument(
        "--grpc", action="store_true", help="talk over the gRPC API at --grpc-target, not --url"
    )
    add_grpc_target(parser)
    parser.set_defaults(run=_run_chat)


@contextlib.contextmanager
def _over_http(args: argparse.Namespace) -> Iterator[Connection]:
    import openai

    from prism.conversation import first_model, openai_replies

    with server_errors(args.url):
        client = openai.OpenAI(base_url=args.url, api_key=api_key(args), max_retries=0)
        model = args.model or first_model(client)
        yield openai_replies(client, model, args.temperature, args.max_tokens), model, args.url


@contextlib.contextmanager
def _over_grpc(args: argparse.Namespace) -> Iterator[Connection]:
    from prism.client import PrismClient, rpc_errors
    from prism.conversation import first_model, grpc_replies

    # No deadline: an answer takes as long as it takes, and Ctrl-C stops it.
    client = PrismClient(args.grpc_target, timeout=None, api_key=api_key(args))
    with rpc_errors(), client:
        model = args.model or first_model(client)
        replies = grpc_replies(client, model, args.temperature, args.max_tokens)
        yield replies, model, args.grpc_target


def _run_chat(args: argparse.Namespace) -> int:
    from prism.conversation import PROMPT, ChatSession, converse, enable_line_editing

    interactive = sys.stdin.isatty()
    with (_over_grpc if args.grpc else _over_http)(args) as (stream_reply, model, address):
        if interactive:
            enable_line_editing()
            status(f"chatting with {model} at {address}; /reset forgets, /exit quits")
        converse(
            ChatSession(stream_reply, system=args.system),
            input,
            sys.stdout,
            lambda message: print(f"prism: error: {message}", file=sys.stderr, flush=True),
            prompt=PROMPT if interactive else "",
        )
    return 0
