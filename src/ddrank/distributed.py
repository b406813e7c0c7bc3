"""Running on several processes with PyTorch's own runtime (``torchrun``).

``torchrun --nproc_per_node=N -m ddrank evaluate ...`` starts N copies of the command; each
reads its rank from the environment torchrun sets. Every rank plans the same job grid, trains
its share of the work units, and the results are gathered after each wave; rank 0 alone writes
the results store and the output files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ddrank.errors import DDRankError

GATHER_TIMEOUT = timedelta(minutes=30)


class DistributedError(DDRankError):
    """A rank failed or could not join; what finished before is in the results store."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_WORLD = World()


def world() -> World:
    return _WORLD


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | None = None) -> World:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); a no-op alone."""
    global _WORLD
    if not launched_by_torchrun():
        return _WORLD
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=GATHER_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - rendezvous failures come in many types
            raise DistributedError(f"rank {rank} could not join the process group: {exc}") from None
    _WORLD = World(rank, size, local_rank)
    return _WORLD


def default_device() -> str | None:
    """The GPU of this rank's LOCAL_RANK under torchrun, else None (automatic)."""
    if launched_by_torchrun() and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


def all_gather(payload: Any) -> list[Any]:
    """Every rank's payload, in rank order; a dead rank surfaces as a DistributedError."""
    if not _WORLD.distributed:
        return [payload]
    out: list[Any] = [None] * _WORLD.size
    try:
        dist.all_gather_object(out, payload)
    except Exception as exc:  # noqa: BLE001 - gloo and NCCL raise different types
        raise DistributedError(
            f"rank {_WORLD.rank}: a rank stopped answering ({str(exc).splitlines()[0]}); every result "
            "finished before is in the results store, so rerunning the command resumes"
        ) from None
    return out


def min_over_ranks(values: list[int]) -> list[int]:
    """Elementwise minimum over ranks (so every rank plans with the same limits)."""
    if not _WORLD.distributed or not values:
        return values
    device = torch.device("cuda", _WORLD.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor.tolist()


def barrier() -> None:
    if _WORLD.distributed:
        dist.barrier()


def shutdown() -> None:
    global _WORLD
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = World()
