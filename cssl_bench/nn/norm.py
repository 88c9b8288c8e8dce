"""Batch normalisation across devices and batch groups.

- ``SplitBatchNorm2d`` / ``SplitBatchNorm1d`` and ``split_batchnorm``: BN statistics per group of the batch,
  MoCo's per-GPU BN emulated on one device, and with a shuffled key batch its shuffling BN (He et al.,
  "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, sec. 3.3).
- ``GlobalBatchNorm`` and ``convert_sync_batchnorm``: BN statistics of the global batch over all ranks
  (SimCLR's global BN, Chen et al. 2020, sec. 2), ``nn.SyncBatchNorm`` on GPUs.
- ``divide_split_batchnorm``: a recipe's BN groups count over the global batch; each rank keeps its share.

Every layer's state dict is that of a plain ``BatchNorm1d`` / ``BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.nn.distributed import all_reduce_with_grad, is_dist, world_size


def _regroup(x: torch.Tensor, s: int, back: bool) -> torch.Tensor:
    """[N, C, ...] -> [N/s, s*C, ...] (group g of the batch -> channels g*C ... (g+1)*C - 1), or back.

    Always a new tensor (one copy), in x's memory format (channels-last kept), never a view of x."""
    if back:
        n, c = x.shape[0] * s, x.shape[1] // s
    else:
        n, c = x.shape[0], x.shape[1]
    rest = tuple(x.shape[2:])
    shape = (n, c, *rest) if back else (n // s, s * c, *rest)
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        h, w = rest
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        grouped, plain = (x, out) if back else (out, x)  # grouped: stored (N/s, H, W, s, C); plain: (s, N/s, H, W, C)
        g5 = grouped.permute(0, 2, 3, 1).view(n // s, h, w, s, c).permute(3, 0, 1, 2, 4)
        p5 = plain.permute(0, 2, 3, 1).view(s, n // s, h, w, c)
    else:
        x = x.contiguous()
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
        grouped, plain = (x, out) if back else (out, x)  # grouped: stored (N/s, s, C, ...); plain: (s, N/s, C, ...)
        g5 = grouped.view(n // s, s, c, *rest).transpose(0, 1)
        p5 = plain.view(s, n // s, c, *rest)
    (p5 if back else g5).copy_(g5 if back else p5)
    return out


class _Regroup(torch.autograd.Function):
    """``_regroup`` with its inverse as the backward. A custom function so that its output is a fresh
    tensor for autograd too: a view (permute/reshape of the BN output) followed by ResNet's in-place ReLU
    made autograd copy the whole gradient again (CopySlices)."""

    @staticmethod
    def forward(ctx, x, s: int, back: bool):
        ctx.s, ctx.back = s, back
        return _regroup(x, s, back)

    @staticmethod
    def backward(ctx, grad):
        return _regroup(grad, ctx.s, not ctx.back), None, None


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _grouped_view(x: torch.Tensor, g: int):
    """x's batch in g contiguous groups as a view, never a copy for the layouts the BN layers see:
    ([G, M, C] for channels-last 4-D and 2-D inputs, [G, N/G, C, H*W] for contiguous 4-D ones; the dims
    to reduce over for per-group per-channel statistics; the broadcast shape of those [G, C] statistics)."""
    n, c = x.shape[0], x.shape[1]
    if _channels_last(x):
        return x.permute(0, 2, 3, 1).reshape(g, -1, c), (1,), (g, 1, c)
    x = x.contiguous()
    if x.dim() == 2:
        return x.view(g, n // g, c), (1,), (g, 1, c)
    return x.view(g, n // g, c, -1), (1, 3), (g, 1, c, 1)


def _coef(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The dtype of the per-group coefficients of ``_GroupStatsBN``'s multiply-adds: fp32 whatever x's dtype
    (with bf16 coefficients x * scale + shift loses |mean| / std * 2^-9 to cancellation); the output is x's."""
    return t


class _GroupStatsBN(torch.autograd.Function):
    """Batch norm with separate statistics for each of g contiguous groups of the batch, computed on a view
    of the input (``_grouped_view``): no copy of the activations, one reduction (two for bf16/fp16, which
    accumulate in fp32) and one fused multiply-add forward; backward by the BN formulas with the saved
    input: dx = a * dy + b * x + c per group and channel. Returns (y, mean [G, C], biased var [G, C]); y
    is a fresh tensor in x's memory format (an in-place ReLU on it is safe)."""

    @staticmethod
    def forward(ctx, x, weight, bias, g, eps):
        x = x if _channels_last(x) else x.contiguous()
        xv, dims, bshape = _grouped_view(x, g)
        m = xv.numel() // xv.shape[0] // xv.shape[2]
        if xv.dtype not in (torch.bfloat16, torch.float16):
            var, mean = torch.var_mean(xv, dim=dims, correction=0)
        else:
            mean = xv.sum(dims, dtype=torch.float32) / m
            var = (
                torch.linalg.vector_norm(xv, 2, dim=dims, dtype=torch.float32).square() / m - mean.square()
            ).clamp_min_(0)
        rstd = torch.rsqrt(var + eps)
        scale = rstd if weight is None else rstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        y = torch.empty_like(x)
        torch.addcmul(_coef(shift.view(bshape), x), xv, _coef(scale.view(bshape), x), out=_grouped_view(y, g)[0])
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.g, ctx.m = g, m
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dm, _dv):
        x, weight, mean, rstd = ctx.saved_tensors
        g, m = ctx.g, ctx.m
        xv, dims, bshape = _grouped_view(x, g)
        dy = dy.contiguous(memory_format=torch.channels_last) if _channels_last(x) else dy.contiguous()
        dyv, _, _ = _grouped_view(dy, g)
        acc = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
        sum_dy = dyv.sum(dims, dtype=acc)
        sum_dy_x = (dyv * xv).sum(dims, dtype=acc)
        sum_dy_xhat = rstd * (sum_dy_x - mean * sum_dy)
        a = rstd if weight is None else rstd * weight
        b = -a * rstd * sum_dy_xhat / m
        c = -a * sum_dy / m - b * mean
        dx = torch.empty_like(x)
        dxv = _grouped_view(dx, g)[0]
        torch.addcmul(_coef(c.view(bshape), x), xv, _coef(b.view(bshape), x), out=dxv)  # b * (x - mean) - a * mean(dy)
        dxv.addcmul_(dyv, _coef(a.view(bshape), x))
        dw = sum_dy_xhat.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        db = sum_dy.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are computed separately on ``splits`` groups of the batch.

    Input [N, C, H, W] (``SplitBatchNorm1d``: [N, C]); output of the same shape and memory format.
    Why: MoCo trains with BN per GPU and shuffles the key batch across GPUs so that a query and its key are
    normalised with different statistics; otherwise the BN statistics leak which sample is the positive and
    the contrastive task is solved by "cheating" (He et al., CVPR 2020, sec. 3.3, "Shuffling BN"). This
    layer emulates that per-GPU BN (and, with a shuffled key batch, shuffling BN) on one device. Group g
    holds the contiguous slice x[g * N/splits : (g + 1) * N/splits], the samples rank g would hold if
    the batch were split over ``splits`` processes; each group is normalised with its own mean and
    variance, and the running statistics are updated with the mean over the groups. A batch not
    divisible by ``splits`` falls back to plain BN. Evaluation uses the shared running statistics; the
    state dict is that of a plain BatchNorm2d.

    Three equivalent computations (``path``). On a CPU, by the size of a group: ``GROUP_CALL_MIN_ELEMENTS``
    (2^19) elements (samples x channels x positions) per group or more: one fused BN call per group
    ("per-group": contiguous slices along the batch, in either memory format). Smaller groups: one BN call for
    all groups ("one-call"), the batch rearranged so that group g's channels become channels g * C ... (g + 1)
    * C - 1 of a batch of N/splits samples (weights and running statistics repeated per group) and rearranged
    back (``_Regroup``: one copy each way, in the input's memory format). On a GPU: "view", statistics per
    group and channel from reductions over a view of the batch, no copy and no BN call (``_GroupStatsBN``).
    The threshold and the GPU choice follow measurements of the three paths (``benchmarks/``; docs/speed.md).
    """

    GROUP_CALL_MIN_ELEMENTS = 2**19  # CPU: elements per group from which each group gets its own BN call
    PATH = "auto"  # or "one-call", "per-group", "view": force one computation (benchmarks, tests)

    def __init__(self, num_features: int, splits: int, **kw):
        super().__init__(num_features, **kw)
        self.splits = splits

    def path(self, x: torch.Tensor) -> str:
        """The computation this input gets: ``PATH`` unless "auto"; else on a GPU "view", on a CPU "per-group"
        from ``GROUP_CALL_MIN_ELEMENTS`` elements per group and "one-call" below."""
        if self.PATH != "auto":
            return self.PATH
        if x.is_cuda:
            return "view"
        return "per-group" if x.numel() // self.splits >= self.GROUP_CALL_MIN_ELEMENTS else "one-call"

    def forward(self, x):
        n = x.shape[0]
        if not self.training or self.splits <= 1 or n % self.splits:
            return super().forward(x)
        s, c = self.splits, x.shape[1]
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
            factor = 1.0 / float(self.num_batches_tracked + 1)
        else:
            factor = self.momentum
        path = self.path(x)
        if path == "view":
            y, mean, var = _GroupStatsBN.apply(x, self.weight, self.bias, s, self.eps)
            m = x.numel() // n * (n // s) // c  # values per group and channel
            with torch.no_grad():  # as F.batch_norm per group: unbiased variance, then the mean over the groups
                torch._foreach_lerp_(
                    [self.running_mean, self.running_var], [mean.mean(0), var.mean(0) * (m / max(m - 1, 1))], factor
                )
            self.num_batches_tracked += 1
            return y
        # per-group running statistics, group g at [g * C, (g + 1) * C): updated in place by the BN call(s)
        rm, rv = self.running_mean.repeat(s), self.running_var.repeat(s)
        if path == "per-group":
            y = torch.cat(
                [
                    F.batch_norm(chunk, m, v, self.weight, self.bias, True, factor, self.eps)
                    for chunk, m, v in zip(x.chunk(s), rm.view(s, c), rv.view(s, c))
                ]
            )
        else:
            w, b = (None if t is None else t.repeat(s) for t in (self.weight, self.bias))
            y = _Regroup.apply(F.batch_norm(_Regroup.apply(x, s, False), rm, rv, w, b, True, factor, self.eps), s, True)
        with torch.no_grad():
            self.running_mean.copy_(rm.view(s, c).mean(0))
            self.running_var.copy_(rv.view(s, c).mean(0))
        self.num_batches_tracked += 1
        return y


class SplitBatchNorm1d(SplitBatchNorm2d):
    """``SplitBatchNorm2d`` for [N, C] inputs (a BN inside an MLP head); the state dict of a BatchNorm1d."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2-D or 3-D input, got {x.dim()}-D")


def split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """Replace every affine BatchNorm1d/2d in ``module`` by a ``SplitBatchNorm1d/2d`` with its parameters."""
    if splits <= 1:
        return module
    for name, child in module.named_children():
        if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d) and child.affine:
            cls = SplitBatchNorm1d if type(child) is nn.BatchNorm1d else SplitBatchNorm2d
            new = cls(child.num_features, splits, eps=child.eps, momentum=child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            split_batchnorm(child, splits)
    return module


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
