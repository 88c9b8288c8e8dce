"""VICReg as a cssl-bench plugin method (Bardes, Ponce & LeCun, ICLR 2022).

Two views of each image go through the backbone and an *expander* (``hidden``-``hidden``-``dim`` MLP, BN + ReLU
on the hidden layers; 8192-8192-8192 in the paper). The loss regularises the embeddings Z, Z' [N, D] with three
terms, weighted lambda = 25, mu = 25, nu = 1 (``sim_coeff``, ``std_coeff``, ``cov_coeff``):

- invariance s(Z, Z'): the mean squared difference of the two embeddings;
- variance v(Z): the mean over dimensions of max(0, 1 - sqrt(Var(z_j) + 1e-4)), a hinge on each dimension's std
  across the batch (it prevents collapse without negatives);
- covariance c(Z): the sum of the squared off-diagonal entries of Z's covariance matrix, divided by D (it
  decorrelates the dimensions).

loss = lambda s(Z, Z') + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z')), with the two branches' variance terms
averaged and their covariance terms summed, as the authors' implementation reduces them (the paper's eq. 6 sums
both; halving only the variance term is the same as its mu = 12.5). No momentum encoder, no predictor, no
stop-gradient. With several processes the embeddings are gathered (``gather_with_grad``) so the statistics are
those of the global batch.

Registered through the entry point ``vicreg = "cssl_bench_vicreg:VICReg"`` (pyproject.toml); its recipe is
``vicreg.yaml`` beside this file (the class attribute ``recipe``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cssl_bench.methods import Method, gather_with_grad, losses, mlp, output_std, parse_params

__version__ = "0.1.0"


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """The D * (D - 1) off-diagonal entries of a square [D, D] matrix, flattened."""
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = mean_j max(0, gamma - sqrt(Var(z_j) + eps)); z: [N, D], Var unbiased over the batch. A scalar."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = sum_{i != j} C(Z)_ij^2 / D, C(Z) the [D, D] covariance of z [N, D] (unbiased). A scalar."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.t() @ zc / (n - 1)
    return _off_diagonal(cov).pow(2).sum() / d


@losses.fp32_loss
def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
) -> dict[str, torch.Tensor]:
    """VICReg's loss of the embeddings z1, z2 [N, D] of two views (N >= 2), computed in float32. Returns
    {"loss", "invariance", "variance", "covariance"}: the weighted total and the three unweighted terms (variance
    averaged over the two branches, covariance summed; see the module docstring)."""
    invariance = F.mse_loss(z1, z2)
    variance = (variance_term(z1) + variance_term(z2)) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}


@dataclass
class VICRegParams:
    hidden: int = 8192  # the expander's hidden width
    dim: int = 8192  # the embedding's dimension
    sim_coeff: float = 25.0  # lambda
    std_coeff: float = 25.0  # mu
    cov_coeff: float = 1.0  # nu


class VICReg(Method):
    description = "VICReg: invariance + variance + covariance regularisation; no negatives, momentum or predictor"
    paper = "Bardes, Ponce & LeCun, VICReg, ICLR 2022"
    recipe = "vicreg.yaml"  # beside this file: the recipe used unless --recipe gives another

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(VICRegParams, recipe.params, recipe.method)
        self.expander = mlp([self.feat_dim, p.hidden, p.hidden, p.dim], bn=True)

    def loss(self, views, labels):
        z1 = self.expander(self.backbone(views["v1"]))
        z2 = self.expander(self.backbone(views["v2"]))
        out = vicreg_loss(
            gather_with_grad(z1), gather_with_grad(z2), self.p.sim_coeff, self.p.std_coeff, self.p.cov_coeff
        )
        return {**out, "z_std": output_std(z1)}
