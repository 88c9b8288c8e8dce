"""LooC and LooC++ (Xiao et al., What Should Not Be Contrastive in Contrastive Learning, ICLR 2021).

Built on MoCo v2: a query encoder, a momentum key encoder, and n+1 projection heads on the shared
features V (each an MLP ``hidden``-ReLU-``dim``), with one queue per head filled with that head's k0
keys. Views: q, k0 and k1..kn (``LeaveOneOut``: k_i shares q's parameters of augmentation i). Z0 is
invariant to every augmentation (all keys of the image are positives); Z_i varies with augmentation
i (only k_i is positive; k0 and the other k_j are negatives). Loss: ``losses.looc_loss``.
``augment.looc_heads`` picks which applied augmentations get a variance head (LooC Table 5; default
all of ``augment.looc_augment``; an empty list leaves Z0 alone).

LooC++ is the same model; its downstream feature is the concatenation of the heads' features
(``features(x, "concat")``), with the layer chosen by ``concat_layer``: ``hidden`` (after each head's
first Linear+ReLU, the default), ``out`` (head outputs) or ``hidden+v`` (hidden layers plus V).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.methods import losses
from cssl_bench.methods.base import Method, make_target, output_std, parse_params, shuffled_forward
from cssl_bench.methods.moco import KeyQueue
from cssl_bench.nn.heads import mlp
from cssl_bench.nn.norm import split_batchnorm


@dataclass
class LooCParams:
    dim: int = 128
    hidden: int = 2048
    temperature: float = 0.2
    queue_size: int = 16384
    momentum: float = 0.999
    bn_splits: int = 8
    head_bn: bool = False  # heads Linear-BN-ReLU-Linear (not in LooC: an option of the CPU recipes)
    downstream_feature: str = "backbone"  # LooC: backbone; LooC++: concat
    concat_layer: str = "hidden"  # hidden | out | hidden+v


class LooC(Method):
    description = "LooC: leave-one-out views, n+1 embedding spaces (one invariant, one variant per augmentation)"
    paper = "Xiao et al., What Should Not Be Contrastive in Contrastive Learning, ICLR 2021"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.p = p = parse_params(LooCParams, recipe.params, recipe.method)
        self.augmentations = list(recipe.augment.looc_augment)
        if not self.augmentations:
            raise UserError("LooC needs at least one augmentation in augment.looc_augment (--augment)", exit_code=2)
        if len(set(self.augmentations)) != len(self.augmentations):
            raise UserError(f"augment.looc_augment lists an augmentation twice: {self.augmentations}", exit_code=2)
        if p.concat_layer not in ("hidden", "out", "hidden+v"):
            raise UserError(f"params.concat_layer must be hidden, out or hidden+v, got {p.concat_layer!r}", exit_code=2)
        # head i+1 and view k_{i+1} vary with variance[i]; head 0 is the invariant space Z0
        self.variance = recipe.augment.variance_heads
        n = len(self.variance)
        self.heads = nn.ModuleList([mlp([self.feat_dim, p.hidden, p.dim], bn=p.head_bn) for _ in range(n + 1)])
        split_batchnorm(self.backbone, p.bn_splits)
        split_batchnorm(self.heads, p.bn_splits)
        self.backbone_k = make_target(self.backbone)
        self.heads_k = make_target(self.heads)
        self.queues = nn.ModuleList([KeyQueue(p.queue_size, p.dim) for _ in range(n + 1)])
        if p.downstream_feature not in ("backbone", "concat") and p.downstream_feature not in self.feature_kinds():
            raise UserError(
                f"params.downstream_feature must be backbone, concat or one of {', '.join(self.feature_kinds())}; "
                f"got {p.downstream_feature!r}",
                exit_code=2,
            )

    @property
    def momentum_pairs(self):
        return [(self.backbone, self.backbone_k), (self.heads, self.heads_k)]

    def momentum(self, progress: float) -> float:
        return self.p.momentum

    @torch.no_grad()
    def _keys(self, key_views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every key head's keys, one [n+1 views, N, D] tensor per head: one key-encoder pass (backbone and
        heads, as MoCo's key encoder) over all key views with a shuffled batch (shuffling BN,
        ``shuffled_forward``; a head with BN, ``head_bn``, is shuffled like the backbone)."""

        def encode(x):
            f = self.backbone_k(x)
            return torch.cat([F.normalize(h(f), dim=1) for h in self.heads_k], dim=1)

        out = shuffled_forward(encode, torch.cat(key_views))  # [V * N, (n+1) * D]
        return [k.reshape(len(key_views), -1, self.p.dim) for k in out.split(self.p.dim, dim=1)]

    def loss(self, views, labels):
        n = len(self.variance)
        v = self.backbone(views["q"])
        queries = [F.normalize(h(v), dim=1) for h in self.heads]
        keys = self._keys([views[f"k{i}"] for i in range(n + 1)])
        queues = [qq.keys.clone() for qq in self.queues]
        loss = losses.looc_loss(queries, keys, queues, self.p.temperature)
        for queue, k in zip(self.queues, keys):
            queue.push(k[0])
        return {"loss": loss, "z_std": output_std(queries[0])}  # the invariant space Z0

    def feature_kinds(self) -> list[str]:
        n = len(self.heads)
        return (
            ["backbone", "concat", "concat:out", "concat:hidden+v"]
            + [f"head:{i}" for i in range(n)]
            + [f"head:{i}:out" for i in range(n)]
        )

    def default_feature(self) -> str:
        if self.p.downstream_feature == "concat":
            return "concat" if self.p.concat_layer == "hidden" else f"concat:{self.p.concat_layer}"
        return self.p.downstream_feature

    def features(self, x, kind="backbone"):
        if kind not in self.feature_kinds():
            raise UserError(
                f"feature {kind!r} is not available for {self.recipe.method}; choose from {', '.join(self.feature_kinds())}",
                exit_code=2,
            )
        v = self.backbone(x)
        if kind == "backbone":
            return v
        if kind.startswith("head:"):
            parts = kind.split(":")
            head = self.heads[int(parts[1])]
            return head(v) if len(parts) == 3 else head[:-1](v)  # hidden: all but the last Linear
        layer = kind.split(":", 1)[1] if ":" in kind else "hidden"
        if layer == "out":
            return torch.cat([h(v) for h in self.heads], dim=1)
        hidden = torch.cat([h[:-1](v) for h in self.heads], dim=1)
        return torch.cat([hidden, v], dim=1) if layer == "hidden+v" else hidden
