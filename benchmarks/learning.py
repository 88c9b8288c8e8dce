"""Does pretraining learn? Every recipe at a CPU scale, several seeds, against both random-init baselines.

For each method and seed: pretrain with the recipe of ``--scale`` (the committed budget recipes), then
a weighted kNN (k 200, t 0.1) and the project's linear probe (``moco`` protocol on cached features,
no augmentation) on the embedded test split. The random-init baseline is the same architecture at
epoch 0, probed twice: with BN's initial running statistics and with them re-estimated on the training
images; a recipe's margin is measured against the higher of the two, per metric. Prints a table
(mean, sample std over seeds, margin, images/s, minutes per pretraining) and writes JSON.

    python benchmarks/learning.py --scale tiny --methods simclr,moco-v2-sym --seeds 3
    python benchmarks/learning.py --scale small --seeds 3 --json benchmarks/results/learning_small.json

``--set section.key=value`` overrides every recipe (e.g. a sweep); ``--dataset imagefolder:PATH``
pretrains and probes on an image folder instead of the embedded stand-in.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from cssl_bench import UserError  # noqa: E402
from cssl_bench.config import load_recipe  # noqa: E402
from cssl_bench.eval.features import load_run  # noqa: E402
from cssl_bench.eval.linear import get_protocol  # noqa: E402
from cssl_bench.eval.probes import probe_knn, probe_linear  # noqa: E402
from cssl_bench.pipeline.reproduce import run_spec  # noqa: E402
from cssl_bench.results.store import code_version  # noqa: E402
from cssl_bench.train.checkpoint import run_complete  # noqa: E402
from cssl_bench.train.loop import pretrain  # noqa: E402

ALL_METHODS = (
    "simclr",
    "moco-v1",
    "moco-v2",
    "byol",
    "swav",
    "simsiam",
    "simsiam-optimal",
    "looc",
    "looc++",
    "moco-rot",
    "moco-rot-same",
)


def _recipe(key: str, scale: str, seed: int, epochs: int | None, sets: list[str], dataset: str | None):
    """The recipe of a method name, or of a catalogue key (``moco-v2-sym``, see pipeline.reproduce) at its method's
    scale recipe plus the key's ``sets``; the catalogue's epochs and LooC augmentations are not applied (the scale
    recipe's epochs are what the demo trains; ``--epochs`` and ``--set`` change them)."""
    try:
        spec = run_spec(key, scale)
        method, spec_sets = spec.method, list(spec.sets)
    except UserError:  # not a catalogue key: a method name (load_recipe refuses an unknown one)
        method, spec_sets = key, []
    ov: dict = {"train": {"seed": seed}}
    if epochs is not None:
        ov["train"]["epochs"] = epochs
    if dataset:
        ov["data"] = {"dataset": dataset}
    return load_recipe(method, scale, ov, spec_sets + sets)


# Nuisance attributes of the embedded images (generator v2), binned into classes for a kNN probe: what the
# features encode besides the class. Continuous attributes are cut into NUISANCE_BINS equal-width bins.
NUISANCE = ("cx", "cy", "scale", "tilt", "light_angle", "bg_level", "context", "color", "fine")
NUISANCE_BINS = 5


def nuisance_knn(run, dataset: str = "embedded", feature: str = "backbone") -> dict[str, float]:
    """kNN top-1 (k 200, t 0.1) of the run's ``feature`` (default its backbone's) on each nuisance attribute of the
    embedded images (train split -> test split), binned; with chance (the most frequent bin's share) beside each."""
    import numpy as np

    from cssl_bench.data.datasets import get_source
    from cssl_bench.eval.features import features
    from cssl_bench.eval.knn import knn_predict
    from cssl_bench.train.loop import dataset_options

    opts = dataset_options(run.recipe)
    src = {s: get_source(dataset, s, opts) for s in ("train", "test")}
    f = {s: features(run, dataset, s, feature)[0] for s in ("train", "test")}
    out = {}
    for attr in NUISANCE:
        if attr not in src["train"].attributes:
            continue
        a, b = (np.asarray(src[s].attributes[attr]) for s in ("train", "test"))
        if a.dtype.kind == "f":
            edges = np.linspace(a.min(), a.max(), NUISANCE_BINS + 1)[1:-1]
            a, b = np.digitize(a, edges), np.digitize(b, edges)
        ya, yb = torch.from_numpy(a.astype(np.int64)), torch.from_numpy(b.astype(np.int64))
        pred = knn_predict(f["train"], ya, f["test"], 200, 0.1, int(max(ya.max(), yb.max())) + 1).argmax(1)
        out[attr] = round(100.0 * (pred == yb).float().mean().item(), 2)
        out[f"{attr}/chance"] = round(100.0 * np.bincount(b).max() / len(b), 2)
    return out


# LooC++ is the LooC model read out through the concatenation of its heads (LooC sec. 3): its rows probe the
# `looc` run's concat feature, as the tables do, instead of pretraining the same model again.
SAME_RUN_AS = {"looc++": ("looc", "concat")}


def _probe(
    run_dir: Path, dataset: str, bn_data: bool = False, nuisance: bool = False, feature: str | None = None
) -> dict[str, float]:
    run = load_run(run_dir)
    if bn_data:
        from cssl_bench.eval.baseline import reestimate_bn

        run = reestimate_bn(run, dataset)
    knn = next(r["value"] for r in probe_knn(run, dataset, feature=feature) if r["metric"] == "knn/top1")
    lin, _ = probe_linear(run, dataset, get_protocol("moco").with_overrides(augment=False), feature=feature)
    out = {"knn": knn, "linear": next(r["value"] for r in lin if r["metric"] == "linear/top1")}
    if nuisance and dataset == "embedded" and not bn_data:
        out.update({f"nuisance/{k}": v for k, v in nuisance_knn(run, dataset).items()})
    return out


def _pretrain(recipe, run_dir: Path) -> dict:
    done = run_complete(run_dir, recipe)
    t0 = time.time()
    if not done:
        pretrain(recipe, run_dir, resume=(run_dir / "config.yaml").exists(), show_progress=False)
    minutes = (time.time() - t0) / 60
    info = json.loads((run_dir / "run.json").read_text())
    steps = info.get("steps_done", 0)
    with open(run_dir / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    elapsed = float(log[-1]["elapsed_s"]) if log else 0.0
    images = steps * recipe.train.batch_size
    return {
        "minutes": round(elapsed / 60 if done else minutes, 2),
        "steps": steps,
        "images_per_s": round(images / elapsed, 1) if elapsed else None,
        "precision": info.get("precision", recipe.train.precision),
        "z_std_x_sqrt_dim": info.get("z_std_x_sqrt_dim"),
    }


def _stats(values: list[float]) -> dict:
    return {
        "values": values,
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="tiny", choices=("tiny", "small"))
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated methods or catalogue keys")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value for every recipe")
    ap.add_argument("--dataset", default=None, help="pretrain and probe on this dataset (default: the scale's)")
    ap.add_argument("--runs", type=Path, default=Path("runs/learning"))
    ap.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/learning_SCALE.json")
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init baselines")
    ap.add_argument("--baseline-only", action="store_true", help="only the random-init baselines")
    ap.add_argument(
        "--nuisance",
        action="store_true",
        help="also kNN-probe the features for each nuisance attribute of the embedded images (NUISANCE)",
    )
    a = ap.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    out_json = a.json or Path(__file__).parent / "results" / f"learning_{a.scale}.json"
    result: dict = {
        "scale": a.scale,
        "seeds": list(range(a.seeds)),
        "sets": a.sets,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
        },
        "command": "python benchmarks/learning.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "code_version": code_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baselines": {},
        "methods": {},
    }

    def dataset_of(recipe) -> str:
        return recipe.data.dataset

    if not a.no_baseline:
        per: dict[str, list[float]] = {}
        for seed in range(a.seeds):
            r = _recipe(methods[0], a.scale, seed, 0, a.sets, a.dataset)
            rd = a.runs / f"init-{r.method}-{r.hash()}"
            _pretrain(r, rd)
            for bn_data in (False, True):
                m = _probe(rd, dataset_of(r), bn_data, a.nuisance)
                for k, v in m.items():
                    per.setdefault(f"{k}/{'bn_data' if bn_data else 'init'}", []).append(v)
            print(
                f"random init seed {seed}: "
                + ", ".join(f"{k} {v[-1]:.2f}" for k, v in per.items() if "/chance" not in k),
                flush=True,
            )
        result["baselines"] = {k: _stats(v) for k, v in per.items()}
    for key in [] if a.baseline_only else methods:
        per = {}
        info = []
        run_key, feature = SAME_RUN_AS.get(key, (key, None))
        for seed in range(a.seeds):
            r = _recipe(run_key, a.scale, seed, a.epochs, a.sets, a.dataset)
            rd = a.runs / f"{run_key}-{r.hash()}"
            info.append({**_pretrain(r, rd), "run": rd.name})
            m = _probe(rd, dataset_of(r), nuisance=a.nuisance and feature is None, feature=feature)
            for k, v in m.items():
                per.setdefault(k, []).append(v)
            print(
                f"{key} seed {seed}: kNN {m['knn']:.2f} linear {m['linear']:.2f} ({info[-1]['minutes']} min)",
                flush=True,
            )
        entry = {k: _stats(v) for k, v in per.items()}
        entry.update(
            {
                "minutes": [i["minutes"] for i in info],
                "images_per_s": [i["images_per_s"] for i in info],
                "precision": info[0]["precision"],
                "z_std_x_sqrt_dim": [i["z_std_x_sqrt_dim"] for i in info],
                "runs": [i["run"] for i in info],
                "feature": feature or "default",
            }
        )
        for metric in ("knn", "linear"):
            base = [
                result["baselines"][f"{metric}/{b}"]["mean"]
                for b in ("init", "bn_data")
                if f"{metric}/{b}" in result["baselines"]
            ]
            if base:
                entry[metric]["margin_vs_best_init"] = round(entry[metric]["mean"] - max(base), 2)
        result["methods"][key] = entry
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=1))
    _print(result)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1))
    return result


