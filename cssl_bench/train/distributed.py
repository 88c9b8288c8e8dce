"""Distributed training (torch.distributed): process-group set-up from torchrun's environment, rank
queries, all-gather and all-reduce with gradients, shuffling BN across ranks, synchronised BatchNorm,
and the DDP wrapper the loop uses.

On a single process every collective helper is the identity, so methods call them unconditionally.

Semantics (tests/test_distributed.py checks each against one process on the same global batch):

- ``train.batch_size`` is the *global* batch; each of the W ranks trains on ``batch_size / W`` images
  (a contiguous slice of the global batch, ``data.loaders.EpochSampler``), so a recipe, its hash, its
  learning-rate scaling and its results do not depend on the number of processes.
- DDP averages the ranks' gradients. Losses that gather other ranks' tensors with gradients
  (``gather_with_grad``, ``all_reduce_with_grad``) sum the incoming gradients in backward, so the
  averaged gradient is the gradient of the global-batch loss.
- ``model.sync_bn``: BatchNorm statistics over the global batch (``torch.nn.SyncBatchNorm`` on GPUs,
  ``GlobalBatchNorm`` here on CPU/gloo, where PyTorch's SyncBatchNorm refuses to run).
- Shuffling BN (MoCo, LooC): ``params.bn_splits`` counts BN groups over the *global* batch, so each
  rank keeps ``bn_splits / W`` of them (``divide_split_batchnorm``: the groups keep their size); the
  key batch is permuted across ranks by ``methods.base.shuffled_forward``.
"""

from __future__ import annotations

import datetime
import inspect
import os

import torch
import torch.distributed as dist
import torch.nn as nn

from cssl_bench import UserError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (``torch.distributed.run``) with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def backend_for(device_type: str) -> str:
    """NCCL between GPUs, gloo on CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


def init_from_env(timeout_minutes: float = 30.0) -> bool:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Returns True when this call initialised it.

    The backend is NCCL when CUDA is available (each process takes GPU ``LOCAL_RANK``), gloo otherwise.
    """
    if is_dist() or not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run a single process (no torchrun / --nproc)")
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); use --nproc <= the number of GPUs"
            )
        torch.cuda.set_device(local)
    kw = {"device_id": torch.device("cuda", torch.cuda.current_device())} if device_type == "cuda" else {}
    dist.init_process_group(backend_for(device_type), timeout=datetime.timedelta(minutes=timeout_minutes), **kw)
    return True


def cleanup(barrier: bool = True) -> None:
    """Leave the process group; with ``barrier`` first wait for every rank, so that no rank exits while
    another still communicates (skip it after an error: the other ranks may never arrive)."""
    if is_dist():
        try:
            if barrier:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (a copy; no gradient)."""
    if not is_dist():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0 (rank order), without gradient. Same shape on every rank."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        # every rank's loss depends on every rank's x: this rank's x receives the sum over ranks of the
        # gradients with respect to its slice (a reduce-scatter; gloo has none, so all-reduce and pick)
        g = torch.stack([t.contiguous() for t in grads])
        if dist.get_backend() == "nccl":
            out = torch.empty_like(g[0])
            dist.reduce_scatter_tensor(out, g.flatten(0, 1))
            return out
        dist.all_reduce(g)
        return g[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` [N, ...] concatenated to [W*N, ...] (rank order), with gradients flowing back to
    each rank's own slice. SimCLR's negatives from every rank (Chen et al. 2020, sec. 2: "global BN" and
    all 2N-2 negatives of the global batch)."""
    if not is_dist():
        return x
    return torch.cat(_GatherWithGrad.apply(x))


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)  # the sum feeds every rank's loss: collect every rank's gradient
        return g


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, differentiable: the gradient reaching each rank's ``x`` is the sum of
    every rank's gradient with respect to the sum."""
    if not is_dist():
        return x
    return _AllReduceSum.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), for any input
    [N, C, *] (BatchNorm1d and 2d). PyTorch's ``SyncBatchNorm`` runs on GPUs only; this is its CPU/gloo
    equivalent (two all-reduces: mean, then the centred second moment, for numerical stability).
    Outside training or on one process it is a plain BatchNorm. The state dict is a BatchNorm's.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        if not (self.training and is_dist() and world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 at least
        count = torch.tensor([x.numel() / c], dtype=xf.dtype, device=x.device)
        tot = all_reduce_with_grad(torch.cat([xf.sum(dims), count]))
        n = tot[c].detach()
        mean = tot[:c] / n
        centred = xf - mean.view(shape)
        var = all_reduce_with_grad((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every plain BatchNorm1d/2d in ``module`` by a synchronised one sharing its parameters and
    buffers (``nn.SyncBatchNorm`` on CUDA, ``GlobalBatchNorm`` otherwise). Shuffling-BN layers
    (``SplitBatchNorm2d``) are left alone: their point is per-group statistics."""
    for name, child in module.named_children():
        if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d):
            cls = nn.SyncBatchNorm if device_type == "cuda" else GlobalBatchNorm
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias  # the same Parameter objects (requires_grad kept)
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device_type)
    return module


def divide_split_batchnorm(module: nn.Module, world: int) -> None:
    """``SplitBatchNorm2d.splits`` counts BN groups over the global batch; with ``world`` ranks each rank
    holds ``splits / world`` of them (1 when there are fewer groups than ranks: per-rank BN)."""
    from cssl_bench.methods.base import SplitBatchNorm2d  # lazy: methods import this module

    if world <= 1:
        return
    for m in module.modules():
        if isinstance(m, SplitBatchNorm2d) and m.splits > 1:
            if m.splits % world and m.splits > world:
                raise UserError(
                    f"params.bn_splits={m.splits} BN groups cannot be shared by {world} processes; "
                    f"use a multiple of {world} (--set params.bn_splits=...)",
                    exit_code=2,
                )
            m.splits = max(1, m.splits // world)


def distribute(method: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """Prepare ``method`` for this process group and return the module to call: on one process the
    method itself; otherwise its BN layers adapted (``divide_split_batchnorm``, ``sync_bn``) and the
    method wrapped in DistributedDataParallel.

    Buffers are not broadcast each step (``broadcast_buffers=False``): queues are kept equal by their
    own all-gathers, and BN running statistics only matter on rank 0, which writes the checkpoints.
    Call before building the optimiser (SyncBN keeps the parameter objects, so either order works).
    """
    if not is_dist() or world_size() == 1:
        return method
    divide_split_batchnorm(method, world_size())
    if sync_bn:
        convert_sync_batchnorm(method, device.type)
    ddp = nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:  # torch >= 2.14: syncs at init only
        kw = {"forward_sync_buffers": False}
    else:
        for b in method.buffers():  # older torch: broadcast_buffers=False also skips the initial sync
            dist.broadcast(b.data, 0)
        kw = {"broadcast_buffers": False}
    return ddp(method, device_ids=[device.index] if device.type == "cuda" else None, **kw)


__all__ = [
    "is_dist",
    "world_size",
    "rank",
    "is_main",
    "launched_by_torchrun",
    "init_from_env",
    "cleanup",
    "barrier",
    "all_reduce_mean",
    "concat_all_gather",
    "gather_with_grad",
    "all_reduce_with_grad",
    "GlobalBatchNorm",
    "convert_sync_batchnorm",
    "divide_split_batchnorm",
    "distribute",
]
