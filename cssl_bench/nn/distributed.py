"""Collectives over the ranks of a torch.distributed process group, for use inside models and losses.

On a single process (no process group) every helper is the identity and the rank queries say rank 0 of 1,
so methods call them unconditionally. Setting up the process group is ``cssl_bench.train.distributed``'s.

- ``concat_all_gather``: every rank's tensor, concatenated in rank order, without gradient (MoCo's queue
  and shuffling BN).
- ``gather_with_grad`` / ``all_reduce_with_grad``: the same with gradients; the incoming gradients are
  summed in backward, so with DDP's averaging the gradient is that of the global-batch loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


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
