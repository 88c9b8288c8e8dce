"""Supervised baseline (the "Supervised" rows of LooC Tables 1 and 3): cross-entropy on the labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from cssl_bench.methods.base import Method, parse_params


@dataclass
class SupervisedParams:
    num_classes: int = 0  # 0: taken from the dataset
    label_smoothing: float = 0.0


class Supervised(Method):
    description = "Supervised: cross-entropy on the training labels (reference rows)"
    paper = "He et al., Deep Residual Learning, CVPR 2016"

    def __init__(self, recipe, num_classes: int = 10):
        super().__init__(recipe)
        self.p = parse_params(SupervisedParams, recipe.params, recipe.method)
        self.classifier = nn.Linear(self.feat_dim, self.p.num_classes or num_classes)

    def loss(self, views, labels):
        logits = self.classifier(self.backbone(views["v1"]))
        return {
            "loss": F.cross_entropy(logits, labels, label_smoothing=self.p.label_smoothing),
            "acc": (logits.argmax(1) == labels).float().mean(),
        }
