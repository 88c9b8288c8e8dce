"""Linear probes on frozen features (docs/protocols.md, section 2).

Named protocols:
- ``moco``: SGD lr 30, momentum 0.9, wd 0, batch 256, 100 epochs, lr x0.1 at 60 and 80;
- ``simsiam``: LARS, batch 4096, lr 0.1 * B / 256, cosine, 90 epochs, wd 0 (official repo; the paper text says 0.02),
  epochs of ImageNet's size: on a smaller set the probe makes the paper's number of updates (``paper_train_images``);
- ``looc``: SGD lr 30, batch 256, 200 epochs, x0.1 at 120 and 160.

``epochs`` overrides scale the milestones proportionally. With ``augment`` off (the default at the
CPU scales) the probe trains on cached centre-crop features; with it on, every epoch re-extracts
features of random-resized-crop + flip views (the paper setting, slow). ``feature_norm``: ``none``
(the papers) or ``bn`` (standardise features with training statistics; helps badly scaled features).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.optim import Lars

from cssl_bench import UserError
from cssl_bench.eval import progress
from cssl_bench.eval.knn import topk_accuracy


@dataclass
class LinearProtocol:
    name: str
    optimizer: str = "sgd"
    lr: float = 30.0
    lr_scaling: str = "none"  # none | linear (lr * batch / 256)
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 100
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [60, 80])
    augment: bool = True
    feature_norm: str = "none"
    seed: int = 0
    trust_coefficient: float = 0.001  # LARS only: apex LARC's trust coefficient in the SimSiam repo
    # 0: ``epochs`` are passes over the probe's training set. N > 0: ``epochs`` count passes over N images (the
    # paper's training set), so a probe on n images makes epochs * N / n passes: it sees the paper's number of
    # images (and makes its number of updates, up to the partial batch each pass drops).
    # The simsiam protocol's LARS moves each weight by ~lr * 0.001 of its norm per step and needs them: its 90
    # ImageNet epochs are 28k steps, 90 passes over the 10,000 embedded images 180, too few to train the probe
    # (the measurement: docs/protocols.md, section 2).
    paper_train_images: int = 0

    def with_overrides(self, names: dict[str, str] | None = None, **kw) -> LinearProtocol:
        """A copy with the given fields replaced (None: keep), validated; ``names`` maps a field to the option
        name an error message should use (e.g. ``{"epochs": "--linear-epochs"}``)."""
        kw = {k: v for k, v in kw.items() if v is not None}
        valid = {f.name for f in dataclasses.fields(self)}
        for k in kw:
            if k not in valid:
                raise UserError(f"unknown probe option {k}; valid: {', '.join(sorted(valid))}", exit_code=2)
        new = dataclasses.replace(self, **kw)
        new.validate(names)  # before the milestones divide by the new epochs
        if "epochs" in kw and "milestones" not in kw and self.schedule == "multistep":
            new.milestones = [m * new.epochs / self.epochs for m in self.milestones]
        return new

    def validate(self, names: dict[str, str] | None = None) -> None:
        """Refuse values that would train nothing or fail mid-probe (exit 2, naming the option and its range)."""
        names = {**OPTION_NAMES, **(names or {})}

        def bad(k: str, rule: str) -> UserError:
            return UserError(f"{names.get(k, k)} must be {rule}, got {getattr(self, k)!r}", exit_code=2)

        for k in ("epochs", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(k, "an integer >= 1")
        if not _number(self.lr) or not (0 < self.lr < math.inf):
            raise bad("lr", "a positive number")
        for k in ("momentum", "weight_decay"):
            if not _number(getattr(self, k)) or not (0 <= getattr(self, k) < math.inf):
                raise bad(k, "a number >= 0")
        if self.feature_norm not in ("none", "bn"):
            raise bad("feature_norm", "none or bn")
        if self.optimizer not in ("sgd", "lars"):
            raise bad("optimizer", "sgd or lars")
        if self.lr_scaling not in ("none", "linear"):
            raise bad("lr_scaling", "none or linear")

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256 if self.lr_scaling == "linear" else self.lr

    def record(self) -> dict:
        """The protocol as stored in records and in the classifier cache key. ``trust_coefficient`` appears only
        for LARS, so SGD protocols keep the records (and cached probes) they had before it existed; a LARS
        record without it was trained before LARS adapted with weight decay 0 (i.e. as plain SGD)."""
        d = dataclasses.asdict(self)
        if self.optimizer != "lars":
            d.pop("trust_coefficient")
        if not self.paper_train_images:  # likewise: protocols without it keep their records and cached probes
            d.pop("paper_train_images")
        return d

    def passes(self, n_train: int) -> int:
        """Passes over a training set of ``n_train`` images: ``epochs``, or with ``paper_train_images`` the passes
        that see the paper's number of images (``epochs * paper_train_images / n_train``), but never more updates
        than the paper made (``epochs * (paper_train_images // batch_size)``: a set smaller than one batch would
        otherwise train one step per image-count share, 450k steps for 256 images); rounded."""
        if not self.paper_train_images or n_train <= 0:
            return self.epochs
        by_images = self.epochs * self.paper_train_images / n_train
        paper_steps = self.epochs * max(1, self.paper_train_images // self.batch_size)
        by_steps = paper_steps / max(1, n_train // min(self.batch_size, n_train))
        return max(1, round(min(by_images, by_steps)))

    def for_scale(self, scale: str) -> LinearProtocol:
        """The protocol as a run of ``scale`` is probed by default: augmented views at paper scale, cached
        centre-crop features below it; at tiny (the CI and smoke budget) the literal epochs as passes over the
        training set (``paper_train_images`` off: the simsiam protocol's 90 passes, ~180 LARS steps on the
        embedded set, measure little), at small and paper the paper's number of images."""
        kw: dict = {"augment": scale == "paper"}
        if scale == "tiny":
            kw["paper_train_images"] = 0
        return self.with_overrides(**kw)

    def for_train_size(self, n_train: int) -> LinearProtocol:
        """The protocol as trained on ``n_train`` images: ``passes`` epochs, milestones scaled alike."""
        k = self.passes(n_train)
        if k == self.epochs:
            return self
        return dataclasses.replace(self, epochs=k, milestones=[m * k / self.epochs for m in self.milestones])


# How errors name the fields (the probe commands' options; ``evaluate`` names epochs --linear-epochs).
OPTION_NAMES = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "feature_norm": "--feature-norm",
    "optimizer": "linear-probe optimizer",
    "lr_scaling": "linear-probe lr_scaling",
    "momentum": "linear-probe momentum",
    "weight_decay": "linear-probe weight_decay",
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


IMAGENET_TRAIN_IMAGES = 1281167  # ImageNet-1k's training set, the simsiam protocol's epochs

PROTOCOLS = {
    "moco": LinearProtocol("moco"),
    "simsiam": LinearProtocol(
        "simsiam",
        optimizer="lars",
        lr=0.1,
        lr_scaling="linear",
        batch_size=4096,
        epochs=90,
        schedule="cosine",
        milestones=[],
        paper_train_images=IMAGENET_TRAIN_IMAGES,
    ),
    "looc": LinearProtocol("looc", epochs=200, milestones=[120, 160]),
}


def get_protocol(name: str) -> LinearProtocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown linear protocol {name!r}; choose from {', '.join(PROTOCOLS)}", exit_code=2)
    return PROTOCOLS[name]


def _factor(p: LinearProtocol, epoch: float) -> float:
    if p.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(p.epochs, 1)))
    if p.schedule == "multistep":
        return 0.1 ** sum(epoch >= m for m in p.milestones)
    return 1.0


