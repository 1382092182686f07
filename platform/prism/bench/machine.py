"""A description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from prism.engine.model_runner import available_cpus


@dataclass(frozen=True, slots=True)
class Machine:
    cpu_model: str
    cpu_cores: int
    available_cpus: int
    torch_threads: int
    device: str
    device_name: str
    torch_version: str
    transformers_version: str
    python_version: str


def use_threads(threads: int | None) -> int:
    """Give torch ``threads`` threads (default: every CPU this process may use); that count."""
    threads = threads or available_cpus()
    torch.set_num_threads(threads)
    return threads


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> Machine:
    """The CPU, thread count, device and library versions in effect now."""
    cpu = cpu_model()
    return Machine(
        cpu_model=cpu,
        cpu_cores=os.cpu_count() or 1,
        available_cpus=available_cpus(),
        torch_threads=torch.get_num_threads(),
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        python_version=platform.python_version(),
    )
