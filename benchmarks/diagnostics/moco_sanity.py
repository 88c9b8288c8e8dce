"""MoCo v2 (tiny recipe) on the easiest pretext task: 120 steps on 2,048 embedded images whose two views differ by
a one-pixel shift. Prints, every 10 steps, the loss, the positive-pair accuracy against the queue, the mean
cosine between different queries of the batch, and the fraction of the head's hidden units that are zero for
every sample of the batch (dead ReLUs). Arguments are recipe overrides (section.key=value):

    python benchmarks/diagnostics/moco_sanity.py params.temperature=0.07 params.head_bn=true

A loss that settles at ln(queue + 1) means every logit is equal; a mean query cosine near 1 means the head
outputs (almost) the same vector for every image: collapse.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from cssl_bench.config import load_recipe  # noqa: E402
from cssl_bench.data.datasets import get_source  # noqa: E402
from cssl_bench.data.loader_base import to_input  # noqa: E402
from cssl_bench.eval.features import dataset_options  # noqa: E402
from cssl_bench.methods import build_method  # noqa: E402
from cssl_bench.methods.base import update_momentum_pairs  # noqa: E402
from cssl_bench.train.optim import build_optimizer  # noqa: E402

STEPS, BATCH, IMAGES = 120, 128, 2048


def main(overrides: list[str]) -> None:
    torch.manual_seed(0)
    r = load_recipe("moco-v2", "tiny", {}, overrides)
    m = build_method(r)
    opt = build_optimizer(m, r)
    m.train()
    src = get_source("embedded", "train", dataset_options(r))
    images = torch.stack([src.image(i) for i in range(IMAGES)])
    hidden = {}
    relu = [mod for mod in m.head.modules() if isinstance(mod, torch.nn.ReLU)][0]
    relu.register_forward_hook(lambda _m, _i, o: hidden.__setitem__("h", o.detach()))
    g = torch.Generator().manual_seed(0)
    print("step loss pos_acc query_cos dead_hidden")
    for step in range(STEPS):
        x = to_input(images[torch.randint(0, IMAGES, (BATCH,), generator=g)], r.model.channels_last)
        out = m({"v1": x, "v2": torch.roll(x, 1, dims=3)}, torch.zeros(BATCH, dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        m.after_backward(0)
        opt.step()
        update_momentum_pairs(m.momentum_pairs, m.momentum(step / STEPS))
        if step % 10 == 0 or step == STEPS - 1:
            with torch.no_grad():
                q = m.query(x)
                cos = (q @ q.t() - torch.eye(BATCH)).sum() / (BATCH * (BATCH - 1))
                dead = (hidden["h"] <= 0).all(0).float().mean()
            print(
                step,
                round(out["loss"].item(), 3),
                round(float(out["pos_acc"]), 3),
                round(cos.item(), 3),
                round(dead.item(), 3),
                flush=True,
            )


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="recipe overrides section.key=value (MoCo v2's tiny recipe)")
    main(ap.parse_args().overrides)
