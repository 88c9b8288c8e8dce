"""Losses of every method, as pure functions (no module state). Shapes are stated per function.

All return scalar tensors except ``sinkhorn`` (a code matrix) and ``looc_masks`` (boolean masks).

Under mixed precision (``train.precision`` bf16 or fp16) every loss computes in float32 with autocast off
(``fp32_loss``), as the official implementations do (fp32 losses; SwAV's Sinkhorn in fp32): autocast would
otherwise run the similarity matmuls, ``log_softmax`` and ``cosine_similarity`` (on the CPU) in bf16, whose
8-bit mantissa is coarse next to a temperature of 0.1 (logits up to 10) or a loss near 0 (BYOL's 2 - 2 cos).
In fp32 training the wrapper does nothing: the numbers are bitwise those of the plain functions.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F


def fp32_region(device_type: str):
    """A context with autocast off on ``device_type`` when it is on there (else a no-op): the ops inside run
    in the dtype of their inputs (upcast them to float32 first)."""
    return torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) else nullcontext()


def upcast(x):
    """``x`` (a tensor, or tensors in lists/tuples) with bf16/fp16 tensors cast to float32; float32 and float64
    tensors are returned as they are (a float64 model stays float64)."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if isinstance(x, (list, tuple)):
        return type(x)(upcast(v) for v in x)
    return x


def _first_tensor(xs):
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x
        if isinstance(x, (list, tuple)):
            t = _first_tensor(x)
            if t is not None:
                return t
    return None


def fp32_loss(fn):
    """Run loss ``fn`` in float32: its tensor arguments (also inside lists) upcast, autocast off (gradients flow
    back to the reduced-precision tensors through the casts)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = _first_tensor(list(args) + list(kwargs.values()))
        with fp32_region(t.device.type) if t is not None else nullcontext():
            return fn(*upcast(args), **{k: upcast(v) for k, v in kwargs.items()})

    return wrapper


@fp32_loss
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1).

    z1, z2: [N, D] projections of the two views (normalised here). Each of the 2N views is an anchor;
    its positive is the other view of its image, its 2N-2 negatives are every other view in the batch.
    Returns the mean over the 2N anchors. Pass gathered tensors (``gather_with_grad``) for the
    multi-rank version.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@fp32_loss
def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, eq. 1): one positive per query plus shared negatives.

    q, k: [N, D] L2-normalised queries and keys (k is treated as a constant: it is detached);
    negatives: [K, D] L2-normalised (the queue). Returns the mean cross-entropy with the positive at index 0.
    """
    k = k.detach()
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ negatives.detach().t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@fp32_loss
def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)) (Chen & He 2021, eq. 1 and 3), mean over the batch.

    p: [N, D] predictions, z: [N, D] target projections (detached here; neither needs to be normalised).
    Returns a scalar in [-1, 1]; -1 when every p is parallel to its z.
    """
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


@fp32_loss
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss (Grill et al. 2020, eq. 2): 2 - 2 cos(p, stopgrad(z)) = ||p/|p| - z/|z|||^2, mean over the batch.

    p: [N, D] online predictions, z: [N, D] target projections (detached here). Returns a scalar in [0, 4].
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, distributed: bool = False
) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp (Caron et al. 2020, sec. 3.1 and Algorithm 1): equipartitioned soft codes.

    scores: [B, K] prototype scores (cosine similarities) of B samples. Returns Q: [B, K] (float32),
    each row summing to 1, with every prototype used equally often over the batch (column sums B/K).
    The codes are ``exp(scores / epsilon)`` rescaled by ``iterations`` alternating normalisations, so
    after 3 iterations rows sum to exactly 1 and columns approximately to B/K. With ``distributed`` the
    sums and B run over every rank's batch (one global transport problem).
    """
    s = scores.float()
    world = dist.get_world_size() if distributed and dist.is_available() and dist.is_initialized() else 1
    # Subtracting a constant only rescales Q, which the first normalisation undoes; it must be the same
    # constant on every rank, otherwise the ranks' codes are scaled differently before the shared sums.
    shift = s.max()
    if world > 1:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((s - shift) / epsilon).t()  # [K, B]
    k, b = q.shape[0], q.shape[1] * world
    total = q.sum()
    if world > 1:
        dist.all_reduce(total)
    q /= total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)  # [K, 1]: mass of each prototype over the (global) batch
        if world > 1:
            dist.all_reduce(rows)
        q /= rows
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # [1, B]: each sample's mass
        q /= b
    return (q * b).t()


