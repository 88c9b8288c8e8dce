"""Paper tables as pure functions of the results store and the paper numbers.

A ``TableSpec`` mirrors one CSV of ``results/paper/`` (the papers' layouts, ``group/subcolumn``
headers): its rows and columns are those of the CSV, in order. Each row says which records it draws
(method, feature, ...); each metric column says which metric on which dataset role at which epoch
budget. Label and fixed columns (``batch size``, ``Aug./Color`` ...) are copied from the paper.
Tables never run anything.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

from cssl_bench import UserError

# Epoch budgets: the paper's epoch columns -> our epochs at each scale.
EPOCH_BUDGETS = {"tiny": {100: 1, 200: 2, 400: 4, 800: 8}, "small": {100: 5, 200: 10, 400: 20, 800: 40},
                 "paper": {100: 100, 200: 200, 400: 400, 800: 800}}
# Dataset roles -> dataset names per scale (the small scales use embedded stand-ins).
STAND_INS = {
    "in100": {"tiny": "embedded", "small": "embedded", "paper": "imagenet100"},
    "in1k": {"tiny": "embedded", "small": "embedded", "paper": "imagenet"},
}
MISSING = "–"


def paper_csv(name: str) -> tuple[list[str], list[list[str]]]:
    text = (resources.files("cssl_bench") / "results" / "paper" / f"{name}.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@dataclass
class Cell:
    """A record query: every key must match the record (``protocol.*`` keys look inside the protocol)."""

    metric: str
    role: str = "in100"
    budget: int | None = None  # paper epoch column, mapped through EPOCH_BUDGETS
    where: dict = field(default_factory=dict)


@dataclass
class TableSpec:
    name: str
    csv: str
    caption: str
    aliases: tuple[str, ...]
    row_query: Callable[[list[str]], dict]  # paper row -> record filter (method, feature, ...)
    column_cell: Callable[[str], Cell | None]  # header -> query, None for label / fixed columns


def _methods_row(row: list[str]) -> dict:
    name = row[0]
    method = {"SimCLR (repro.+)": "simclr", "MoCo v2 (repro.+)": "moco-v2", "BYOL (repro.)": "byol",
              "SwAV (repro.+)": "swav", "SimSiam": "simsiam"}[name]
    return {"method": method}


def _methods_col(header: str) -> Cell | None:
    if header.endswith(" ep"):
        return Cell("linear/top1", role="in1k", budget=int(header.split()[0]))
    return None


TABLES: dict[str, TableSpec] = {
    "methods": TableSpec("methods", "simsiam_table4",
                         "SimSiam Table 4: ImageNet linear top-1 by pre-training epochs", ("simsiam-t4",), _methods_row, _methods_col),
}


def resolve(name: str) -> TableSpec:
    for spec in TABLES.values():
        if name == spec.name or name in spec.aliases:
            return spec
    names = [s.name for s in TABLES.values()] + [a for s in TABLES.values() for a in s.aliases]
    raise UserError(f"unknown table {name!r}; choose from {', '.join(names)}", exit_code=2)


def _match(rec: dict, query: dict) -> bool:
    for k, v in query.items():
        if k.startswith("protocol."):
            if (rec.get("protocol") or {}).get(k[9:]) != v:
                return False
        elif rec.get(k) != v:
            return False
    return True


def pick_scale(records: list[dict], scale: str | None) -> str:
    if scale:
        return scale
    if not records:
        return "tiny"
    return max(records, key=lambda r: r.get("time", "")).get("scale", "tiny")


@dataclass
class Value:
    mean: float
    std: float | None
    n: int
    records: list[dict]


def cell_value(records: list[dict], row_q: dict, cell: Cell, scale: str) -> Value | None:
    q = {**row_q, **cell.where, "metric": cell.metric, "scale": scale, "dataset": STAND_INS.get(cell.role, {}).get(scale, cell.role)}
    if cell.budget is not None:
        q["epochs"] = EPOCH_BUDGETS[scale][cell.budget]
    hits = [r for r in records if _match(r, q)]
    if not hits:
        return None
    latest: dict[tuple, dict] = {}  # one value per seed: a re-run of the same seed replaces the older record
    for r in sorted(hits, key=lambda r: r.get("time", "")):
        latest[(r.get("seed"), r.get("config_hash"))] = r
    vals = [r["value"] for r in latest.values()]
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return Value(statistics.fmean(vals), std, len(vals), list(latest.values()))


def parse_paper(text: str) -> float | None:
    try:
        return float(text.split("(")[0].strip())
    except ValueError:
        return None


@dataclass
class Rendered:
    headers: list[str]
    paper: list[list[str]]
    ours: list[list[Value | None | str]]
    caption: str
    spec: TableSpec
    scale: str


def build(name: str, records: list[dict], scale: str | None = None) -> Rendered:
    spec = resolve(name)
    headers, paper_rows = paper_csv(spec.csv)
    scale = pick_scale(records, scale)
    cells = [spec.column_cell(h) for h in headers]
    ours: list[list] = []
    used: list[dict] = []
    for prow in paper_rows:
        rq = spec.row_query(prow)
        out_row: list = []
        for j, (h, c) in enumerate(zip(headers, cells)):
            if c is None:
                out_row.append(prow[j])
            else:
                v = cell_value(records, rq, c, scale)
                out_row.append(v)
                if v:
                    used.extend(v.records)
        ours.append(out_row)
    return Rendered(headers, paper_rows, ours, caption(spec, scale, used), spec, scale)


def caption(spec: TableSpec, scale: str, used: list[dict]) -> str:
    parts = [spec.caption + "."]
    if scale == "paper":
        parts.append("Scale: paper.")
    else:
        parts.append(f"Scale: {scale} (CPU); IN-100/ImageNet -> embedded, our epochs per paper column: "
                     + ", ".join(f"{k}->{v}" for k, v in EPOCH_BUDGETS[scale].items()) + ".")
    if used:
        backbones = sorted({r.get("backbone", "?") for r in used})
        seeds = sorted({r.get("seed") for r in used})
        batches = sorted({r.get("batch") for r in used})
        parts.append(f"Ours: backbone {', '.join(backbones)}; batch {', '.join(map(str, batches))}; seeds {', '.join(map(str, seeds))}.")
    else:
        parts.append("No results yet for this scale.")
    parts.append("Cells: ours / paper; '–' = no result.")
    return " ".join(parts)


def _fmt(v: Value | None, show_std: bool = False) -> str:
    if v is None:
        return MISSING
    s = f"{v.mean:.1f}"
    if show_std and v.std is not None:
        s += f" (±{v.std:.1f})"
    return s


def to_rows(t: Rendered, compare: bool = False) -> tuple[list[str], list[list[str]]]:
    """Rows of strings: default cells ``ours / paper``; with ``compare`` three columns per metric."""
    headers = []
    for h, c in zip(t.headers, [t.spec.column_cell(h) for h in t.headers]):
        headers.extend([f"{h} [paper]", f"{h} [ours]", f"{h} [delta]"] if (compare and c) else [h])
    rows = []
    for prow, orow in zip(t.paper, t.ours):
        out = []
        for j, (p, o) in enumerate(zip(prow, orow)):
            if isinstance(o, str):
                out.append(o)
            elif compare:
                pv = parse_paper(p)
                delta = f"{o.mean - pv:+.1f}" if (o is not None and pv is not None) else MISSING
                out.extend([p, _fmt(o), delta])
            else:
                out.append(f"{_fmt(o, '±' in p)} / {p}")
        rows.append(out)
    return headers, rows


def render(t: Rendered, fmt: str = "md", compare: bool = False) -> str:
    if fmt == "json":
        out = []
        for prow, orow in zip(t.paper, t.ours):
            out.append({h: ({"paper": p, "ours": None if o is None else round(o.mean, 2), "n": 0 if o is None else o.n,
                             "std": None if o is None else o.std} if not isinstance(o, str) else o)
                        for h, p, o in zip(t.headers, prow, orow)})
        return json.dumps({"table": t.spec.name, "scale": t.scale, "caption": t.caption, "rows": out}, indent=2)
    headers, rows = to_rows(t, compare)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(headers)
        w.writerows(rows)
        return buf.getvalue()
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + t.caption + "\n"
