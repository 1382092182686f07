"""``prism chat``: a terminal chat with a running server."""

from __future__ import annotations

import argparse
import sys

import openai

from prism.chat import PROMPT, ChatSession, converse, enable_line_editing, first_model_id
from prism.cli.options import AddParser, api_key, at_least, server_errors, status


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
    parser.set_defaults(run=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    with server_errors(args.url):
        client = openai.OpenAI(base_url=args.url, api_key=api_key(args), max_retries=0)
        session = ChatSession(
            client,
            args.model or first_model_id(client),
            system=args.system,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
        )
        if interactive:
            enable_line_editing()
            status(f"chatting with {session.model} at {args.url}; /reset forgets, /exit quits")
        converse(
            session,
            input,
            sys.stdout,
            lambda message: print(f"prism: error: {message}", file=sys.stderr, flush=True),
            prompt=PROMPT if interactive else "",
        )
    return 0
