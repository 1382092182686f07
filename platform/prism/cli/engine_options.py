"""Options of the commands that run an engine in this process (``generate``, ``bench engine``).

Their defaults are the platform config's engine defaults (:class:`EngineSettings`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from prism.cli.options import at_least
from prism.config import EngineSettings

if TYPE_CHECKING:
    from prism.engine import EngineConfig

ENGINE_DEFAULTS = EngineSettings()
DTYPES: tuple[str, ...] = get_args(EngineSettings.model_fields["dtype"].annotation)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def device_type(text: str) -> str:
    if text not in ("auto", "cpu") and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}")
    if text.startswith("cuda") and not _cuda_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine")
    return text


def engine_options() -> argparse.ArgumentParser:
    """Options of commands that run an engine in this process."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--model",
        metavar="SRC",
        help="model id, HF model folder or .gguf file (default: the embedded SmolLM2-135M)",
    )
    options.add_argument(
        "--device",
        type=device_type,
        default=ENGINE_DEFAULTS.device,
        help="auto, cpu or cuda[:N] (default: %(default)s)",
    )
    options.add_argument(
        "--dtype",
        choices=DTYPES,
        default=ENGINE_DEFAULTS.dtype,
        help="weights and KV dtype (default: %(default)s)",
    )
    options.add_argument(
        "--threads",
        type=at_least(1),
        metavar="N",
        help="torch CPU threads (default: the CPUs this process may use)",
    )
    options.add_argument(
        "--tensor-parallel-size",
        type=at_least(1),
        default=ENGINE_DEFAULTS.tensor_parallel_size,
        metavar="N",
        help="split the model over N ranks, run as local processes (default: %(default)s)",
    )
    return options


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine settings the engine options ask for, the rest at their defaults."""
    from prism.engine import EngineConfig

    settings = EngineSettings(
        device=args.device,
        dtype=args.dtype,
        num_threads=args.threads,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    return EngineConfig(**settings.model_dump())
