"""Figures where people would rather look than read, drawn from the results store with matplotlib (Agg).

One PNG per table (``PLOTS``; ``cssl-bench plot NAME|all``, and ``reproduce`` draws those of the tables it
reproduced). Every figure shows our cells with seed error bars (the sample std across seeds, ddof 1, where a cell
has several seeds; none for one seed) and, where the store holds random-init records of the column's metric and
dataset at that scale, the higher of the two random-init baselines (epoch 0 probed as initialised, and with BN
statistics re-estimated on data: ``tables.random_init_baselines``) as a dashed horizontal line; the legend says
where there is none.

- ``methods`` (SimSiam Table 4): linear top-1 against pre-training epochs, ours beside the paper's
  (two panels, each with its own epoch axis: ours are the scale's budgets, the paper's 100..800).
- ``robustness`` (LooC Table 3): a bar panel per metric column, then top-1 under each of the 15 corruptions (mean
  over the 5 severities), one bar per row of the table; the papers print no per-corruption numbers, so these are
  ours only.
- the others (``transfer``, ``rotation``, ``finegrained``, ``heads``): a bar panel per metric column, one bar per
  row of the table (ours only).

The drawing functions return a ``TableFigure``: the PNG's path and the numbers drawn (``Panel``), the same that
``table_figure`` computes without drawing.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is ever needed
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

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


@dataclass
class Panel:
    """One metric column of a table as drawn. Per row of the table (``rows``: ``tables.row_name``): our ``means``
    (None: no value), ``errors`` (the sample std across seeds, ddof 1; None for one seed or no value), ``seeds``
    (0: no value) and the ``paper`` numbers. ``baseline``: the mean of the higher random-init baseline of the
    column's metric on its dataset (the table caption's, ``Rendered.baselines``; None: no such records, or a
    detection column), ``baseline_kind`` which one (a key of ``tables.BASELINE_LABELS``) and ``baseline_seeds``
    its seeds."""

    header: str
    cell: T.Cell
    dataset: str
    rows: list[str]
    means: list[float | None]
    errors: list[float | None]
    seeds: list[int]
    paper: list[float | None]
    baseline: float | None = None
    baseline_kind: str | None = None
    baseline_seeds: int = 0


@dataclass
class TableFigure:
    """A table's figure: one ``Panel`` per metric column, in the table's order; ``path``: the PNG once drawn;
    ``corruptions``: the robustness figure's per-corruption bars (``corruption_bars``), else None."""

    table: str
    scale: str
    panels: list[Panel]
    path: Path | None = None
    corruptions: tuple[list[str], list[tuple[str, list[float | None]]]] | None = None

    def has_ours(self) -> bool:
        return any(m is not None for p in self.panels for m in p.means)


def table_figure(name: str, records: list[dict], scale: str | None) -> TableFigure:
    """The numbers table ``name``'s figure draws at ``scale`` (default: the newest record's), without drawing."""
    t = T.build(name, records, scale)
    rows = [T.row_name(t, i) for i in range(len(t.ours))]
    panels = []
    for j, (header, c) in enumerate(zip(t.headers, t.cells)):
        if c is None:
            continue
        vals = [o[j] if isinstance(o[j], T.Value) else None for o in t.ours]
        base = t.baselines.get(header)  # the table caption's: ("init" | "data", Value); None for detection
        panels.append(
            Panel(
                header,
                c,
                T.stand_in(c.role, t.scale),
                rows,
                [None if v is None else v.mean for v in vals],
                [v.std if v is not None and v.n > 1 else None for v in vals],
                [0 if v is None else v.n for v in vals],
                [T.parse_paper(p[j]) for p in t.paper],
                None if base is None else base[1].mean,
                None if base is None else base[0],
                0 if base is None else base[1].n,
            )
        )
    return TableFigure(t.spec.name, t.scale, panels)


