"""Tensor-parallel groups: how ranks find each other and the collectives a sharded model needs.

Rank 0 hosts the rendezvous (``tcp://host:port``) and drives the engine; other ranks join it
and follow the steps rank 0 broadcasts. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from prism.errors import IncompatibleSettings, RankLost
from prism.models import ModelConfig, Shard

COLLECTIVE_TIMEOUT = timedelta(minutes=10)
"""How long a rank waits for the others, loading the weights included."""


@dataclass(frozen=True, slots=True)
class ParallelSetup:
    """How one rank joins its group: its rank, the group size and rank 0's address."""

    rank: int
    world_size: int
    init_method: str

    @classmethod
    def for_rank0(cls, world_size: int, host: str = "127.0.0.1") -> ParallelSetup:
        """Rank 0's setup at a free port of ``host``; the others use :meth:`for_rank`."""
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        return cls(0, world_size, f"tcp://{host}:{port}")

    def for_rank(self, rank: int) -> ParallelSetup:
        return ParallelSetup(rank, self.world_size, self.init_method)


def check_tensor_parallel(config: ModelConfig, size: int, group_size: int | None = None) -> None:
    """Raise :class:`IncompatibleSettings` unless ``size`` ranks can split the model evenly
    and, quantized in groups of ``group_size`` columns, each rank's matrices hold whole
    groups."""
    _check_heads_and_width(config, size)
    if group_size is None:
        return
    widths = {
        "hidden size": config.hidden_size,
        "attention width per rank": config.num_heads * config.head_dim // size,
        "MLP width per rank": config.intermediate_size // size,
    }
    uneven = [f"{name} ({width})" for name, width in widths.items() if width % group_size]
    if uneven:
        raise IncompatibleSettings(
            f"quantization group size {group_size} does not divide the {', '.join(uneven)}"
        )


def _check_heads_and_width(config: ModelConfig, size: int) -> None:
    widths = _split_widths(config)
    uneven = [f"{count} {what}" for what, count in widths.items() if count % size]
    if uneven:
        fitting = [
            n for n in range(1, config.num_kv_heads + 1) if all(w % n == 0 for w in widths.values())
        ]
        raise IncompatibleSettings(
            f"tensor_parallel_size {size} does not divide the model's {', '.join(uneven)}; "
            f"sizes that do: {', '.join(map(str, fitting))}"
        )


def _split_widths(config: ModelConfig) -> dict[str, int]:
    """What tensor parallelism splits, by name: each must divide by the group size."""
    widths = {
        "attention heads": config.num_heads,
        "key/value heads": config.num_kv_heads,
        "MLP width (intermediate_size)": config.intermediate_size,
    }
    if config.mixture is not None:  # every rank holds a slice of every expert
        widths["expert width (moe_intermediate_size)"] = config.mixture.expert_size
        if config.mixture.shared_expert_size:
            widths["shared expert width"] = config.mixture.shared_expert_size
    return widths


class TensorParallelGroup:
    """The ranks sharing one model; a group of one (the default) communicates nothing."""

    def __init__(self, rank: int = 0, size: int = 1, device: torch.device | None = None) -> None:
        self.rank = rank
        self.size = size
        self.device = device or torch.device("cpu")
        self.broken = False
        """Set once a collective failed: the group can do no more work."""

    @classmethod
    def join(cls, setup: ParallelSetup, device: torch.device) -> TensorParallelGroup:
        """Join (rank 0: host) the group; blocks until every rank has joined."""
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=setup.init_method,
            rank=setup.rank,
            world_size=setup.world_size,
            timeout=COLLECTIVE_TIMEOUT,
        )
        return cls(setup.rank, setup.world_size, device)

    def shard(self, dim: int) -> Shard | None:
        """This rank's part of a tensor split along ``dim`` (None: the whole tensor)."""
        return Shard(dim, self.rank, self.size) if self.size > 1 else None

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place."""
        if self.size > 1:
            self._collective(dist.all_reduce, tensor)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` side by side along the last dimension, in rank order."""
        if self.size == 1:
            return tensor
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        self._collective(dist.all_gather, parts, tensor)
        return torch.cat(parts, dim=-1)

    def min(self, value: int) -> int:
        """The smallest of the ranks' ``value``."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=self.device)
        self._collective(dist.all_reduce, tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def broadcast(self, values: list[int] | None) -> None:
        """Rank 0 sends a list of ints (None: the group stops) to the other ranks."""
        if self.size == 1:
            return
        header = torch.tensor([-1 if values is None else len(values)], device=self.device)
        self._collective(dist.broadcast, header, src=0)
        if values:
            payload = torch.tensor(values, dtype=torch.long, device=self.device)
            self._collective(dist.broadcast, payload, src=0)

    def receive(self) -> list[int] | None:
        """What rank 0 broadcast next: a list of ints, or None once the group stops."""
        header = torch.zeros(1, dtype=torch.long, device=self.device)
        self._collective(dist.broadcast, header, src=0)
        length = int(header.item())
        if length <= 0:
            return None if length < 0 else []
        payload = torch.empty(length, dtype=torch.long, device=self.device)
        self._collective(dist.broadcast, payload, src=0)
        return payload.tolist()

    def close(self) -> None:
        """Leave the group (nothing to do for a group of one)."""
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def _collective(
        self, operation: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        try:
            operation(*args, **kwargs)
        except (RuntimeError, dist.DistError) as error:
            self.broken = True
            raise RankLost(f"tensor-parallel rank {self.rank} lost its group: {error}") from error
