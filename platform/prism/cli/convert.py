"""``prism convert``: turn a model source into the cached HF folder replicas load."""

from __future__ import annotations

import argparse

from prism.cli.options import AddParser, add_model_source


def add_convert(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "convert",
        parents=parents,
        help="convert a GGUF model (default: embedded SmolLM2) into the cache, print its folder",
    )
    add_model_source(parser)
    parser.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from prism.models import resolve_model

    print(resolve_model(args.model).path)
    return 0
