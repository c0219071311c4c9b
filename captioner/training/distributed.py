"""Several processes under torchrun: which rank this is, its device, and values every rank must share.

With one process (the usual CPU run) every helper here is a no-op, so the loop reads the same either way.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..devices import resolve_device


def start() -> tuple[int, int]:
    """(rank, world size), joining the process group torchrun describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        nccl = torch.cuda.is_available() and os.environ.get("CAPTIONER_BACKEND") != "gloo"
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def stop(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, rank: int, world: int) -> torch.device:
    """This process's device: ``device`` resolved (``auto``: CUDA when there is a GPU); under torchrun each rank
    takes its own GPU, so ``cuda`` on rank 1 means ``cuda:1``."""
    dev = resolve_device(device)
    return torch.device("cuda", rank) if world > 1 and dev.type == "cuda" else dev


def all_ranks_agree(ok: bool, world: int) -> bool:
    """Rank 0's ``ok`` on every rank, so that when rank 0 cannot start the others stop too, not hang."""
    if world == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.broadcast(flag, 0)
    return bool(flag)


def mean(value: float, world: int) -> float:
    """The mean of ``value`` over the ranks (the loss of the whole global batch, one shared baseline)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world


def total(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place."""
    if world > 1:
        dist.all_reduce(tensor)
    return tensor


def from_rank0(value: float, world: int) -> float:
    """Rank 0's ``value`` on every rank (rank 0 validates; all take the same early-stopping decisions)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, 0)
    return float(t)
