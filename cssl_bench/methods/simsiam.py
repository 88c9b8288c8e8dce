"""SimSiam (Chen & He, CVPR 2021): siamese network, predictor, stop-gradient; no negatives, no momentum.

Projector: 3 x (Linear without bias - BN - ReLU), the last without ReLU and with a non-affine BN, to
``dim`` (2048). Predictor: dim-``pred_hidden``(512)-dim with BN+ReLU on the hidden layer only.
Loss: 0.5 * (D(p1, sg(z2)) + D(p2, sg(z1))), D = negative cosine. The predictor's learning rate is
held fixed by the recipe (``optim.fixed_lr: [predictor]``); ResNets use ``zero_init_residual``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cssl_bench import UserError
from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, output_std, parse_params
from cssl_bench.nn.heads import mlp


@dataclass
class SimSiamParams:
    dim: int = 2048
    pred_hidden: int = 512
    proj_layers: int = 3
    hidden: int = 0  # projector hidden width; 0 = the backbone's feature width (2048 for ResNet-50, as the paper)


class SimSiam(Method):
    description = "SimSiam: stop-gradient + predictor, no negatives, no momentum encoder"
    paper = "Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(SimSiamParams, recipe.params, recipe.method)
        if p.proj_layers < 1:
            raise UserError(f"params.proj_layers must be >= 1, got {p.proj_layers}", exit_code=2)
        # [V, hidden x (proj_layers - 1), dim]: 2048-2048-2048-2048 for ResNet-50
        dims = [self.feat_dim] + [p.hidden or self.feat_dim] * (p.proj_layers - 1) + [p.dim]
        self.projector = mlp(dims, bn=True, bias=False, last_bn=True, last_bn_affine=False)
        self.predictor = mlp([p.dim, p.pred_hidden, p.dim], bn=True)

    def loss(self, views, labels):
        z1 = self.projector(self.backbone(views["v1"]))
        z2 = self.projector(self.backbone(views["v2"]))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (losses.negative_cosine(p1, z2) + losses.negative_cosine(p2, z1))
        return {"loss": loss, "z_std": output_std(z1)}