def _fmt(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s.get("std") is not None else "")


def _margin(stats: dict) -> str:
    """The margin against the higher random-init baseline, "-" where no baseline was measured (--no-baseline)."""
    m = stats.get("margin_vs_best_init")
    return "-" if m is None else f"{m:+.1f}"


def _print(result: dict) -> None:
    print(f"\nlearning at scale {result['scale']}, seeds {result['seeds']}")
    b = result["baselines"]
    if b:
        print(f"random init (as initialised): kNN {_fmt(b.get('knn/init'))}, linear {_fmt(b.get('linear/init'))}")
        print(f"random init (BN on data):     kNN {_fmt(b.get('knn/bn_data'))}, linear {_fmt(b.get('linear/bn_data'))}")
    print(f"{'method':18s} {'kNN':>12s} {'margin':>7s} {'linear':>12s} {'margin':>7s} {'img/s':>7s} {'min':>5s}")
    for k, e in result["methods"].items():
        ips = [x for x in e["images_per_s"] if x]
        print(
            f"{k:18s} {_fmt(e['knn']):>12s} {_margin(e['knn']):>7s} "
            f"{_fmt(e['linear']):>12s} {_margin(e['linear']):>7s} "
            f"{statistics.fmean(ips) if ips else 0:>7.0f} {statistics.fmean(e['minutes']):>5.1f}"
        )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as e:  # a bad option or recipe key: one line, a non-zero exit (runs already made stay)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
