"""Options of the commands that run an engine in this process (``generate``, ``bench engine``).

Their defaults are the platform config's engine defaults (:class:`EngineSettings`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from prism.cli.options import add_model_source, at_least
from prism.config import EngineSettings

if TYPE_CHECKING:
    from prism.engine import EngineConfig

ENGINE_DEFAULTS = EngineSettings()
DTYPES: tuple[str, ...] = get_args(EngineSettings.model_fields["dtype"].annotation)
QUANTIZATIONS: tuple[str, ...] = get_args(EngineSettings.model_fields["quantization"].annotation)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def device_type(text: str) -> str:
    if text not in ("auto", "cpu") and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}")
    if text.startswith("cuda") and not _cuda_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine")
    return text


def add_quantization_options(parser: argparse.ArgumentParser) -> None:
    """``--quantization`` and ``--quantization-group-size`` (absent: the config's)."""
    parser.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        help="quantize the matrices at load, weight-only (default: a profile's setting, else "
        "none; a bench's HF baseline stays in --dtype; see docs/quantization.md)",
    )
    parser.add_argument(
        "--quantization-group-size",
        type=at_least(8),
        metavar="N",
        help="columns per scale (default: a row for int8, 32 for int4)",
    )


def quantization_settings(args: argparse.Namespace) -> dict[str, object]:
    """The engine settings the quantization options set (none when they are absent)."""
    settings: dict[str, object] = {}
    if args.quantization is not None:
        settings["quantization"] = args.quantization
    if args.quantization_group_size is not None:
        settings["quantization_group_size"] = args.quantization_group_size
    return settings


def engine_options() -> argparse.ArgumentParser:
    """Options of commands that run an engine in this process."""
    options = argparse.ArgumentParser(add_help=False)
    add_model_source(options)
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
    add_quantization_options(options)
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

    settings = EngineSettings.model_validate(
        {
            "device": args.device,
            "dtype": args.dtype,
            "num_threads": args.threads,
            "tensor_parallel_size": args.tensor_parallel_size,
            **quantization_settings(args),
        }
    )
    return EngineConfig(**settings.model_dump())