def methods_series(records: list[dict], scale: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{"ours": {row: [(our epochs, top-1)]}, "paper": {row: [(paper epochs, top-1)]}}`` of SimSiam Table 4."""
    return _series(table_figure("methods", records, scale))


def _series(tf: TableFigure) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """The methods figure's points from its panels (one per epoch column), per row in the table's order."""
    ours: dict = {}
    paper: dict = {}
    for i, label in enumerate(r.label for r in T.TABLES["methods"].rows):
        for p in tf.panels:
            if p.means[i] is not None:
                ours.setdefault(label, []).append((T.our_epochs(p.cell.budget, tf.scale), p.means[i]))
            if p.paper[i] is not None:
                paper.setdefault(label, []).append((p.cell.budget, p.paper[i]))
    return {"ours": ours, "paper": paper}


def _no_results(name: str, scale: str) -> UserError:
    return UserError(
        f"no {name}-table results at scale {scale}; run 'cssl-bench reproduce {name} --scale {scale}' first"
    )


BASELINE_LINE = "higher random-init baseline (as initialised / BN on data)"
ERROR_BARS = "error bars: sample std over seeds (none for one seed)"


def _baseline_note(panels: list[Panel]) -> str | None:
    """The legend's line for the columns without a baseline line; None when every column has one."""
    missing = [p.header for p in panels if p.baseline is None]
    if not missing:
        return None
    if len(missing) == len(panels):
        return "no random-init baseline records: no dashed line"
    if len(missing) <= 3:
        return "no random-init baseline records for " + ", ".join(missing)
    return f"no random-init baseline records for {len(missing)} of {len(panels)} columns (no dashed line there)"


def _legend_extras(panels: list[Panel]) -> list:
    out: list = [Line2D([], [], ls="none", label=ERROR_BARS)]
    if any(p.baseline is not None for p in panels):
        out.append(Line2D([], [], ls="--", color="black", lw=1.2, label=BASELINE_LINE))
    note = _baseline_note(panels)
    if note:
        out.append(Line2D([], [], ls="none", label=note))
    return out


def _row_colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _draw_panel(ax, p: Panel, colors: list) -> None:
    have = [i for i, m in enumerate(p.means) if m is not None]
    ax.bar(have, [p.means[i] for i in have], 0.8, color=[colors[i] for i in have])
    spread = [i for i in have if p.errors[i] is not None]
    if spread:
        ax.errorbar(
            spread,
            [p.means[i] for i in spread],
            [p.errors[i] for i in spread],
            fmt="none",
            ecolor="black",
            capsize=3,
            lw=1,
        )
    for i, m in enumerate(p.means):
        if m is None:
            ax.text(i, 0, T.MISSING, ha="center", va="bottom", fontsize=8, color="grey")
    if p.baseline is not None:
        ax.axhline(p.baseline, ls="--", color="black", lw=1.2)
    ax.set_xticks(range(len(p.rows)))
    ax.set_xticklabels([str(i + 1) for i in range(len(p.rows))], fontsize=7)
    ax.set_xlim(-0.6, len(p.rows) - 0.4)
    ax.set_title(f"{p.header}\n{p.cell.metric} on {p.dataset}", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)


def _draw_table(tf: TableFigure, title: str, extra_height: float = 0.0):
    """A figure of one bar panel per metric column (up to 4 a line), a row's colour the same in every panel, and
    its legend; returns the figure and its grid spec (with an extra full-width line at the bottom when
    ``extra_height`` > 0)."""
    n = len(tf.panels)
    ncols = min(4, n)
    nlines = math.ceil(n / ncols)
    heights = [1.0] * nlines + ([extra_height] if extra_height else [])
    fig = Figure(figsize=(3.2 * ncols + 0.5, 2.9 * sum(heights) + 1.2))
    gs = fig.add_gridspec(len(heights), ncols, height_ratios=heights, hspace=0.6, wspace=0.3)
    colors = _row_colors(len(tf.panels[0].rows))
    for k, p in enumerate(tf.panels):
        _draw_panel(fig.add_subplot(gs[k // ncols, k % ncols]), p, colors)
    handles: list = [Patch(color=colors[i], label=f"{i + 1}. {r}") for i, r in enumerate(tf.panels[0].rows)]
    handles += _legend_extras(tf.panels)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title)
    return fig, gs


def plot_table(name: str, records: list[dict], scale: str, out: Path) -> TableFigure:
    """A bar panel per metric column of table ``name`` (ours, with seed error bars and the baseline line)."""
    tf = table_figure(name, records, scale)
    if not tf.has_ours():
        raise _no_results(tf.table, tf.scale)
    fig, _ = _draw_table(tf, f"{T.TABLES[tf.table].caption.split(':')[0]}: ours at {tf.scale} scale")
    tf.path = _save(fig, out)
    return tf


def plot_methods(records: list[dict], scale: str, out: Path) -> TableFigure:
    """Linear top-1 against pre-training epochs: ours (seed error bars, the baseline line) beside the paper's."""
    tf = table_figure("methods", records, scale)
    if not tf.has_ours():
        raise _no_results("methods", tf.scale)
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
    labels = [r.label for r in T.TABLES["methods"].rows]
    for i, label in enumerate(labels):
        pts = sorted(
            (
                (T.our_epochs(p.cell.budget, tf.scale), p.means[i], p.errors[i])
                for p in tf.panels
                if p.means[i] is not None
            ),
            key=lambda pt: pt[0],
        )
        if not pts:
            continue
        (line,) = axes[0].plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", label=label)
        spread = [(x, y, e) for x, y, e in pts if e is not None]
        if spread:
            axes[0].errorbar(
                [x for x, _, _ in spread],
                [y for _, y, _ in spread],
                [e for _, _, e in spread],
                fmt="none",
                ecolor=line.get_color(),
                capsize=3,
            )
    for b in sorted({p.baseline for p in tf.panels if p.baseline is not None}):
        axes[0].axhline(b, ls="--", color="black", lw=1.2)
    for label, pts in _series(tf)["paper"].items():
        pts = sorted(pts)
        axes[1].plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    for ax, title, xlabel in (
        (axes[0], f"ours ({tf.scale} scale)", "our pre-training epochs"),
        (axes[1], "paper (SimSiam Table 4)", "paper pre-training epochs"),
    ):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("linear top-1 (%)")
        ax.grid(alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    axes[0].legend(handles=handles + _legend_extras(tf.panels), fontsize=7)
    axes[1].legend(fontsize=8)
    fig.suptitle("Linear accuracy vs pre-training epochs")
    tf.path = _save(fig, out)
    return tf


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


def plot_robustness(records: list[dict], scale: str, out: Path) -> TableFigure:
    """A bar panel per metric column of LooC Table 3, then the per-corruption bars (``corruption_bars``)."""
    tf = table_figure("robustness", records, scale)
    names, rows = corruption_bars(records, tf.scale)
    if not tf.has_ours() and not rows:
        raise _no_results("robustness", tf.scale)
    tf.corruptions = (names, rows)
    title = f"LooC Table 3: ours at {tf.scale} scale"
    fig, gs = _draw_table(tf, title, extra_height=1.5 if rows else 0.0)
    if rows:
        ax = fig.add_subplot(gs[-1, :])
        colors = dict(zip(tf.panels[0].rows, _row_colors(len(tf.panels[0].rows))))
        width = 0.8 / len(rows)
        for k, (label, vals) in enumerate(rows):
            xs = [i + (k - (len(rows) - 1) / 2) * width for i, v in enumerate(vals) if v is not None]
            ax.bar(xs, [v for v in vals if v is not None], width, label=label, color=colors.get(label))
        for end in GROUP_ENDS:
            if end < len(names) and names[:end] == list(CORRUPTIONS[:end]):
                ax.axvline(end - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("top-1 (%), mean over severities", fontsize=8)
        ax.set_title("per corruption (ours only; colours as above)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    tf.path = _save(fig, out)
    return tf


PLOTS: dict[str, Callable[[list[dict], str, Path], TableFigure]] = {
    name: {"methods": plot_methods, "robustness": plot_robustness}.get(name) or partial(plot_table, name)
    for name in T.TABLES
}


def draw(name: str, records: list[dict], scale: str | None, out: Path) -> TableFigure:
    """Table ``name``'s figure (a name or alias) as a PNG at ``out``, and the numbers drawn; a ``UserError``
    where the table has none of our results at that scale."""
    spec = T.resolve(name)
    return PLOTS[spec.name](records, T.pick_scale(records, scale), out)


def plot(name: str, records: list[dict], scale: str | None, out: Path) -> Path:
    """Table ``name``'s figure as a PNG at ``out`` (``draw``); its path."""
    path = draw(name, records, scale, out).path
    assert path is not None
    return path


def plot_all(records: list[dict], scale: str | None, folder: Path) -> tuple[list[Path], list[str]]:
    """Every table's figure as ``folder/NAME.png``: the paths written and, for the tables without results at that
    scale, why they were skipped."""
    written, skipped = [], []
    for name in T.TABLES:
        try:
            written.append(plot(name, records, scale, Path(folder) / f"{name}.png"))
        except UserError as e:
            skipped.append(str(e))
    return written, skipped