@fp32_loss
def swav_loss(
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    codes_a: torch.Tensor,
    codes_b: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """SwAV's swapped prediction: predict view a's code from view b's scores and vice versa.

    scores_*: [N, K] prototype scores; codes_*: [N, K] Sinkhorn codes (constants).
    Returns 0.5 * (H(codes_a, softmax(scores_b / t)) + H(codes_b, softmax(scores_a / t))), mean over N.
    """
    la = -(codes_a.detach() * F.log_softmax(scores_b / temperature, dim=1)).sum(dim=1).mean()
    lb = -(codes_b.detach() * F.log_softmax(scores_a / temperature, dim=1)).sum(dim=1).mean()
    return 0.5 * (la + lb)


def looc_masks(n: int) -> torch.Tensor:
    """Positive masks of LooC's n+1 embedding spaces over the keys k0..kn of the query's own image.

    Returns a bool tensor [n+1 spaces, n+1 keys]: space 0 (invariant to all) has every key positive;
    space i (varies with augmentation i) has only k_i positive, the other keys of the image are negatives.
    n = 0 (no variance head, LooC Table 5's first row) leaves Z0 alone: [[True]], MoCo's InfoNCE.
    """
    if n < 0:
        raise ValueError(f"the number of LooC variance heads must be >= 0, got n={n}")
    m = torch.zeros(n + 1, n + 1, dtype=torch.bool)
    m[0] = True
    for i in range(1, n + 1):
        m[i, i] = True
    return m


@fp32_loss
def looc_loss(
    queries: list[torch.Tensor], keys: list[torch.Tensor], queues: list[torch.Tensor], temperature: float = 0.2
) -> torch.Tensor:
    """LooC (Xiao et al. 2021): one InfoNCE per embedding space, summed over the n+1 spaces.

    queries[s]: [N, D] normalised q embedded by head s (s = 0..n); keys[s]: [n+1, N, D] normalised
    k0..kn embedded by head s's key head (keys are constants: detached); queues[s]: [K_s, D] head s's
    queue (other images' keys). In space s, every positive j of ``looc_masks(n)[s]`` gives one InfoNCE
    term with logits [q.k_j, q.(the image's own keys that are negatives in s), q.queue] / t: in Z_i the
    negatives are k0 and every k_j (j != i) of the same image plus the queue; in Z0 (n+1 positives, no
    own negatives) the other positives stay out of the denominator and the n+1 terms are averaged
    [open: docs/protocols.md, section 1]. Returns the sum over the n+1 spaces (a scalar).
    """
    masks = looc_masks(len(queries) - 1)
    total = queries[0].new_zeros(())
    for s, (q, k, queue) in enumerate(zip(queries, keys, queues)):
        k = k.detach()
        own = torch.einsum("nd,vnd->nv", q, k) / temperature  # [N, n+1]
        other = q @ queue.detach().t() / temperature  # [N, K]
        pos_idx = masks[s].nonzero().flatten().tolist()
        neg_idx = (~masks[s]).nonzero().flatten().tolist()
        terms = []
        for j in pos_idx:
            logits = torch.cat([own[:, j : j + 1], own[:, neg_idx], other], dim=1)
            terms.append(F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device)))
        total = total + torch.stack(terms).mean()
    return total


@fp32_loss
def swav_multicrop_loss(
    scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """SwAV with multi-crop: the codes of each large crop (``codes[i]``, i < len(codes)) are predicted
    from every other crop's scores; mean over code crops and their partner crops.

    scores: one [N, K] tensor (prototype scores) per crop, the code crops first; codes: one [N, K]
    Sinkhorn code matrix per code crop (SwAV: the two large crops), codes[i] belonging to scores[i].
    Returns sum_i mean_{v != i} H(codes[i], softmax(scores[v] / t)) / len(codes). With two crops and
    two code crops this equals ``swav_loss``.
    """
    total = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        others = [s for v, s in enumerate(scores) if v != i]
        total = total + sum(-(q.detach() * F.log_softmax(s / temperature, dim=1)).sum(1).mean() for s in others) / len(
            others
        )
    return total / len(codes)
