"""What every method shares: the ``Method`` interface, parameter validation, momentum pairs (one EMA
path for every momentum method, after solo-learn's ``momentum_pairs``) and MoCo's shuffled key forward.
The split / global BN layers it relies on are ``cssl_bench.nn.norm``'s."""

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
from cssl_bench.nn import distributed as D
from cssl_bench.nn.backbones import build_backbone


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
    that, with ``nn.norm.SplitBatchNorm2d``, a key falls in a different BN group from its query (He et al.
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


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


@torch.no_grad()
def output_std(z: torch.Tensor) -> torch.Tensor:
    """SimSiam's collapse monitor (Chen & He, CVPR 2021, Fig. 2): the standard deviation over the batch of each
    channel of the L2-normalised outputs ``z`` [N, D], averaged over the channels. About 1/sqrt(D) when the
    outputs spread over the unit sphere; 0 when every image maps to the same vector (collapse). A scalar,
    detached; logged as ``z_std`` in ``log.csv``."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()
