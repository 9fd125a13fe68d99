"""Data-parallel training across processes: ``torchrun --nproc-per-node N -m bsr_cli train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `setup` then joins the process group
(gloo on CPU, NCCL on CUDA) and the model is wrapped in DistributedDataParallel, which averages gradients, so
N processes with ``--batch-size B`` train with a global batch of N*B. Rank 0 alone validates, logs, writes the
state and the checkpoints; every rank reads the same state on ``--resume``. Without torchrun (WORLD_SIZE unset
or 1) everything here is a no-op and a run is exactly the single-process one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model DDP-wrapped for the forward/backward of training (unchanged when not distributed)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def broadcast(self, value):
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one (a stop request, a spent time budget)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup(device_pref: str) -> tuple[Dist, torch.device | None]:
    """Join torchrun's process group if there is one: (Dist, the device of this rank or None for the default)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), None
    cuda = device_pref != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size()), device
