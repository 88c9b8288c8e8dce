"""Weighted cosine k-nearest-neighbour classification (Wu et al. 2018, as used by MoCo/SimSiam demos).

Each test feature votes with its k most similar training features (cosine similarity), each vote
weighted by exp(sim / T). Returns top-1 and top-5 accuracy in percent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cssl_bench import UserError


def check_knn_options(
    k: int | None, temperature: float, k_name: str = "--k", temperature_name: str = "--temperature"
) -> None:
    """Refuse a k below 1 (None: the default) or a non-positive vote temperature, naming the option (exit 2)."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise UserError(f"{k_name} must be an integer >= 1, got {k!r}", exit_code=2)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (0 < temperature < math.inf):
        raise UserError(f"{temperature_name} must be a positive number, got {temperature!r}", exit_code=2)


@torch.no_grad()
def knn_predict(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores [N_test, C] of the weighted kNN vote."""
    c = int(num_classes or int(train_y.max()) + 1)
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    k = min(k, train_f.shape[0])
    out = []
    for s in range(0, test_f.shape[0], chunk):
        sim = test_f[s : s + chunk] @ train_f.t()
        w, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], c).scatter_add_(1, train_y[idx], (w / temperature).exp())
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    out = {}
    for k in ks:
        k_eff = min(k, scores.shape[1])
        top = scores.topk(k_eff, dim=1).indices
        out[k] = 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()
    return out


def knn_eval(train_f, train_y, test_f, test_y, k: int = 200, temperature: float = 0.1) -> dict[str, float]:
    c = int(max(train_y.max(), test_y.max())) + 1
    acc = topk_accuracy(knn_predict(train_f, train_y, test_f, k, temperature, c), test_y)
    return {"knn/top1": acc[1], "knn/top5": acc[5]}
