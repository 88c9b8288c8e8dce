"""Where do a trained SwAV run's embeddings lie relative to its prototypes?

SwAV's loss sits at ln(number of prototypes) when every prediction is uniform. For each run (the last checkpoint
of a SwAV run directory) this embeds one batch of first large crops (the run's own augmentations, fixed seed) as
the training step does, normalises the prototypes, and prints the mean |score| z.c, the std of the scores over
the prototypes (0: uniform predictions), the fraction of each embedding's norm inside the prototypes' span, and
the mean cosine between prototypes.

    python benchmarks/swav_span.py RUN [RUN ...] [--batch 128] [--json OUT.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from moco_shortcut import cli_main, views_of  # noqa: E402  (also sets OMP_WAIT_POLICY and the import path)

from cssl_bench.config import recipe_from_dict  # noqa: E402
from cssl_bench.methods import build_method  # noqa: E402
from cssl_bench.methods.swav import _crop_order  # noqa: E402
from cssl_bench.train.checkpoint import load_checkpoint, read_run  # noqa: E402


def span_stats(z: torch.Tensor, prototypes: torch.Tensor) -> dict[str, float]:
    """z: [N, D] unit embeddings; prototypes: [K, D] unit rows."""
    s = z @ prototypes.t()
    q, _ = torch.linalg.qr(prototypes.t())  # an orthonormal basis of the prototypes' span, [D, min(K, D)]
    k = prototypes.shape[0]
    cos = prototypes @ prototypes.t()
    return {
        "n_prototypes": k,
        "dim": prototypes.shape[1],
        "abs_score": s.abs().mean().item(),
        "score_std": s.std(1).mean().item(),
        "norm_in_span": (z @ q).norm(dim=1).mean().item(),
        "prototype_cos": ((cos.sum() - cos.diagonal().sum()) / (k * k - k)).item(),
    }


def measure(run: Path, batch: int) -> dict:
    cfg, _ = read_run(run)
    recipe = recipe_from_dict(cfg)
    if recipe.method != "swav":
        raise SystemExit(f"{run}: method {recipe.method} is not SwAV")
    m = build_method(recipe)
    m.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    views = views_of(recipe, batch)
    first = "v1" if "v1" in views else _crop_order(views)[0][0]  # the first large crop
    m.train()
    with torch.no_grad():
        z = m._embed([views[first]])[0]
        stats = span_stats(z, F.normalize(m.prototypes.weight, dim=1))
    return {"run": str(run), "config_hash": recipe.hash(), **stats}


def main() -> None:
    cli_main(
        "swav_span",
        __doc__,
        measure,
        ["n_prototypes", "dim", "abs_score", "score_std", "norm_in_span", "prototype_cos"],
    )


if __name__ == "__main__":
    main()