class LinearClassifier(torch.nn.Module):
    """Optional feature standardisation (fixed train statistics) followed by a linear layer."""

    def __init__(self, dim: int, classes: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.fc = torch.nn.Linear(dim, classes)
        torch.nn.init.normal_(self.fc.weight, std=0.01)
        torch.nn.init.zeros_(self.fc.bias)
        self.register_buffer("mean", mean if mean is not None else torch.zeros(dim))
        self.register_buffer("std", std if std is not None else torch.ones(dim))

    def forward(self, f):
        return self.fc((f - self.mean) / self.std)


def train_linear(
    train_batches,
    dim: int,
    classes: int,
    p: LinearProtocol,
    steps_per_epoch: int,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> LinearClassifier:
    """Train a linear classifier; ``train_batches(epoch)`` yields (features, labels) batches of one epoch."""
    torch.manual_seed(p.seed)
    clf = LinearClassifier(dim, classes, mean, std)
    if p.optimizer == "lars":
        # always_adapt: the trust ratio applies to every parameter, as apex's LARC in the SimSiam repo's
        # main_lincls.py (timm's Lars otherwise adapts only when weight decay is non-zero: wd 0 would make it SGD)
        opt = Lars(
            clf.parameters(),
            lr=p.effective_lr,
            momentum=p.momentum,
            weight_decay=p.weight_decay,
            trust_coeff=p.trust_coefficient,
            always_adapt=True,
        )
    else:
        opt = torch.optim.SGD(clf.parameters(), lr=p.effective_lr, momentum=p.momentum, weight_decay=p.weight_decay)
    with progress.task(f"linear probe ({p.name}, {p.epochs} epochs)", p.epochs * steps_per_epoch) as advance:
        for epoch in range(p.epochs):
            for i, (f, y) in enumerate(train_batches(epoch)):
                for g in opt.param_groups:
                    g["lr"] = p.effective_lr * _factor(p, epoch + i / max(steps_per_epoch, 1))
                loss = F.cross_entropy(clf(f), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance()
    return clf


def fit_linear(train_f: torch.Tensor, train_y: torch.Tensor, p: LinearProtocol, classes: int) -> LinearClassifier:
    """Train a linear classifier on fixed (cached) features [N, D] with labels [N] in 0..classes-1."""
    n = train_f.shape[0]
    p = p.for_train_size(n)
    bs = min(p.batch_size, n)
    mean = std = None
    if p.feature_norm == "bn":
        mean, std = train_f.mean(0), train_f.std(0) + 1e-6
    g = torch.Generator().manual_seed(p.seed)

    def batches(epoch):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n - bs + 1, bs):
            idx = perm[s : s + bs]
            yield train_f[idx], train_y[idx]

    return train_linear(batches, train_f.shape[1], classes, p, n // bs, mean, std).eval()


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    p: LinearProtocol,
    classes: int | None = None,
) -> tuple[dict[str, float], LinearClassifier]:
    """Probe on fixed (cached) features; returns ({linear/top1, linear/top5}, classifier)."""
    classes = int(classes or int(max(train_y.max(), test_y.max())) + 1)
    clf = fit_linear(train_f, train_y, p, classes)
    with torch.no_grad():
        acc = topk_accuracy(clf(test_f), test_y)
    return {"linear/top1": acc[1], "linear/top5": acc[5]}, clf
