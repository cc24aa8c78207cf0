"""Data-parallel SFC training over ``torch.distributed``: one process per device, launched by torchrun.

Only SFC learns, so only SFC's gradients travel: after each rank's backward pass over its shard
of the global batch, one all-reduce (a sum) of SFC's flattened gradients, plus the batch's loss
and correct count, makes every rank hold the gradient of the whole global batch. The loss of each
rank is divided by the *global* batch size, so that sum is exactly the single-process gradient
(up to the order of float additions); clipping then sees the global norm on every rank, and every
rank takes the same optimizer step. Head and tail are frozen and never communicated. This is what
``DistributedDataParallel`` over the SFC module would do, written out, because a step here runs one
forward pass per distinct feature shape (videos of different lengths) and ranks may run different
numbers of them, which DDP's bucketed hooks (and ``SyncBatchNorm``) cannot follow.

BatchNorm inside SFC's Abstraction blocks: with per-rank statistics (DDP's default) a small
per-rank batch changes the update completely (measured: 2 videos per rank instead of 4 in one
process moved SFC's weights by more than the whole update), so SFC's BatchNorms are replaced by
:class:`RankSyncedBatchNorm`, which normalises with the statistics of the whole global batch
(sums all-reduced with autograd, so the backward pass is global too). torch's ``SyncBatchNorm`` is
not used because it runs on CUDA only (the gloo CPU test could not exercise it). It needs every
rank to run the same forward passes in the same order: a step runs one forward pass per feature
shape, so :func:`sfc_step` checks that all ranks hold the same shapes; when they do not (videos of
different lengths spread unevenly), that step falls back to per-rank statistics. Running
statistics are averaged over ranks after every step, so every rank holds the same buffers.

Launching: ``torchrun --standalone --nproc-per-node N -m sfc_deploy.cli train ...`` or
``sfc-deploy train --nproc N ...`` (which runs that same torchrun for you, see :func:`launch_local`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from sfc_deploy.common.device import is_cuda
from sfc_deploy.errors import ConfigError

#: Environment variables torchrun sets for every worker.
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """Where this process sits: rank, world size, and the device it trains on."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every output (checkpoints, training state, metrics, cache metadata)."""
        return self.rank == 0

    def shard(self, items: Sequence[int]) -> list[int]:
        """This rank's part of a global batch: every ``size``-th item from ``rank``.

        A function of the global batch only, so the union over ranks is the batch a single
        process would run, whatever the world size.
        """
        return list(items[self.rank :: self.size])

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (decisions rank 0 alone takes, e.g. whether a cache is valid)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def env_world() -> World:
    """The world torchrun describes in the environment (one process when it is not set)."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    try:
        rank, size, local = (int(os.environ.get(name, "0")) for name in _ENV)
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); launch with torchrun") from None
    return World(rank=rank, size=size, local_rank=local)


def rank_device(device: str, world: World) -> str:
    """Each rank of a CUDA run trains on ``cuda:LOCAL_RANK``; CPU ranks share the CPU."""
    if not is_cuda(device) or not world.distributed:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                          "are visible; start at most that many processes per node")
    return f"cuda:{world.local_rank}"


@contextmanager
def process_group(world: World, device: str) -> Iterator[World]:
    """Join (and afterwards leave) the process group: nccl for CUDA, gloo for the CPU."""
    if not world.distributed:
        yield world
        return
    backend = "nccl" if is_cuda(device) else "gloo"
    if is_cuda(device):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def sync_gradients(params: list[torch.nn.Parameter], extra: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``params``' gradients and ``extra`` (loss sum, correct count) over ranks in one all-reduce.

    A parameter that got no gradient on a rank (an empty shard) counts as zeros there; one that got
    none on any rank keeps ``grad is None``, as it would in one process (the optimizer skips it).
    Returns the summed ``extra``.
    """
    if not world.distributed:
        return extra
    device = extra.device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    grads = [p.grad.reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=device)
             for p in params]
    flat = torch.cat([has, *grads, extra.float()])
    world.all_reduce_sum(flat)
    present, offset = flat[: len(params)], len(params)
    for j, p in enumerate(params):
        n = p.numel()
        if present[j] > 0:
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    return flat[offset:]


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradients: the global loss is the sum of the ranks'."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class RankSyncedBatchNorm(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics cover the global batch (all ranks); plain BatchNorm3d otherwise.

    Same parameters and buffers as ``nn.BatchNorm3d`` (checkpoints are interchangeable). ``synced``
    is switched per step by :func:`sfc_step`: every rank must then call forward in lock step.
    """

    synced: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.synced and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_full((1,), x.numel() / c)])
        total = _SumOverRanks.apply(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def sync_batchnorms(module: nn.Module) -> nn.Module:
    """Swap ``module``'s BatchNorm3d layers for :class:`RankSyncedBatchNorm` in place (same weights)."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm3d:
            synced = RankSyncedBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum,
                                         affine=child.affine, track_running_stats=child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.to(child.weight.device)
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batchnorms(child)
    return module


def set_synced(module: nn.Module, synced: bool) -> None:
    for m in module.modules():
        if isinstance(m, RankSyncedBatchNorm):
            m.synced = synced


def same_on_all_ranks(value: object, world: World) -> bool:
    """Whether every rank holds an equal ``value`` (e.g. the feature shapes of its shard, in order)."""
    if not world.distributed:
        return True
    values: list[object] = [None] * world.size
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


def average_buffers(module: torch.nn.Module, world: World) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks."""
    if not world.distributed:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1).float() for b in buffers])
    world.all_reduce_sum(flat)
    flat /= world.size
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


def launch_local(argv: Sequence[str], nproc: int) -> int:
    """Run ``python -m sfc_deploy.cli ARGV`` as ``nproc`` processes on this machine (torchrun --standalone).

    ``argv`` is the command line without ``--nproc``; returns the launcher's exit code (0 when
    every rank succeeded).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "sfc_deploy.cli", *argv]
    return subprocess.call(cmd)


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (so the launched ranks do not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
