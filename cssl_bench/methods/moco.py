"""MoCo v1 (He et al., CVPR 2020) and v2 (Chen et al., arXiv 2003.04297).

A query encoder (backbone + head) and a momentum key encoder; InfoNCE of each query against its key
and a queue of past keys. v1: linear head to 128, tau 0.07; v2: MLP head 2048-ReLU-128, tau 0.2
(the augmentation and schedule differences live in the recipes). ``symmetric`` adds the swapped
term (SimSiam Table 4's MoCo v2 row). Shuffling BN is emulated on one device by computing BN
statistics on ``bn_splits`` groups and shuffling the key batch across groups; across ranks the key
batch is really shuffled (all-gather, permute, scatter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, make_target, output_std, parse_params, shuffled_forward
from cssl_bench.nn import distributed as D
from cssl_bench.nn.heads import mlp
from cssl_bench.nn.norm import split_batchnorm


@dataclass
class MoCoParams:
    version: int = 2
    dim: int = 128
    mlp_hidden: int = 2048
    temperature: float = 0.2
    queue_size: int = 65536
    momentum: float = 0.999
    symmetric: bool = False
    # the symmetrised loss: "sum" = loss_12 + loss_21, as the official MoCo code's symmetric option (its CIFAR
    # demo: "behaves like 2x epochs"); "mean" = half of it (what this project's runs used before the option)
    symmetric_reduction: str = "sum"
    bn_splits: int = 8  # shuffling-BN emulation on one device (1 = plain BN)
    head_bn: bool = False  # v2 head Linear-BN-ReLU-Linear (not in MoCo v2: an option of the CPU recipes)


class KeyQueue(nn.Module):
    """MoCo's dictionary: a FIFO of L2-normalised keys ``keys`` [K, D] with a write pointer ``ptr``.

    ``push(k)`` (k: [N, D], all-gathered across ranks first) writes k over the oldest N entries,
    wrapping around the end, so after any number of pushes the queue holds exactly the last K keys
    pushed (the initial random unit vectors until K keys have been pushed). Both are buffers: they
    are checkpointed and resumed with the model.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, k: torch.Tensor) -> None:
        k = D.concat_all_gather(k.detach())
        size = self.keys.shape[0]
        if k.shape[0] >= size:
            self.keys.copy_(k[-size:])
            self.ptr.zero_()
            return
        idx = (self.ptr + torch.arange(k.shape[0], device=k.device)) % size
        self.keys[idx] = k.to(self.keys.dtype)
        self.ptr.copy_((self.ptr + k.shape[0]) % size)


def build_moco_head(p: MoCoParams, in_dim: int) -> nn.Module:
    """v1: Linear(in_dim, dim); v2: Linear(in_dim, mlp_hidden) - ReLU - Linear(mlp_hidden, dim)."""
    if p.version not in (1, 2):
        raise UserError(f"params.version must be 1 or 2 for MoCo, got {p.version}", exit_code=2)
    if p.version == 1:
        return nn.Linear(in_dim, p.dim)
    return mlp([in_dim, p.mlp_hidden, p.dim], bn=p.head_bn)


class MoCo(Method):
    description = "MoCo v1/v2: momentum key encoder + queue of negatives, InfoNCE"
    paper = "He et al., Momentum Contrast, CVPR 2020; Chen et al., Improved Baselines with MoCo, 2020"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(MoCoParams, recipe.params, recipe.method)
        if p.symmetric_reduction not in ("sum", "mean"):
            raise UserError(
                f"params.symmetric_reduction for {recipe.method}: 'sum' or 'mean', got {p.symmetric_reduction!r}",
                exit_code=2,
            )
        self.head = build_moco_head(p, self.feat_dim)
        split_batchnorm(self.backbone, p.bn_splits)
        split_batchnorm(self.head, p.bn_splits)  # a BN in the head (head_bn) is shuffled like the backbone's
        self.backbone_k = make_target(self.backbone)
        self.head_k = make_target(self.head)
        self.queue = KeyQueue(p.queue_size, p.dim)

    @property
    def momentum_pairs(self):
        return [(self.backbone, self.backbone_k), (self.head, self.head_k)]

    def momentum(self, progress: float) -> float:
        return self.p.momentum

    def query(self, x):
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def key(self, x):
        """Keys [N, D] of the momentum encoder with shuffled BN (``shuffled_forward``)."""
        return shuffled_forward(lambda v: F.normalize(self.head_k(self.backbone_k(v)), dim=1), x)

    def loss(self, views, labels):
        v1, v2 = views["v1"], views["v2"]
        q1 = self.query(v1)
        k2 = self.key(v2)
        queue = self.queue.keys.clone()
        loss = losses.info_nce(q1, k2, queue, self.p.temperature)
        keys = [k2]
        if self.p.symmetric:
            q2, k1 = self.query(v2), self.key(v1)
            loss = loss + losses.info_nce(q2, k1, queue, self.p.temperature)
            if self.p.symmetric_reduction == "mean":
                loss = 0.5 * loss
            keys.append(k1)
        with torch.no_grad():
            acc = ((q1 * k2).sum(1, keepdim=True) > (q1 @ queue.t()).max(1, keepdim=True).values).float().mean()
        for k in keys:
            self.queue.push(k)
        return {"loss": loss, "pos_acc": acc, "z_std": output_std(q1)}
