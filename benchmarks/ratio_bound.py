"""How far can ours/lightly go on a CPU at equal work? A bound from two profiles of the same step.

Reads the JSONs that ``benchmarks/profile_step.py`` writes for ours and for lightly (same method, config,
batch, precision), and prints per method: both step times, the measured ratio, the share of our step spent in
convolutions (forward ``aten::mkldnn_convolution`` / ``aten::convolution`` and ``aten::convolution_backward``:
the same oneDNN kernels on both sides, since the backbone, batch and input are the same), and the **bound**
lightly's step / our convolution time: the ratio ours would reach if every other operator of our step (BN,
activations, heads, loss, optimiser) cost nothing. A target above the bound cannot be met at equal work.

    python benchmarks/profile_step.py simclr --channels-last --batch 64 --out DIR            # ours
    python benchmarks/profile_step.py simclr --channels-last --batch 64 --lightly --out DIR  # lightly
    python benchmarks/ratio_bound.py DIR [--out benchmarks/results/ratio_bound-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import write_json  # noqa: E402

CONV_OPS = (
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::cudnn_convolution",
    "aten::_convolution_depthwise2d",
)


def conv_ms(profile: dict) -> float:
    """Self time per step of the convolution kernels (forward and backward) among the recorded operators."""
    return sum(r["self_ms_per_step"] for r in profile["top"] if r["name"] in CONV_OPS)


def bound_rows(profiles: list[dict]) -> list[dict]:
    """Pair each of our profiles with lightly's of the same method, config, batch, precision and memory format."""

    def key(p):
        return (p["method"], p["config"], p["batch"], p["precision"], p["channels_last"], tuple(p.get("sets", [])))

    lightly = {key(p): p for p in profiles if p["side"] == "lightly"}
    rows = []
    for p in sorted((p for p in profiles if p["side"] == "ours"), key=key):
        q = lightly.get(key(p))
        if q is None:
            continue
        if not all(any(r["name"] == "aten::convolution_backward" for r in x["top"]) for x in (p, q)):
            print(
                f"skipped {p['method']}: a profile records too few operators to hold the convolutions "
                "(profile with --top 40)",
                file=sys.stderr,
            )
            continue
        ours_ms, theirs_ms, conv = statistics.median(p["step_ms"]), statistics.median(q["step_ms"]), conv_ms(p)
        rows.append(
            {
                "method": p["method"],
                "config": p["config"],
                "batch": p["batch"],
                "precision": p["precision"],
                "ours_step_ms": round(ours_ms, 1),
                "lightly_step_ms": round(theirs_ms, 1),
                "ratio": round(theirs_ms / ours_ms, 3),
                "ours_conv_ms": round(conv, 1),
                "lightly_conv_ms": round(conv_ms(q), 1),
                "conv_share": round(conv / ours_ms, 3),
                "bound": round(theirs_ms / conv, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="folders holding profile_step.py JSONs")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    a = ap.parse_args(argv)
    files = sorted(f for d in a.dirs for f in d.glob("profile-*.json"))
    profiles = [json.loads(f.read_text()) for f in files]
    profiles = [p for p in profiles if p.get("benchmark") == "profile_step"]
    rows = bound_rows(profiles)
    if not rows:
        print(
            "error: no pair of ours/lightly profiles of the same step in " + ", ".join(map(str, a.dirs)),
            file=sys.stderr,
        )
        return 1
    print(
        f"{'method':9} {'config':7} {'batch':>5} {'ours ms':>9} {'lightly ms':>10} {'ratio':>6} {'conv share':>10} {'bound':>6}"
    )
    for r in rows:
        print(
            f"{r['method']:9} {r['config']:7} {r['batch']:5d} {r['ours_step_ms']:9.1f} {r['lightly_step_ms']:10.1f} "
            f"{r['ratio']:6.2f} {r['conv_share']:10.2f} {r['bound']:6.2f}"
        )
    if a.out:
        write_json(
            a.out,
            {
                "benchmark": "ratio_bound",
                "rows": rows,
                "machine": profiles[0].get("machine"),
                "profiles": [str(f) for f in files],
                "command": "python benchmarks/ratio_bound.py " + " ".join(sys.argv[1:]),
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
