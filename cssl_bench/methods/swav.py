"""SwAV (Caron et al., NeurIPS 2020): swapped prediction of Sinkhorn codes with multi-crop.

Projector MLP (2048 -> 128), ``n_prototypes`` L2-normalised prototypes (normalised before every
step), codes by Sinkhorn-Knopp (3 iterations, eps 0.05) from the two large crops only, prototypes
frozen during the first ``freeze_prototypes_epochs``, and for small batches a queue of past large-crop
projections (``queue_length``) used in the Sinkhorn step from epoch ``queue_start``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, output_std, parse_params
from cssl_bench.nn import distributed as D
from cssl_bench.nn.heads import mlp


@dataclass
class SwAVParams:
    hidden: int = 2048
    dim: int = 128
    n_prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_epochs: int = 1
    queue_length: int = 0  # 0 = no queue; the paper uses 3840 at batch 256
    queue_start: int = 15
    # a BatchNorm (no affine) on the projection before its L2 normalisation; not in SwAV (an option of the CPU
    # recipes): it centres and standardises every output coordinate over the batch
    out_bn: bool = False
    # "random": nn.Linear's initialisation (SwAV). "orthogonal": the rows are stacked random orthonormal bases of
    # the projection space (n_prototypes a multiple of dim), so sum_k (z.c_k)^2 = n_prototypes / dim for every
    # unit z: no direction has uniform scores (an option of the CPU recipes)
    prototypes_init: str = "random"


def _crop_order(names) -> tuple[list[str], list[str]]:
    """MultiCrop's view names: large crops ``g0, g1, ...`` and small crops ``l0, l1, ...``, each in index order."""
    large = sorted((k for k in names if k.startswith("g")), key=lambda k: int(k[1:]))
    small = sorted((k for k in names if k.startswith("l")), key=lambda k: int(k[1:]))
    return large, small


class SwAV(Method):
    description = "SwAV: swapped prediction of Sinkhorn-Knopp codes over prototypes, multi-crop"
    paper = "Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments, NeurIPS 2020"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(SwAVParams, recipe.params, recipe.method)
        self.projector = mlp([self.feat_dim, p.hidden, p.dim], last_bn=p.out_bn, last_bn_affine=False)
        self.prototypes = nn.Linear(p.dim, p.n_prototypes, bias=False)
        if p.prototypes_init == "orthogonal":
            if p.n_prototypes % p.dim:
                raise UserError(
                    f"params.prototypes_init orthogonal needs n_prototypes a multiple of dim ({p.dim}), "
                    f"got {p.n_prototypes}",
                    exit_code=2,
                )
            with torch.no_grad():
                for i in range(0, p.n_prototypes, p.dim):
                    nn.init.orthogonal_(self.prototypes.weight[i : i + p.dim])
        elif p.prototypes_init != "random":
            raise UserError(
                f"params.prototypes_init must be random or orthogonal, got {p.prototypes_init!r}", exit_code=2
            )
        self.n_code_crops = recipe.augment.n_large if recipe.augment.views == "multicrop" else 2
        # queue[i]: past projections [L, D] of code crop i, newest first; all-zero rows are unfilled. As
        # main_swav.py: queue_length (global) is rounded down to a multiple of the global batch and each of the
        # W ranks keeps L = queue_length / W rows, so the Sinkhorn step sees queue_length rows at any W.
        length = p.queue_length - p.queue_length % recipe.train.batch_size
        if p.queue_length and not length:
            raise UserError(
                f"params.queue_length {p.queue_length} for {recipe.method} is below the batch size "
                f"{recipe.train.batch_size}: SwAV keeps whole batches in its queue",
                exit_code=2,
            )
        self.rank_queue_length = length // D.world_size()
        self.register_buffer("queue", torch.zeros(self.n_code_crops, self.rank_queue_length, p.dim))
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def after_backward(self, epoch: int) -> None:
        # SwAV freezes the prototypes during the first iterations (one epoch at our scale): dropping the
        # gradient makes the optimiser skip them entirely (no momentum, no weight decay)
        if epoch < self.p.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def _scores(self, z: torch.Tensor) -> torch.Tensor:
        """Prototype scores [N, K] in float32 also under bf16/fp16 autocast (the Sinkhorn step exponentiates
        score / epsilon = score / 0.05: bf16's rounding of the scores would change each code by several percent)."""
        with losses.fp32_region(z.device.type):
            return self.prototypes(losses.upcast(z))

    def _embed(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """L2-normalised projections [N, dim] of every crop; one backbone pass per run of equal resolution."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            z = F.normalize(self.projector(self.backbone(torch.cat(crops[i:j]))), dim=1)
            out.extend(z.chunk(j - i))
            i = j
        return out

    def loss(self, views, labels):
        self.normalize_prototypes()
        if "v1" in views:  # two-view recipes (SimSiam Table 4 compares on 2 x 224 views)
            names = ["v1", "v2"]
        else:
            large, small = _crop_order(views)
            names = large + small
        zs = self._embed([views[k] for k in names])
        scores = [self._scores(z) for z in zs]
        n = zs[0].shape[0]
        n_codes = min(self.n_code_crops, len(zs))
        use_queue = self.rank_queue_length > 0 and self.epoch >= self.p.queue_start
        codes = []
        with torch.no_grad():
            for i in range(n_codes):
                s = scores[i].detach()
                # the queue joins the Sinkhorn problem once it is full (SwAV's main_swav.py); its codes are dropped
                if use_queue and bool(self.queue[i, -1].abs().sum() > 0):
                    s = torch.cat([s, self._scores(self.queue[i])])
                codes.append(losses.sinkhorn(s, self.p.epsilon, self.p.sinkhorn_iterations, distributed=True)[:n])
            if use_queue:
                m = min(n, self.rank_queue_length)
                self.queue[:, m:] = self.queue[:, :-m].clone()
                for i in range(n_codes):
                    self.queue[i, :m] = zs[i].detach()[:m]
        return {"loss": losses.swav_multicrop_loss(scores, codes, self.p.temperature), "z_std": output_std(zs[0])}
