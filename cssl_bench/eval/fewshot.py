"""Few-shot linear classification on frozen features (LooC Table 2/5, Flowers-102 5- and 10-shot).

Per trial, ``sample_kshot`` draws exactly K images of every class (without replacement) from the
training pool (``pool``: the train split, or train + val where a dataset has one, see ``resolve_pool``)
with a generator seeded by (seed, K, trial); a scikit-learn ``LogisticRegression`` (L-BFGS, L2 penalty,
inverse strength ``C``) is fitted on the L2-normalised features of those K x C images and scored on the
whole test split. Reported: mean top-1 over T trials and the 95% confidence half-width of that mean,
``t``: t_{0.975, T-1} * s / sqrt(T) with s the sample standard deviation (the default), or ``normal``:
1.96 * s / sqrt(T). The layout is ``70.9 (±0.3)`` (``format_ci``). Every choice here is [open] in
docs/protocols.md, section 2 and recorded with the result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.eval import progress
from cssl_bench.eval.features import LoadedRun, features
from cssl_bench.eval.probes import records_for


@dataclass
class FewShotProtocol:
    shots: list[int] = field(default_factory=lambda: [5, 10])
    trials: int = 10
    seed: int = 0
    # Weak regularisation: L2-normalised ReLU features sit in a narrow cone (high mutual cosine), where
    # scikit-learn's default C=1 underfits K-shot sets (docs/protocols.md, section 2, has the measurement).
    C: float = 100.0
    max_iter: int = 1000
    ci: str = "t"  # t | normal
    pool: str = "auto"  # splits the shots are drawn from: train | train+val | auto (train+val where the dataset has a val split)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Refuse options that would fail mid-probe (exit 2, naming the option and its range)."""

        def integer(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not self.shots or not all(integer(k) and k >= 1 for k in self.shots):
            raise UserError(
                f"--shots must be one or more integers >= 1, got {','.join(map(str, self.shots)) or 'none'}",
                exit_code=2,
            )
        if not integer(self.trials) or self.trials < 1:
            raise UserError(f"--trials must be an integer >= 1, got {self.trials!r}", exit_code=2)
        if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not (0 < self.C < math.inf):
            raise UserError(f"--C must be a positive number, got {self.C!r}", exit_code=2)
        if not integer(self.max_iter) or self.max_iter < 1:
            raise UserError(f"few-shot max_iter must be an integer >= 1, got {self.max_iter!r}", exit_code=2)
        if self.ci not in ("t", "normal"):
            raise UserError(f"--ci must be t or normal, got {self.ci!r}", exit_code=2)
        if self.pool not in ("train", "train+val", "auto"):
            raise UserError(f"--pool must be train, train+val or auto, got {self.pool!r}", exit_code=2)

    def record(self) -> dict:
        return {"name": "fewshot", "classifier": "logistic-regression", "normalize": "l2", **asdict(self)}


def sample_kshot(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of exactly ``k`` items of every class present in ``labels`` (sorted, no repeats)."""
    labels = np.asarray(labels)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise UserError(f"class {int(c)} has only {len(idx)} training images, fewer than {k} shots", exit_code=2)
        out.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(out))


def mean_ci95(values: list[float] | np.ndarray, method: str = "t") -> tuple[float, float]:
    """(mean, 95% half-width of the mean); a single value has half-width 0."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    s = float(v.std(ddof=1))
    if method == "t":
        from scipy.stats import t as student_t

        q = float(student_t.ppf(0.975, len(v) - 1))
    elif method == "normal":
        q = 1.96
    else:
        raise UserError(f"unknown confidence interval {method!r}; choose t or normal", exit_code=2)
    return float(v.mean()), q * s / math.sqrt(len(v))


def format_ci(mean: float, half: float, digits: int = 1) -> str:
    """The papers' layout: ``70.9 (±0.3)``."""
    return f"{mean:.{digits}f} (±{half:.{digits}f})"


def _l2(f: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(f.double(), dim=1).numpy()


def fewshot_eval(
    train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, p: FewShotProtocol
) -> dict[int, list[float]]:
    """Per shot count K: the T trial accuracies (percent)."""
    from sklearn.linear_model import LogisticRegression

    if p.trials < 1:
        raise UserError(f"trials must be >= 1, got {p.trials}", exit_code=2)
    xtr, xte = _l2(train_f), _l2(test_f)
    ytr, yte = train_y.numpy(), test_y.numpy()
    out: dict[int, list[float]] = {}
    with progress.task(
        f"few-shot ({', '.join(map(str, p.shots))} shots x {p.trials} trials)", len(p.shots) * p.trials
    ) as advance:
        for k in p.shots:
            if k < 1:
                raise UserError(f"shots must be >= 1, got {k}", exit_code=2)
            accs = []
            for t in range(p.trials):
                idx = sample_kshot(ytr, k, np.random.default_rng([p.seed, k, t]))
                clf = LogisticRegression(C=p.C, max_iter=p.max_iter)
                clf.fit(xtr[idx], ytr[idx])
                accs.append(100.0 * float((clf.predict(xte) == yte).mean()))
                advance()
            out[k] = accs
    return out


def probe_fewshot(
    run: LoadedRun, dataset: str, p: FewShotProtocol | None = None, feature: str | None = None
) -> list[dict]:
    """``fewshot/{K}shot`` records: value = mean over trials, ``ci95`` = the half-width."""
    p = p or FewShotProtocol()
    feature = feature or run.default_feature
    pool = resolve_pool(dataset, p.pool)
    parts = [features(run, dataset, split, feature) for split in pool.split("+")]
    tf, ty = torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])
    vf, vy = features(run, dataset, "test", feature)
    accs = fewshot_eval(tf, ty, vf, vy, p)
    metrics, ci = {}, {}
    for k, a in accs.items():
        metrics[f"fewshot/{k}shot"], ci[f"fewshot/{k}shot"] = mean_ci95(a, p.ci)
    return records_for(run, dataset, feature, {**p.record(), "pool": pool}, metrics, ci95=ci)


def resolve_pool(dataset: str, pool: str) -> str:
    """``auto``: ``train+val`` for datasets with a val split (Flowers-102's train split holds exactly 10
    images per class, so 10-shot draws from it alone would all be the same), else ``train``."""
    from cssl_bench.data.datasets import REGISTRY

    if pool == "auto":
        info = REGISTRY.get(dataset)
        return "train+val" if info is not None and "val" in info.splits else "train"
    if pool not in ("train", "train+val"):
        raise UserError(f"few-shot pool must be train, train+val or auto, got {pool!r}", exit_code=2)
    return pool
