"""BYOL (Grill et al., NeurIPS 2020): online network with a predictor regresses an EMA target.

Projector and predictor: Linear 4096-BN-ReLU-Linear 256. Loss: symmetrised 2 - 2cos(p, sg(z')).
The target's EMA coefficient rises from ``tau_base`` (0.996) to 1 on a cosine over training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, cosine_momentum, make_target, output_std, parse_params
from cssl_bench.nn.heads import mlp


@dataclass
class BYOLParams:
    hidden: int = 4096
    dim: int = 256
    tau_base: float = 0.996


class BYOL(Method):
    description = "BYOL: predictor + EMA target (tau 0.996 -> 1), no negatives"
    paper = "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(BYOLParams, recipe.params, recipe.method)
        self.projector = mlp([self.feat_dim, p.hidden, p.dim])
        self.predictor = mlp([p.dim, p.hidden, p.dim])
        self.backbone_t = make_target(self.backbone)
        self.projector_t = make_target(self.projector)

    @property
    def momentum_pairs(self):
        return [(self.backbone, self.backbone_t), (self.projector, self.projector_t)]

    def momentum(self, progress: float) -> float:
        return cosine_momentum(self.p.tau_base, progress)

    def loss(self, views, labels):
        v1, v2 = views["v1"], views["v2"]
        y1 = self.projector(self.backbone(v1))
        p1 = self.predictor(y1)
        p2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            z1 = self.projector_t(self.backbone_t(v1))
            z2 = self.projector_t(self.backbone_t(v2))
        return {"loss": losses.byol_loss(p1, z2) + losses.byol_loss(p2, z1), "z_std": output_std(y1)}
