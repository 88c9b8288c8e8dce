"""Figures where people would rather look than read, drawn from the results store with matplotlib (Agg).

- ``methods`` (SimSiam Table 4): linear top-1 against pre-training epochs, ours beside the paper's
  (two panels, each with its own epoch axis: ours are the scale's budgets, the paper's 100..800).
- ``robustness`` (LooC Table 3): top-1 under each of the 15 corruptions (mean over the 5 severities),
  one bar per row of the table; the papers print no per-corruption numbers, so this is ours only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is ever needed
from matplotlib.figure import Figure  # noqa: E402

from cssl_bench import UserError  # noqa: E402
from cssl_bench.results import tables as T  # noqa: E402

# IN-C order (Hendrycks & Dietterich, 2019), grouped as in LooC Table 3: noise, blur, weather, digital.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
GROUP_ENDS = (3, 7, 11)  # a separator after the noise, blur and weather groups


def _save(fig: Figure, out: Path) -> Path:
    """Write the PNG atomically (a temporary file in the same folder, then a rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def methods_series(records: list[dict], scale: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{"ours": {row: [(our epochs, top-1)]}, "paper": {row: [(paper epochs, top-1)]}}``."""
    t = T.build("methods", records, scale)
    ours: dict = {}
    paper: dict = {}
    for i, row in enumerate(t.spec.rows):
        for j, (_h, c) in enumerate(zip(t.headers, t.cells)):
            if c is None:
                continue
            v = t.ours[i][j]
            if isinstance(v, T.Value):
                ours.setdefault(row.label, []).append((T.our_epochs(c.budget, scale), v.mean))
            pv = T.parse_paper(t.paper[i][j])
            if pv is not None:
                paper.setdefault(row.label, []).append((c.budget, pv))
    return {"ours": ours, "paper": paper}


def plot_methods(records: list[dict], scale: str, out: Path) -> Path:
    s = methods_series(records, scale)
    if not s["ours"]:
        raise UserError(
            f"no methods-table results at scale {scale}; run 'cssl-bench reproduce methods --scale {scale}' first"
        )
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, title, xlabel in (
        (axes[0], "ours", f"ours ({scale} scale)", "our pre-training epochs"),
        (axes[1], "paper", "paper (SimSiam Table 4)", "paper pre-training epochs"),
    ):
        for label, pts in s[key].items():
            pts = sorted(pts)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("linear top-1 (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Linear accuracy vs pre-training epochs")
    return _save(fig, out)


def corruption_bars(records: list[dict], scale: str) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """Corruption names and, per row of LooC Table 3, top-1 per corruption (mean over the severities recorded)."""
    t = T.build("robustness", records, scale)
    found = {
        m.split("/")[1]
        for m in (r.get("metric", "") for r in records)
        if m.startswith("corruption/") and m.count("/") == 2
    }
    names = [c for c in CORRUPTIONS if c in found] + sorted(found - set(CORRUPTIONS))
    out = []
    for i, row in enumerate(t.spec.rows):
        vals: list[float | None] = []
        for name in names:
            sev = []
            for k in range(1, 6):
                v = T.cell_value(records, row, T.Cell(f"corruption/{name}/s{k}", "inc100"), scale)
                if v is not None:
                    sev.append(v.mean)
            vals.append(sum(sev) / len(sev) if sev else None)
        if any(v is not None for v in vals):
            out.append((T.row_name(t, i), vals))
    return names, out


def plot_robustness(records: list[dict], scale: str, out: Path) -> Path:
    names, rows = corruption_bars(records, scale)
    if not rows:
        raise UserError(
            f"no per-corruption results at scale {scale}; run 'cssl-bench reproduce robustness --scale {scale}' first"
        )
    fig = Figure(figsize=(max(8, len(names) * 0.9), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for k, (label, vals) in enumerate(rows):
        xs = [i + (k - (len(rows) - 1) / 2) * width for i, v in enumerate(vals) if v is not None]
        ax.bar(xs, [v for v in vals if v is not None], width, label=label)
    for end in GROUP_ENDS:
        if end < len(names) and names[:end] == list(CORRUPTIONS[:end]):
            ax.axvline(end - 0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=45, ha="right")
    ax.set_ylabel("top-1 (%), mean over severities")
    ax.set_title(f"Corruption robustness per corruption (LooC Table 3 rows, ours at {scale} scale)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


PLOTS = {"methods": plot_methods, "robustness": plot_robustness}


def plot(name: str, records: list[dict], scale: str | None, out: Path) -> Path:
    spec = T.resolve(name)
    if spec.name not in PLOTS:
        raise UserError(f"no plot for table {spec.name}; plots exist for {', '.join(PLOTS)}", exit_code=2)
    return PLOTS[spec.name](records, T.pick_scale(records, scale), out)
