"""What every method shares: the ``Method`` interface, parameter validation, momentum pairs (one EMA
path for every momentum method, after solo-learn's ``momentum_pairs``) and shuffling-BN emulation."""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.config import Recipe
from cssl_bench.models.backbones import build_backbone
from cssl_bench.train import distributed as D


def parse_params(cls, values: dict, method: str):
    """Build the method's parameter dataclass from the recipe's ``params``; unknown keys are errors."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in (values or {}).items():
        if k not in names:
            raise UserError(
                f"unknown parameter params.{k} for {method}; valid: {', '.join(sorted(names))}", exit_code=2
            )
        tp = hints[k]
        if tp is float and isinstance(v, (int, str)) and not isinstance(v, bool):
            try:
                v = float(v)
            except ValueError:
                raise UserError(f"params.{k} for {method}: expected a number, got {v!r}", exit_code=2) from None
        elif tp in (int, bool, str) and not isinstance(v, tp):
            raise UserError(f"params.{k} for {method}: expected {tp.__name__}, got {v!r}", exit_code=2)
        out[k] = v
    return cls(**out)


class Method(nn.Module):
    """A self-supervised method. The training loop only uses this interface.

    - ``loss(views, labels) -> dict``: ``loss`` is optimised, other keys are logged (floats or tensors);
      ``z_std`` (``output_std`` of the method's embedding, of dimension ``embedding_dim``) goes to ``log.csv``.
    - ``momentum_pairs``: (online, target) module pairs updated by the loop as
      target = m * target + (1 - m) * online, with m = ``momentum(progress)``.
    - ``on_epoch_start(epoch)`` / ``after_backward(epoch)``: hooks for epoch-dependent behaviour.
    - ``features(x, kind)``: frozen features for evaluations (``backbone`` by default).
    """

    description = ""
    paper = ""

    def __init__(self, recipe: Recipe):
        super().__init__()
        self.recipe = recipe
        m = recipe.model
        self.backbone = build_backbone(m.backbone, recipe.data.image_size, m.cifar_stem, m.zero_init_residual)
        self.feat_dim = self.backbone.out_dim

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    @property
    def embedding_dim(self) -> int | None:
        """Dimension of the embedding whose ``z_std`` the method reports (``params.dim``); None without one."""
        return getattr(getattr(self, "p", None), "dim", None)

    def momentum(self, progress: float) -> float:
        return 0.999

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def after_backward(self, epoch: int) -> None:
        pass

    def loss(self, views: dict[str, torch.Tensor], labels: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, views: dict[str, torch.Tensor], labels: torch.Tensor) -> dict:
        return self.loss(views, labels)

    def feature_kinds(self) -> list[str]:
        return ["backbone"]

    def features(self, x: torch.Tensor, kind: str = "backbone") -> torch.Tensor:
        if kind != "backbone":
            raise UserError(
                f"feature {kind!r} is not available for {self.recipe.method}; choose from {', '.join(self.feature_kinds())}",
                exit_code=2,
            )
        return self.backbone(x)


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` for a momentum pair."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum_pairs(pairs: Iterable[tuple[nn.Module, nn.Module]], m: float) -> None:
    """EMA for every pair: target = m * target + (1 - m) * online (parameters); buffers are copied.

    Copying buffers (BN running statistics) only matters if a target is ever used in eval mode; the
    targets run in train mode, where BN uses the batch statistics, as in MoCo and BYOL.
    """
    for online, target in pairs:
        op, tp = list(online.parameters()), list(target.parameters())
        torch._foreach_mul_(tp, m)
        torch._foreach_add_(tp, op, alpha=1 - m)
        for ob, tb in zip(online.buffers(), target.buffers()):
            tb.copy_(ob)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2, from ``base`` at 0 to 1 at the end."""
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def shuffled_forward(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` computed on a shuffled batch and returned in the original order (MoCo's shuffling BN).

    fn maps [N, ...] -> [N, D] sample by sample except for BN. On one device the batch is permuted so
    that, with ``SplitBatchNorm2d``, a key falls in a different BN group from its query (He et al.
    2020, sec. 3.3). Across ranks (torch.distributed) the global batch is gathered, permuted with a
    permutation broadcast from rank 0, each rank encodes its slice, and the results are un-permuted.
    """
    if D.is_dist():
        world, rank, n = D.world_size(), D.rank(), x.shape[0]
        x_all = D.concat_all_gather(x)
        perm = torch.randperm(x_all.shape[0], device=x.device)
        torch.distributed.broadcast(perm, 0)
        out_all = D.concat_all_gather(fn(x_all[perm.view(world, n)[rank]]))  # out_all[j] = fn(x_all[perm[j]])
        return out_all[torch.argsort(perm)].view(world, n, -1)[rank]
    perm = torch.randperm(x.shape[0], device=x.device)
    return fn(x[perm])[torch.argsort(perm)]


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
    made autograd copy the whole gradient again (CopySlices; 25% of a ResNet-50 MoCo step on the CPU)."""

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

    Emulates MoCo's per-GPU BN (and, with a shuffled key batch, shuffling BN) on one device. Group g
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

    Measured on 2 CPU cores (``benchmarks/split_bn.py``: forward + in-place ReLU + backward, channels-last):
    below 2^19 elements per group the rearrangement is 1.2-3x faster than a call per group (ResNet-18 at 32 px
    with batch 16 in 8 groups; ResNet-50's 7x7 stage; the CPU recipes' quarter-width stages 2-4 with batch 128
    in 4 groups; ResNet-50's 14x14 stage, just under the threshold, is within 10% either way), from 2^19 up the
    call per group is 1.1-1.5x faster (ResNet-50's 56x56 and 28x28 stages at 224 px, where the copies cost more
    than the calls); "view" is 1.0-1.7x slower than the better of the two there (torch's generic reductions
    against oneDNN's BN). With the rearrangement's output a fresh tensor for autograd, MoCo v2's ResNet-50
    224-px step at batch 16 went from 5.4 s to 3.5 s; with this threshold in place of "32 samples per group",
    the tiny MoCo v2 step (batch 128 in 4 groups) from 364-375 ms to 317-353 ms. On one H100 (ResNet-50,
    224 px, batch 128 in 8 groups, bf16; ``benchmarks/profile_step.py``): a MoCo v2 step took 169 ms with a
    call per group (1,300 BN calls a step: launch-bound), 92-123 ms with "view" (two machines), 55 ms with
    plain BN. Alone per layer (``split_bn.py --device cuda``) "view" is within 1.4x of the best path; "one-call"
    gave 1,005 img/s in an earlier session's whole-step benchmark, "view" 1,008 and 1,291 on two machines
    today, so it is at least as fast, and needs no copies of the activations.
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


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


@torch.no_grad()
def output_std(z: torch.Tensor) -> torch.Tensor:
    """SimSiam's collapse monitor (Chen & He, CVPR 2021, Fig. 2): the standard deviation over the batch of each
    channel of the L2-normalised outputs ``z`` [N, D], averaged over the channels. About 1/sqrt(D) when the
    outputs spread over the unit sphere; 0 when every image maps to the same vector (collapse). A scalar,
    detached; logged as ``z_std`` in ``log.csv``."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()
