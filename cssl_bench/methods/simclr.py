"""SimCLR (Chen et al., ICML 2020): NT-Xent over the 2N views of the (global) batch.

Projector: ``proj_layers`` Linear layers with BN+ReLU between (SimSiam's reproduction uses 3), to
``dim``. Across ranks the projections are all-gathered with gradients, so every view sees the
2N_global - 2 negatives. ``joint_views``: both views through the encoder in one call of 2N images, so BN
normalises over both views, as the official TF implementation does (default off: one call per view, the
committed runs' numerics). One call of 2N images is faster than two of N on a CPU; the measured speed and
quality of both are in docs/speed.md ("SimCLR's joint views").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, output_std, parse_params
from cssl_bench.nn import distributed as D
from cssl_bench.nn.heads import mlp


@dataclass
class SimCLRParams:
    dim: int = 128
    hidden: int = 2048
    proj_layers: int = 3
    temperature: float = 0.1
    joint_views: bool = False
    # a BN after the projector's last Linear (which then has no bias), as the official TF code's projection head
    # (use_bn on every layer); [open] whether SimSiam's reproduction has it: off, the committed runs' head
    out_bn: bool = False


class SimCLR(Method):
    description = "SimCLR: NT-Xent over all 2N views, negatives from every rank"
    paper = "Chen et al., A Simple Framework for Contrastive Learning, ICML 2020"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(SimCLRParams, recipe.params, recipe.method)
        dims = [self.feat_dim] + [p.hidden] * (p.proj_layers - 1) + [p.dim]
        self.projector = mlp(dims, bn=True, last_bn=p.out_bn)

    def loss(self, views, labels):
        if self.p.joint_views:
            z1, z2 = self.projector(self.backbone(torch.cat([views["v1"], views["v2"]]))).chunk(2)
        else:
            z1 = self.projector(self.backbone(views["v1"]))
            z2 = self.projector(self.backbone(views["v2"]))
        loss = losses.nt_xent(D.gather_with_grad(z1), D.gather_with_grad(z2), self.p.temperature)
        return {"loss": loss, "z_std": output_std(z1)}
