"""``prism convert``: turn a model source into the cached HF folder replicas load."""

from __future__ import annotations

import argparse

from prism.cli.options import AddParser


def add_convert(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "convert",
        parents=parents,
        help="convert a GGUF model (default: the embedded one) into the cache, print its folder",
    )
    parser.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="the embedded default's id, an HF folder or a .gguf file (default: embedded)",
    )
    parser.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from prism.models import resolve_model

    print(resolve_model(args.source).path)
    return 0
