"""The little of ``torch.distributed`` an evaluation needs: who am I, and wait for the others.

Under ``torchrun`` every rank evaluates the questions whose position ``i`` satisfies
``i % world_size == rank`` and appends to its own file; rank 0 waits for the others at a
barrier and merges. The barrier runs on a gloo group (CPU), which works beside any model
device, and with a long timeout: ranks may finish their shards hours apart.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist

BARRIER_TIMEOUT = timedelta(hours=72)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def local_rank() -> int:
    """torchrun's ``LOCAL_RANK`` (the GPU index of this process on its node); 0 outside it."""
    return int(os.environ.get("LOCAL_RANK", "0"))


class Barrier:
    """Joins the ranks of a torchrun job; a no-op when ``world_size == 1``.

    Uses the default process group if the caller made one, else creates a gloo group (and
    destroys it on :meth:`close`).
    """

    def __init__(self, world_size: int):
        self._world_size = world_size
        self._owned = False
        self._group = None
        if world_size == 1:
            return
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
            self._owned = True
        elif dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)

    def wait(self) -> None:
        if self._world_size > 1:
            dist.barrier(group=self._group)

    def all_ok(self, ok: bool) -> bool:
        """Whether every rank passed ``ok=True`` (a barrier that also carries one flag)."""
        if self._world_size == 1:
            return ok
        import torch

        flag = torch.tensor([int(ok)])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self._group)
        return bool(flag.item())

    def close(self) -> None:
        if self._owned and dist.is_initialized():
            dist.destroy_process_group()
            self._owned = False
