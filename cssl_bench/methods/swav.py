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

from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, parse_params
from cssl_bench.models.heads import mlp


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


class SwAV(Method):
    description = "SwAV: swapped prediction of Sinkhorn-Knopp codes over prototypes, multi-crop"
    paper = "Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments, NeurIPS 2020"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(SwAVParams, recipe.params, recipe.method)
        self.projector = mlp([self.feat_dim, p.hidden, p.dim])
        self.prototypes = nn.Linear(p.dim, p.n_prototypes, bias=False)
        self.register_buffer("queue", torch.zeros(2, p.queue_length, p.dim))
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def after_backward(self, epoch: int) -> None:
        if epoch < self.p.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    def _embed(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """Project crops, one backbone pass per resolution."""
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
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        names = sorted(k for k in views if k.startswith("g")) + sorted(k for k in views if k.startswith("l"))
        zs = self._embed([views[k] for k in names])
        scores = [self.prototypes(z) for z in zs]
        n = zs[0].shape[0]
        use_queue = self.p.queue_length > 0 and self.epoch >= self.p.queue_start
        codes = []
        with torch.no_grad():
            for i in range(2):
                s = scores[i].detach()
                if use_queue and bool(self.queue[i, -1].abs().sum() > 0):
                    s = torch.cat([s, self.prototypes(self.queue[i])])
                codes.append(losses.sinkhorn(s, self.p.epsilon, self.p.sinkhorn_iterations, distributed=True)[:n])
            if use_queue:
                self.queue[:, n:] = self.queue[:, :-n].clone()
                self.queue[0, :n], self.queue[1, :n] = zs[0].detach()[: self.p.queue_length], zs[1].detach()[: self.p.queue_length]
        return {"loss": losses.swav_multicrop_loss(scores, codes, self.p.temperature)}
