"""Optimisers and learning-rate schedules.

Parameter groups: with ``exclude_bn_bias`` the 1-d parameters (BN weights and biases) get no weight
decay and no LARS adaptation (each group says so with ``always_adapt``: timm's ``Lars`` would otherwise
adapt exactly the groups with weight decay, so a LARS recipe with ``weight_decay: 0`` would silently be
SGD). Parameters whose name starts with one of ``fixed_lr`` keep the base learning rate (SimSiam's
predictor). LARS is timm's implementation.
"""

from __future__ import annotations

import math

import torch
from timm.optim import Lars

from cssl_bench.config import Recipe


def param_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict]:
    o = recipe.optim
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = o.exclude_bn_bias and p.ndim <= 1
        fixed = any(name.startswith(prefix) for prefix in o.fixed_lr)
        groups.setdefault((no_wd, fixed), []).append(p)
    return [
        {"params": ps, "weight_decay": 0.0 if no_wd else o.weight_decay, "fixed_lr": fixed, "always_adapt": not no_wd}
        for (no_wd, fixed), ps in sorted(groups.items())
    ]


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    o, lr = recipe.optim, recipe.lr
    groups = param_groups(model, recipe)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "lars":
        return Lars(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, trust_coeff=o.lars_trust)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=o.weight_decay)


def lr_factor(recipe: Recipe, epoch: float) -> float:
    """Multiplier of the base lr at fractional ``epoch``: linear warm-up from ``warmup_start`` to 1, then cosine
    down to ``final_lr`` / steps / constant. With ``schedule_unit: epoch`` the whole schedule is read at the
    epoch's start (the lr changes once an epoch, as in the MoCo and SimSiam code)."""
    o, total = recipe.optim, max(recipe.train.epochs, 1)
    if o.schedule_unit == "epoch":
        epoch = math.floor(epoch + 1e-9)
    if o.warmup_epochs > 0 and epoch < o.warmup_epochs:
        a = (epoch + 1e-8) / o.warmup_epochs
        return o.warmup_start + (1 - o.warmup_start) * a
    if o.schedule == "cosine":
        t = (epoch - o.warmup_epochs) / max(total - o.warmup_epochs, 1e-8)
        return o.final_lr + (1 - o.final_lr) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    if o.schedule == "multistep":
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: float) -> float:
    lr = recipe.lr * lr_factor(recipe, epoch)
    for g in optimizer.param_groups:
        g["lr"] = recipe.lr if g.get("fixed_lr") else lr
    return lr
