"""``prism generate``: one answer from the engine in this process, streamed to stdout."""

from __future__ import annotations

import argparse
import sys

from prism.cli.engine_options import engine_config
from prism.cli.options import AddParser
from prism.errors import ModelNotFound


def add_generate(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
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
    from prism.engine import LLMEngine, SamplingParams
    from prism.models import apply_chat_template

    with LLMEngine.from_source(args.model, engine_config(args)) as engine:
        tokenizer = engine.tokenizer
        if tokenizer is None:
            raise ModelNotFound(f"{engine.model_id} has no tokenizer")
        if args.raw:
            prompt = list(tokenizer.encode(args.prompt))
        else:
            message = {"role": "user", "content": args.prompt}
            prompt = apply_chat_template(tokenizer, [message])
        params = SamplingParams(
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        )
        engine.add_request("generate", prompt, params)
        while engine.has_unfinished_requests():
            for output in engine.step():
                sys.stdout.write(output.new_text)
                sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
