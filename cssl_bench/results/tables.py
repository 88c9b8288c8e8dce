"""Paper tables as pure functions of the results store and the paper numbers.

Six tables, each mirroring one CSV of ``results/paper/`` (copied from the papers; ``group/subcolumn``
headers are two-row headers): SimSiam (Chen & He, CVPR 2021) Tables 4 and 5, LooC (Xiao et al., ICLR
2021) Tables 1, 2, 3 and 5. A ``TableSpec`` lists one ``Row`` per CSV row, in order, saying which
records the row draws (method, the LooC augmentation list, the feature) and which run of the reproduce
catalogue produces them; each metric column is a ``Cell``: which metric, on which dataset role (mapped
to a dataset per scale by ``STAND_INS``), at which epoch budget. Label and fixed columns (``batch
size``, ``Aug./Color`` ...) are copied from the CSV. Tables never run anything; the paper numbers are
only ever shown as paper numbers (``--compare paper``), never in place of ours.

A cell's value: the records matching row and column, grouped by configuration ("family": the recipe
without its seed, plus feature and probe protocol); the family ranked first by the column's preferred
protocol, then by its newest record, is shown: the mean over its seeds (one value per seed, a re-run
of a seed replaces the older record), as ``mean ± std`` (sample standard deviation, ddof 1) when it has
several; ``seeds=N`` (``cssl-bench table --seeds N``) keeps seeds 0..N-1 only. Where the paper prints
``mean (±x)`` (few-shot), ours is ``mean (±x)`` too: x is the record's 95% half-width over trials for one
seed, and the Student-t 95% half-width across seeds for several.

Only records measured on the tables' stand-in fill a cell (``is_variant``): not those of a variant of the
embedded generator (``data_options`` naming one of ``EMBEDDED_VARIANTS``), nor, for records pretrained on an
embedded dataset, those of another generator version than ``EMBEDDED_VERSION`` (a record without
``data_options.embedded_version`` was measured on version 1); paper-scale records (ImageNet ...) are unaffected.

Records of a probe on a copy with BN statistics re-estimated on data (``init_bn: "data"``,
``eval.baseline``) are another family, and fill no cell unless asked for: ``random_init_baselines``
gives the two random-init baselines (epoch 0: as initialised, and with BN on data), ``higher_baseline``
the one to compare against, ``baseline_summary`` the demo's summary rows. ``build`` states, for each metric
column with such records (``column_baselines``: the column's metric, dataset, filters and preferred protocol; not
the detection columns, fine-tuned, whose random init is SimSiam Table 5's scratch row), the higher of the two in
the caption (``baseline_caption``; ``Rendered.baselines``; JSON ``random_init``); no row is added, so the layouts
stay the papers' (and CSV, which has no caption, does not show it).

Rows of one's own (``cssl-bench table NAME --add METHOD_OR_RUN``, ``reproduce NAME --add METHOD``): ``build(...,
add=[...])`` appends a row per ``added_row`` (a method: its records as a row of the table's own methods are drawn,
``method_row``; a run directory: the records of its config hash; a run id of the store: that run's records) after
the paper's rows, same columns, each cell chosen as any other; its label names its seeds, and its paper cell is
the paper's best self-supervised row of that column (``paper_best``), so the Δ of ``--compare paper`` is ours
minus that best.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cssl_bench import UserError
from cssl_bench.config import EMBEDDED_VARIANTS, DataCfg

# The embedded generator version whose records fill the tables' cells (the recipe default, data/embedded.py
# LATEST_VERSION; read from the torch- and numpy-free config so that results/ stays light to import).
EMBEDDED_VERSION = DataCfg.embedded_version

SCALES = ("tiny", "small", "paper")
# SimSiam's epoch columns (paper pre-training epochs) -> our epochs at each scale, and LooC's 500
# epochs -> ours. The small budgets are sized so that `reproduce all --scale small` (17 pre-trainings,
# 102 probes) fits in 3 hours on 2 CPU cores (see reproduce.estimate_minutes); tiny keeps
# `reproduce rotation --scale tiny` under 10 minutes.
EPOCH_BUDGETS = {
    "tiny": {100: 1, 200: 2, 400: 3, 800: 4},
    "small": {100: 1, 200: 2, 400: 4, 800: 8},
    "paper": {100: 100, 200: 200, 400: 400, 800: 800},
}
LOOC_PAPER_EPOCHS = 500  # LooC pre-trains every model of its tables for 500 epochs on IN-100
LOOC_EPOCHS = {"tiny": 2, "small": 8, "paper": LOOC_PAPER_EPOCHS}

# Dataset roles -> the dataset evaluated on, per scale (docs/records.md: the CPU scales use embedded stand-ins).
_EMB = {"tiny": "embedded", "small": "embedded"}
_COLOR = {"tiny": "embedded-fine", "small": "embedded-fine"}  # generator v2: the 40 sub-categories
_DET = {"tiny": "embedded-det", "small": "embedded-det"}
STAND_INS = {
    "in100": {**_EMB, "paper": "imagenet100"},
    "in1k": {**_EMB, "paper": "imagenet"},
    "inat": {**_COLOR, "paper": "inat2019"},
    "cub": {**_COLOR, "paper": "cub200"},
    "flowers": {**_COLOR, "paper": "flowers102"},
    "inc100": {**_EMB, "paper": "imagenet-c-100"},
    "on13": {"tiny": "embedded-shift", "small": "embedded-shift", "paper": "objectnet13"},
    "voc07": {**_DET, "paper": "voc07"},
    "voc0712": {**_DET, "paper": "voc0712"},
    "coco": {**_DET, "paper": "coco"},
}
ROLE_NAMES = {
    "in100": "IN-100",
    "in1k": "ImageNet",
    "inat": "iNat-1k",
    "cub": "CUB-200",
    "flowers": "Flowers-102",
    "inc100": "IN-C-100",
    "on13": "ON-13",
    "voc07": "VOC 07",
    "voc0712": "VOC 07+12",
    "coco": "COCO",
}
# How a stand-in is used, where the dataset name alone does not say it.
STAND_IN_NOTES = {"inc100": "corrupted on the fly (15 corruptions x 5 severities)"}
# Metric prefix -> the probe that writes it (docs/records.md).
PROBE_OF_PREFIX = {
    "linear": "linear",
    "knn": "knn",
    "rotation": "rotation",
    "finegrained": "finegrained",
    "fewshot": "fewshot",
    "corruption": "corruption",
    "objectnet": "objectnet",
    "voc07": "detection",
    "voc0712": "detection",
    "coco": "detection",
}
MISSING = "–"


def stand_in(role: str, scale: str) -> str:
    return STAND_INS[role][scale] if role in STAND_INS else role


def our_epochs(paper_epochs: int, scale: str) -> int:
    """The epochs of our pre-training that stand for ``paper_epochs`` at ``scale``."""
    if paper_epochs in EPOCH_BUDGETS[scale]:
        return EPOCH_BUDGETS[scale][paper_epochs]
    if paper_epochs == LOOC_PAPER_EPOCHS:
        return LOOC_EPOCHS[scale]
    raise ValueError(f"no epoch budget for {paper_epochs} paper epochs")


def paper_csv(name: str) -> tuple[list[str], list[list[str]]]:
    text = (resources.files("cssl_bench") / "results" / "paper" / f"{name}.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@dataclass(frozen=True)
class Cell:
    """A metric column: which metric on which dataset role at which paper epoch budget.

    ``where``: further hard filters (``protocol.*`` keys look inside the record's protocol);
    ``prefer``: soft filters: among several configurations, those matching are shown first.
    """

    metric: str
    role: str = "in100"
    budget: int = LOOC_PAPER_EPOCHS
    where: tuple = ()
    prefer: tuple = ()

    @property
    def probe(self) -> str:
        return PROBE_OF_PREFIX[self.metric.split("/")[0]]


@dataclass(frozen=True)
class Row:
    """One CSV row: ``label`` is its first cell; ``query`` filters records (a tuple value means any of
    them; ``augment`` compares as a set; a ``feature`` ending in ``*`` is a prefix); ``run`` names the
    reproduce catalogue run that produces it, probed with ``feature``; ``epoch`` fixes the checkpoint
    epoch (``scratch``: 0) instead of the column's budget."""

    label: str
    run: str
    query: tuple
    feature: str = "backbone"
    epoch: int | None = None

    @property
    def q(self) -> dict:
        return dict(self.query)


@dataclass(frozen=True)
class TableSpec:
    name: str
    csv: str
    caption: str
    aliases: tuple[str, ...]
    rows: tuple[Row, ...]
    column_cell: Callable[[str], Cell | None]  # header -> metric column; None for label / fixed columns


def _ssl(method: str) -> tuple:
    return (("method", method), ("feature", "backbone"))


def _moco(symmetric: bool) -> tuple:
    # SimSiam's MoCo v2 rows use the symmetrised loss, the LooC tables' MoCo the original one. Records written
    # before they carried `params` read None: only the symmetrised runs are excluded from the LooC rows.
    return _ssl("moco-v2") + (("params.symmetric", True if symmetric else (False, None)),)


def _looc(*augment: str) -> tuple:
    return (
        ("method", "looc"),
        ("augment", tuple(augment)),
        ("variance_heads", tuple(augment)),
        ("feature", "backbone"),
    )


def _loocpp(*augment: str, heads: tuple[str, ...] | None = None) -> tuple:
    # LooC++ is the LooC model read out through the concatenation of its heads (LooC sec. 3): records of a
    # `looc` run probed with a concat feature, or of a `looc++` recipe run (whose default feature is concat).
    return (
        ("method", ("looc", "looc++")),
        ("augment", tuple(augment)),
        ("variance_heads", tuple(augment) if heads is None else heads),
        ("feature", "concat*"),
    )


def _looc_key(*augment: str, heads: tuple[str, ...] | None = None) -> str:
    """The catalogue key of a LooC run (``reproduce.run_spec``): ``looc[a,b]``, or ``looc[a,b,c;heads=a]``
    when only some augmentations get a variance head."""
    return f"looc[{','.join(augment)}{'' if heads is None else ';heads=' + ','.join(heads)}]"


LOOC_LINEAR = (("protocol.name", "looc"),)


def _in100(header: str) -> Cell | None:
    if header in ("IN-100/top-1", "IN-100/top-5"):
        return Cell(f"linear/top{header[-1]}", "in100", prefer=LOOC_LINEAR)
    return None


# --- SimSiam Table 4 ---------------------------------------------------------------------------
def _methods_col(header: str) -> Cell | None:
    if header.endswith(" ep"):
        return Cell("linear/top1", "in1k", int(header.split()[0]), prefer=(("protocol.name", "simsiam"),))
    return None


METHODS_ROWS = (
    Row("SimCLR (repro.+)", "simclr", _ssl("simclr")),
    Row("MoCo v2 (repro.+)", "moco-v2-sym", _moco(symmetric=True)),
    Row("BYOL (repro.)", "byol", _ssl("byol")),
    Row("SwAV (repro.+)", "swav", _ssl("swav")),
    Row("SimSiam", "simsiam", _ssl("simsiam")),
)

# --- SimSiam Table 5 ---------------------------------------------------------------------------
_DET_GROUPS = {
    "VOC 07 detection": "voc07",
    "VOC 07+12 detection": "voc0712",
    "COCO detection": "coco",
    "COCO instance seg.": "coco",
}
_DET_METRICS = {
    "AP50": "ap50",
    "AP": "ap",
    "AP75": "ap75",
    "AP50 mask": "ap_mask50",
    "AP mask": "ap_mask",
    "AP75 mask": "ap_mask75",
}


def _transfer_col(header: str) -> Cell | None:
    if "/" not in header:
        return None
    group, sub = header.split("/", 1)
    role = _DET_GROUPS[group]
    return Cell(f"{role}/{_DET_METRICS[sub]}", role, 200)  # SimSiam Table 5: 200-epoch pre-trainings


TRANSFER_ROWS = (
    # Random initialisation: any run's epoch-0 checkpoint (the loop writes it before the first step).
    Row("scratch", "supervised-in1k", (), epoch=0),
    Row("ImageNet supervised", "supervised-in1k", _ssl("supervised")),
    Row("SimCLR (repro.+)", "simclr", _ssl("simclr")),
    Row("MoCo v2 (repro.+)", "moco-v2-sym", _moco(symmetric=True)),
    Row("BYOL (repro.)", "byol", _ssl("byol")),
    Row("SwAV (repro.+)", "swav", _ssl("swav")),
    Row("SimSiam, base", "simsiam", _ssl("simsiam")),
    Row("SimSiam, optimal", "simsiam-optimal", _ssl("simsiam-optimal")),
)


# --- LooC Table 1 ------------------------------------------------------------------------------
def _rotation_col(header: str) -> Cell | None:
    if header == "Rotation/Acc.":
        return Cell("rotation/acc", "in100")
    return _in100(header)


ROTATION_ROWS = (
    Row("Supervised", "supervised", _ssl("supervised")),
    Row("MoCo", "moco-v2", _moco(symmetric=False)),
    Row("MoCo + Rotation", "moco-rot", _ssl("moco-rot")),
    Row("MoCo + Rotation (same for q and k)", "moco-rot-same", _ssl("moco-rot-same")),
    Row("LooC + Rotation [ours]", _looc_key("rotation"), _looc("rotation")),
)


# --- LooC Table 2 ------------------------------------------------------------------------------
def _finegrained_col(header: str) -> Cell | None:
    group, _, sub = header.partition("/")
    if group in ("iNat-1k", "CUB-200"):
        return Cell(f"finegrained/top{sub[-1]}", "inat" if group == "iNat-1k" else "cub")
    if group == "Flowers-102":
        return Cell(f"fewshot/{sub.replace('-', '')}", "flowers")
    return _in100(header)


FINEGRAINED_ROWS = (
    Row("MoCo", "moco-v2", _moco(symmetric=False)),
    Row("LooC", _looc_key("color"), _looc("color")),
    Row("LooC", _looc_key("rotation"), _looc("rotation")),
    Row("LooC", _looc_key("color", "rotation"), _looc("color", "rotation")),
    Row("LooC++", _looc_key("color", "rotation"), _loocpp("color", "rotation"), feature="concat"),
)

# --- LooC Table 3 ------------------------------------------------------------------------------
_CORRUPTION_GROUPS = {
    "Noise": "noise",
    "Blur": "blur",
    "Weather": "weather",
    "Digital": "digital",
    "All": "all",
    "d>3": "d>3",
}


def _robustness_col(header: str) -> Cell | None:
    group, _, sub = header.partition("/")
    if group == "ON-13":
        return Cell(f"objectnet/top{sub[-1]}", "on13")
    if group == "IN-C-100 (top-1)":
        return Cell(f"corruption/{_CORRUPTION_GROUPS[sub]}", "inc100")
    return _in100(header)


ROBUSTNESS_ROWS = (
    Row("Supervised", "supervised", _ssl("supervised")),
    Row("MoCo", "moco-v2", _moco(symmetric=False)),
    Row("LooC", _looc_key("rotation"), _looc("rotation")),
    Row("LooC", _looc_key("texture"), _looc("texture")),
    Row("LooC", _looc_key("rotation", "texture"), _looc("rotation", "texture")),
    Row("LooC++", _looc_key("rotation", "texture"), _loocpp("rotation", "texture"), feature="concat"),
)


# --- LooC Table 5 ------------------------------------------------------------------------------
def _heads_col(header: str) -> Cell | None:
    if header == "IN-C-100/all top-1":
        return Cell("corruption/all", "inc100")
    if header.startswith("iNat-1k/"):
        return Cell(f"finegrained/top{header[-1]}", "inat")
    if header.startswith("Flowers-102/"):
        return Cell(f"fewshot/{header.split('/')[1].replace('-', '')}", "flowers")
    return _in100(header)


# Every row applies all three augmentations; the check marks say which get a variance head (row 1: Z0 alone).
_ALL3 = ("color", "rotation", "texture")
HEADS_ROWS = tuple(
    Row("LooC++", _looc_key(*_ALL3, heads=None if h == _ALL3 else h), _loocpp(*_ALL3, heads=h), feature="concat")
    for h in ((), ("color",), ("rotation",), ("texture",), _ALL3)
)

TABLES: dict[str, TableSpec] = {
    s.name: s
    for s in (
        TableSpec(
            "methods",
            "simsiam_table4",
            "SimSiam Table 4: ImageNet linear top-1 accuracy (%) by pre-training epochs",
            ("simsiam-t4",),
            METHODS_ROWS,
            _methods_col,
        ),
        TableSpec(
            "transfer",
            "simsiam_table5",
            "SimSiam Table 5: transfer to VOC detection and COCO detection / instance "
            "segmentation, fine-tuned from 200-epoch pre-trainings",
            ("simsiam-t5",),
            TRANSFER_ROWS,
            _transfer_col,
        ),
        TableSpec(
            "rotation",
            "looc_table1",
            "LooC Table 1: rotation classification and IN-100 linear accuracy; MoCo with rotation augmentation vs LooC",
            ("looc-t1",),
            ROTATION_ROWS,
            _rotation_col,
        ),
        TableSpec(
            "finegrained",
            "looc_table2",
            "LooC Table 2: fine-grained (iNat-1k, CUB-200) and few-shot (Flowers-102) "
            "classification with colour and rotation augmentations",
            ("looc-t2",),
            FINEGRAINED_ROWS,
            _finegrained_col,
        ),
        TableSpec(
            "robustness",
            "looc_table3",
            "LooC Table 3: ObjectNet-13 and IN-C-100 corruption robustness with rotation and texture augmentations",
            ("looc-t3",),
            ROBUSTNESS_ROWS,
            _robustness_col,
        ),
        TableSpec(
            "heads",
            "looc_table5",
            "LooC Table 5: LooC++ with variance heads for colour, rotation and texture",
            ("looc-t5",),
            HEADS_ROWS,
            _heads_col,
        ),
    )
}


def resolve(name: str) -> TableSpec:
    for spec in TABLES.values():
        if name == spec.name or name in spec.aliases:
            return spec
    names = [s.name for s in TABLES.values()] + [a for s in TABLES.values() for a in s.aliases]
    raise UserError(f"unknown table {name!r}; choose from {', '.join(names)}", exit_code=2)


def columns(spec: TableSpec) -> list[tuple[str, Cell | None]]:
    headers, _ = paper_csv(spec.csv)
    return [(h, spec.column_cell(h)) for h in headers]


# --- selecting records ---------------------------------------------------------------------------
def _field(rec: dict, key: str):
    if key.startswith(("protocol.", "params.")):  # inside the probe protocol / the method's recipe params
        section, _, name = key.partition(".")
        return (rec.get(section) or {}).get(name)
    if key == "variance_heads" and key not in rec:  # records written before the option: one head per augmentation
        return rec.get("augment")
    return rec.get(key)


def _matches(rec: dict, key: str, want) -> bool:
    have = _field(rec, key)
    if key in ("augment", "variance_heads"):
        return have is not None and set(have) == set(want)
    if isinstance(want, tuple):
        return have in want
    if isinstance(want, str) and want.endswith("*"):
        return isinstance(have, str) and have.startswith(want[:-1])
    return have == want


def _match(rec: dict, query: dict) -> bool:
    return all(_matches(rec, k, v) for k, v in query.items())


def pick_scale(records: list[dict], scale: str | None) -> str:
    if scale:
        return scale
    if not records:
        return "tiny"
    return max(records, key=lambda r: r.get("time", "")).get("scale", "tiny")


def bn_on_data(rec: dict) -> bool:
    """Probed on a copy whose backbone BN statistics were re-estimated on data (``init_bn: "data"``)."""
    return rec.get("init_bn") == "data"


def family(rec: dict) -> str:
    """One configuration up to its seed: the recipe without its seed (``config_family``, written by
    ``reproduce``; else the record fields that identify a configuration), the feature and the probe protocol,
    and the BN statistics probed with (``init_bn``, where a record has it)."""
    proto = {k: v for k, v in (rec.get("protocol") or {}).items() if k != "seed"}
    base = rec.get("config_family") or [rec.get(k) for k in ("method", "pretrain_dataset", "backbone", "batch")] + [
        sorted(rec.get("augment") or [])
    ]
    key = [base, rec.get("epochs"), rec.get("feature"), proto] + (
        [{"init_bn": rec["init_bn"]}] if rec.get("init_bn") else []
    )
    return json.dumps(key, sort_keys=True, default=str)


def in_seeds(rec: dict, seeds: int | None) -> bool:
    """``seeds`` None: any record; else only those of seeds 0..seeds-1."""
    s = rec.get("seed")
    return seeds is None or (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < seeds)


def check_seeds(seeds: int | None, option: str = "--seeds") -> None:
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise UserError(f"{option} must be an integer >= 1, got {seeds!r}", exit_code=2)


@dataclass
class Value:
    mean: float
    std: float | None  # across seeds
    n: int  # seeds
    pm: float | None  # the 95% half-width shown as (±x) where the paper shows one
    records: list[dict]
    families: int = 1  # configurations that matched (the first-ranked one is shown)


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t95(dof: int) -> float:
    """Student-t 0.975 quantile (two-sided 95%); 1.96 beyond 10 degrees of freedom is within 5%."""
    return T95.get(dof, 2.0 if dof < 30 else 1.96)


def cell_query(row: Row, cell: Cell, scale: str) -> dict:
    q = {**row.q, **dict(cell.where), "metric": cell.metric, "scale": scale, "dataset": stand_in(cell.role, scale)}
    q["epochs"] = row.epoch if row.epoch is not None else our_epochs(cell.budget, scale)
    return q


def embedded_version(rec: dict) -> int | None:
    """The embedded generator version a record was measured on (``data_options.embedded_version``; a record
    without it predates the key and was measured on version 1), or None when its pretraining dataset
    (``pretrain_dataset``, else ``dataset``) is not an embedded one."""
    ds = rec.get("pretrain_dataset") or rec.get("dataset") or ""
    if not str(ds).startswith("embedded"):
        return None
    return int((rec.get("data_options") or {}).get("embedded_version", 1))


def is_variant(rec: dict) -> bool:
    """Measured on another dataset than the tables' stand-in: on a variant of the embedded generator
    (``data_options`` names one of ``EMBEDDED_VARIANTS``), or, for a record pretrained on an embedded dataset,
    on another generator version than the current one (``EMBEDDED_VERSION``; no ``embedded_version`` in
    ``data_options`` means version 1). Records on other datasets (ImageNet ...) are never a version variant."""
    if any(k in (rec.get("data_options") or {}) for k in EMBEDDED_VARIANTS):
        return True
    version = embedded_version(rec)
    return version is not None and version != EMBEDDED_VERSION


def select(records: list[dict], query: dict, prefer: dict | None = None, seeds: int | None = None) -> Value | None:
    """The value of the records matching ``query`` (see the module docstring for the rules); records of an
    embedded-generator variant or of an embedded generator version other than ``EMBEDDED_VERSION`` (``is_variant``)
    never fill a paper table's cell, nor do those probed with BN statistics re-estimated on data unless ``query``
    asks for them (``init_bn``); ``seeds``: only seeds 0..seeds-1."""
    hits = [
        r
        for r in records
        if _match(r, query) and not is_variant(r) and in_seeds(r, seeds) and ("init_bn" in query or not bn_on_data(r))
    ]
    if not hits:
        return None
    groups: dict[str, list[dict]] = {}
    for r in hits:
        groups.setdefault(family(r), []).append(r)

    def rank(recs):
        pref = sum(all(_matches(r, k, v) for k, v in (prefer or {}).items()) for r in recs) > 0
        return (pref, max(r.get("time", "") for r in recs))

    return seed_value(max(groups.values(), key=rank), len(groups))


def _seed_order(seed) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) and not isinstance(seed, bool) else (1, 0, str(seed))


def seed_value(records: list[dict], families: int = 1) -> Value | None:
    """The value of one configuration's records (one family): one value per seed (a re-run of a seed replaces
    the older record, by ``time``), their mean, sample std (ddof 1; None for one seed) and the (±x) half-width
    (Student t across seeds; a single seed's own ``ci95``). ``Value.records``: one per seed, in seed order."""
    if not records:
        return None
    latest: dict = {}
    for r in sorted(records, key=lambda r: r.get("time", "")):
        latest[r.get("seed")] = r
    recs = [latest[s] for s in sorted(latest, key=_seed_order)]
    vals = [r["value"] for r in recs]
    std = statistics.stdev(vals) if len(vals) > 1 else None
    if len(vals) > 1:
        pm = t95(len(vals) - 1) * std / math.sqrt(len(vals))
    else:
        pm = recs[0].get("ci95")
    return Value(statistics.fmean(vals), std, len(vals), pm, recs, families)


def cell_value(records: list[dict], row: Row, cell: Cell, scale: str, seeds: int | None = None) -> Value | None:
    return select(records, cell_query(row, cell, scale), dict(cell.prefer), seeds)


# --- random-init baselines -----------------------------------------------------------------------
BASELINE_LABELS = {"init": "random init (as initialised)", "data": "random init (BN on data)"}


def random_init_baselines(
    records: list[dict],
    metric: str,
    dataset: str,
    scale: str | None = None,
    seeds: int | None = None,
    where: dict | None = None,
    prefer: dict | None = None,
) -> dict[str, Value | None]:
    """The two random-init baselines of ``metric`` on ``dataset``: epoch-0 records probed with the BN statistics
    of initialisation (``"init"``) and with BN statistics re-estimated on data (``"data"``, ``init_bn``), each
    chosen as a table cell is (``select``, with a column's hard filters ``where`` and preferred ``prefer``);
    None where the records have none."""
    q = {**(where or {}), "metric": metric, "dataset": dataset, "epochs": 0, **({"scale": scale} if scale else {})}
    return {
        "init": select(records, q, prefer, seeds),
        "data": select(records, {**q, "init_bn": "data"}, prefer, seeds),
    }


def has_random_init_baseline(cell: Cell | None) -> bool:
    """Whether a column (``None``: a descriptive one) has random-init baselines: its value probes a frozen backbone,
    every probe but detection (fine-tuned; its random init is SimSiam Table 5's scratch row). ``build`` states them,
    ``reproduce`` plans their records."""
    return cell is not None and cell.probe != "detection"


def column_baselines(records: list[dict], cell: Cell, scale: str, seeds: int | None = None) -> dict[str, Value | None]:
    """``random_init_baselines`` of a metric column: its metric on its dataset at ``scale``, with its filters and
    preferred protocol (a linear column's baseline is probed with the column's protocol)."""
    return random_init_baselines(
        records, cell.metric, stand_in(cell.role, scale), scale, seeds, dict(cell.where), dict(cell.prefer)
    )


def higher_baseline(baselines: dict[str, Value | None]) -> tuple[str, Value] | None:
    """(key, value) of the baseline with the higher mean, the one a method must beat (a tie: ``"init"``);
    None when no baseline has a value."""
    have = [(k, v) for k, v in baselines.items() if v is not None]
    return max(have, key=lambda kv: kv[1].mean) if have else None


def fmt_mean_std(v: Value | None) -> str:
    """``mean`` for one seed, ``mean ± std`` (sample std) for several; one decimal."""
    if v is None:
        return MISSING
    return f"{v.mean:.1f}" + (f" ± {v.std:.1f}" if v.n > 1 and v.std is not None else "")


def baseline_summary(
    records: list[dict], metric: str = "knn/top1", dataset: str = "embedded"
) -> tuple[list[dict], str]:
    """The demo's summary: rows for the two random-init baselines (epoch-0 records, as initialised and with BN
    on data), then one per trained method and checkpoint epoch (in order of first appearance, epochs
    ascending), each over its seeds. A row: {"label", "epochs", "value" (Value), "text" (``fmt_mean_std``),
    "delta" (mean - the higher baseline's mean, "+x.x"; "" for the higher baseline itself)}. Also a caption
    line naming the baseline compared against and listing each row's per-seed values."""
    mine = [r for r in records if r.get("metric") == metric and r.get("dataset") == dataset]
    base = {
        k: seed_value([r for r in mine if r.get("epochs") == 0 and bn_on_data(r) == (k == "data")])
        for k in BASELINE_LABELS
    }
    top = higher_baseline(base)
    rows = [{"label": BASELINE_LABELS[k], "epochs": 0, "value": v} for k, v in base.items() if v is not None]
    trained: dict[tuple, list[dict]] = {}
    for r in mine:
        if r.get("epochs") != 0 and not bn_on_data(r):
            trained.setdefault((r.get("method"), r.get("epochs")), []).append(r)
    order = list(dict.fromkeys(m for m, _ in trained))
    for m, e in sorted(trained, key=lambda k: (order.index(k[0]), k[1])):
        rows.append({"label": str(m), "epochs": e, "value": seed_value(trained[(m, e)])})
    for row in rows:
        v = row["value"]
        row["text"] = fmt_mean_std(v)
        higher = top is not None and row["epochs"] == 0 and row["label"] == BASELINE_LABELS[top[0]]
        row["delta"] = "" if top is None or higher else f"{round(v.mean, 1) - round(top[1].mean, 1):+.1f}"
    parts = []
    if top is not None:
        parts.append(f"Δ against the higher random-init baseline: {BASELINE_LABELS[top[0]]}.")
    per_seed = [
        f"{row['label']}"
        + (f" e{row['epochs']}" if row["epochs"] else "")
        + ": "
        + " / ".join(f"{r['value']:.1f}" for r in row["value"].records)
        for row in rows
    ]
    seeds = _join(r.get("seed") for row in rows for r in row["value"].records)
    if rows:
        parts.append(f"Per seed ({seeds}): " + "; ".join(per_seed) + ".")
    return rows, " ".join(parts)


def parse_paper(text: str) -> float | None:
    """The number of a cell's text: ``46.5``, ``46.5 (±1.2)`` and ``46.5 ± 1.2`` give 46.5; None for '–' or a label."""
    try:
        return float(text.split("(")[0].split("±")[0].strip())
    except ValueError:
        return None


# --- building and rendering ----------------------------------------------------------------------
@dataclass
class Rendered:
    headers: list[str]
    cells: list[Cell | None]
    paper: list[list[str]]
    ours: list[list[Value | None | str]]  # str: a label or fixed cell copied from the paper
    caption: str
    spec: TableSpec
    scale: str
    added: int = 0  # the last ``added`` rows are rows of one's own (``build(add=...)``), not the paper's
    # header -> (key of BASELINE_LABELS, Value): the higher random-init baseline of each metric column that has one
    # (probes of a frozen backbone; not detection)
    baselines: dict = field(default_factory=dict)


def build(
    name: str, records: list[dict], scale: str | None = None, seeds: int | None = None, add: Sequence[Row] = ()
) -> Rendered:
    """Table ``name`` from ``records`` at ``scale`` (default: the newest record's); ``seeds``: only seeds
    0..seeds-1 of each configuration (the caption names the cells that have fewer); ``add``: rows of one's own
    (``added_row``) appended after the paper's (see the module docstring)."""
    check_seeds(seeds)
    spec = resolve(name)
    headers, paper_rows = paper_csv(spec.csv)
    if len(paper_rows) != len(spec.rows) or any(p[0] != r.label for p, r in zip(paper_rows, spec.rows)):
        raise RuntimeError(f"table {spec.name}: rows out of step with {spec.csv}.csv")
    scale = pick_scale(records, scale)
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}", exit_code=2)
    cells = [spec.column_cell(h) for h in headers]
    ours: list[list] = []
    used: list[dict] = []
    for prow, row in zip(paper_rows, spec.rows):
        out_row: list = []
        for j, c in enumerate(cells):
            if c is None:
                out_row.append(prow[j])
            else:
                v = cell_value(records, row, c, scale, seeds)
                out_row.append(v)
                if v:
                    used.extend(v.records)
        ours.append(out_row)
    paper_rows = list(paper_rows)
    best = paper_best(spec, paper_rows, cells)
    for row in add:
        vals = [None if c is None else cell_value(records, row, c, scale, seeds) for c in cells]
        recs = [r for v in vals if v for r in v.records]
        used.extend(recs)
        label = f"{row.label} [added; {_seeds_text(recs)}]"
        paper_rows.append([label if j == 0 else ("" if c is None else best[j]) for j, c in enumerate(cells)])
        ours.append([label if j == 0 else ("" if c is None else v) for j, (c, v) in enumerate(zip(cells, vals))])
    t = Rendered(headers, cells, paper_rows, ours, caption(spec, scale, cells, used), spec, scale, len(add))
    for h, c in zip(headers, cells):
        top = higher_baseline(column_baselines(records, c, scale, seeds)) if has_random_init_baseline(c) else None
        if top is not None:
            t.baselines[h] = top
    if t.baselines:
        t.caption += " " + baseline_caption(t)
    if add:
        t.caption += (
            f" Rows marked [added] are not in the paper: {', '.join(r.label for r in add)} (seeds in the label); "
            "their paper cell is the paper's best self-supervised row of that column, Δ = ours − that best."
        )
    if seeds is not None:
        t.caption += " " + seeds_caption(t, seeds)
    return t


def baseline_caption(t: Rendered) -> str:
    """The caption sentence of ``t.baselines``: per group of columns with the same baseline (same records), the
    higher random-init baseline as ``mean`` (one seed) or ``mean ± std`` (several) and which one it is; '' when none.
    E.g. "Random init (epoch 0; the higher of as initialised / BN on data): Rotation/Acc. 27.1 (BN on data);
    IN-100/top-1 30.2 ± 0.8 (as initialised)."."""
    groups: dict[tuple, list[str]] = {}
    for h, (key, v) in t.baselines.items():
        groups.setdefault((key, tuple(r.get("id") or id(r) for r in v.records)), []).append(h)
    parts = []
    for (key, _ids), hs in groups.items():
        v = t.baselines[hs[0]][1]
        kind = "as initialised" if key == "init" else "BN on data"
        parts.append(f"{', '.join(hs)} {fmt_mean_std(v)} ({kind}; {_seeds_text(v.records)})")
    if not parts:
        return ""
    return "Random init (epoch 0; the higher of as initialised / BN statistics on data): " + "; ".join(parts) + "."


def _seeds_text(records: list[dict]) -> str:
    seeds = sorted({r.get("seed") for r in records}, key=_seed_order)
    if not seeds:
        return "no results"
    return f"seed{'s' * (len(seeds) > 1)} {_join(seeds)}"


def paper_best(spec: TableSpec, paper_rows: list[list[str]], cells: list[Cell | None]) -> list[str]:
    """Per column, the paper's text of its best self-supervised row (the highest number; rows of supervised
    pre-training and of random initialisation left out); '' for label and fixed columns, ``MISSING`` where no
    row has a number."""
    ssl = [p for p, r in zip(paper_rows, spec.rows) if r.q.get("method") != "supervised" and r.epoch != 0]
    out = []
    for j, c in enumerate(cells):
        if c is None:
            out.append("")
            continue
        have = [(parse_paper(p[j]), p[j]) for p in ssl if parse_paper(p[j]) is not None]
        out.append(max(have, key=lambda x: x[0])[1] if have else MISSING)
    return out


# --- rows of one's own ----------------------------------------------------------------------------------
def added_run_key(spec: TableSpec, method: str) -> str:
    """The ``reproduce`` catalogue key of the pretraining an added method's row needs in table ``spec``, the
    same as the table's own methods get: ``added[METHOD]`` in the SimSiam tables (the ImageNet role, checkpoints at
    every epoch budget, as SimCLR's) or ``added-looc[METHOD]`` in the LooC tables (IN-100, LooC's epochs, as MoCo's)."""
    looc = all(c.budget == LOOC_PAPER_EPOCHS for _, c in columns(spec) if c is not None)
    return f"{'added-looc' if looc else 'added'}[{method}]"


def method_row(spec: TableSpec, method: str) -> Row:
    """The row of ``method``'s records (its backbone features), pretrained by ``added_run_key``."""
    return Row(method, added_run_key(spec, method), _ssl(method))


def _run_hash(run_dir: Path) -> str | None:
    """The config hash of a run directory: run.json's, else its config.yaml's recipe's; None when neither reads."""
    try:
        h = json.loads((run_dir / "run.json").read_text()).get("config_hash")
        if isinstance(h, str) and h:
            return h
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import yaml

        from cssl_bench.config import recipe_from_dict

        return recipe_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())).hash()
    except (OSError, ValueError, UserError, yaml.YAMLError):
        return None


def added_row(spec: TableSpec, what: str, records: list[dict]) -> Row:
    """The row ``--add WHAT`` appends to table ``spec``: a run directory (its records, by config hash: every run
    of that recipe and seed), a run id of the store (that run's records), else a method name (``method_row``)."""
    p = Path(what)
    if p.is_dir() and ((p / "run.json").is_file() or (p / "config.yaml").is_file()):
        h = _run_hash(p)
        key = ("config_hash", h) if h else ("run_id", p.name)
        return Row(p.name, "", (key, ("feature", "backbone")))
    if any(r.get("run_id") == what for r in records):
        return Row(what, "", (("run_id", what), ("feature", "backbone")))
    if "/" in what or not what.strip():
        raise UserError(f"--add {what!r}: not a run directory (no run.json or config.yaml there) nor a method", 2)
    return method_row(spec, what)


def seeds_caption(t: Rendered, seeds: int) -> str:
    """What ``--seeds N`` kept, and which rows' cells have fewer than N seeds (per row: the number of seeds
    and, unless it is every filled cell of the row, the columns)."""
    short = []
    labels = [p[0] for p in t.paper]
    for i, orow in enumerate(t.ours):
        filled = [(h, o) for h, o in zip(t.headers, orow) if isinstance(o, Value)]
        by_n: dict[int, list[str]] = {}
        for h, o in filled:
            if o.n < seeds:
                by_n.setdefault(o.n, []).append(h)
        for n, hs in sorted(by_n.items()):
            where = "" if len(hs) == len(filled) else f" in {', '.join(hs)}"
            name = labels[i] if labels.count(labels[i]) == 1 else row_name(t, i)  # the LooC tables repeat labels
            short.append(f"{name}: {n} seed{'s' * (n != 1)}{where}")
    text = f"Seeds 0-{seeds - 1} only (--seeds {seeds})." if seeds > 1 else "Seed 0 only (--seeds 1)."
    return text + (f" Fewer than {seeds}: " + "; ".join(short) + "." if short else "")


def _join(values) -> str:
    """Distinct values, numbers in numeric order."""
    return ", ".join(
        str(v) for v in sorted(set(values), key=lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)))
    )


def record_metric(record: dict) -> str:
    """How a detection record was scored: its protocol's ``metric``; records made before that field existed
    were all scored with pycocotools."""
    return (record.get("protocol") or {}).get("metric", "coco")


VOC_SCORING = {
    "voc07": "as detectron2's VOC2007 evaluator (11-point AP)",
    "voc": "with VOC2010's area AP",
    "coco": "with pycocotools (101 recall points)",
}


def caption(spec: TableSpec, scale: str, cells: list[Cell | None], used: list[dict]) -> str:
    """The table's caption: what it is, the scale and its dataset stand-ins, backbone, epochs and seeds of ours."""
    parts = [spec.caption + "."]
    _, paper_rows = paper_csv(spec.csv)
    has_pm = any("±" in p for row in paper_rows for p in row)
    roles = list(dict.fromkeys(c.role for c in cells if c))
    budgets = sorted({c.budget for c in cells if c})
    if scale == "paper":
        parts.append("Scale: paper (the papers' datasets).")
    else:
        by_target: dict[str, list[str]] = {}
        for r in roles:
            by_target.setdefault(
                stand_in(r, scale) + (f" {STAND_IN_NOTES[r]}" if r in STAND_IN_NOTES else ""), []
            ).append(ROLE_NAMES[r])
        stand = ", ".join(f"{', '.join(names)} -> {target}" for target, names in by_target.items())
        parts.append(f"Scale: {scale} (CPU stand-ins: {stand}).")
    if any(r.epoch == 0 for r in spec.rows):
        parts.append("scratch = a run's epoch-0 (random-init) checkpoint.")
    if budgets == [LOOC_PAPER_EPOCHS]:
        parts.append(f"Pre-training: {our_epochs(LOOC_PAPER_EPOCHS, scale)} epochs (paper: {LOOC_PAPER_EPOCHS}).")
    else:
        parts.append(
            "Our epochs per paper epochs: " + ", ".join(f"{b} -> {our_epochs(b, scale)}" for b in budgets) + "."
        )
    if used:
        parts.append(
            f"Ours: backbone {_join(r.get('backbone', '?') for r in used)}; "
            f"batch {_join(r.get('batch') for r in used)}; seeds {_join(r.get('seed') for r in used)}; "
            f"epochs {_join(r.get('epochs') for r in used)}."
        )
    else:
        parts.append("No results yet at this scale.")
    voc = sorted({record_metric(r) for r in used if str(r.get("metric", "")).startswith(("voc07/", "voc0712/"))})
    if voc:  # how the VOC cells were scored
        parts.append("VOC scored " + " and ".join(VOC_SCORING.get(m, m) for m in voc) + ".")
    parts.append(f"'{MISSING}' = no result; several seeds: mean ± sample std.")
    if has_pm:
        parts.append("(±x): 95% half-width over the few-shot trials (one seed) or across seeds (several).")
    return " ".join(parts)


def fmt_value(v: Value | None, paper_cell: str = "") -> str:
    """A cell's text: ``mean``; ``mean ± std`` (sample std across seeds) for several seeds; where the paper
    prints ``mean (±x)`` (few-shot), ``mean (±x)`` with our 95% half-width instead."""
    if v is None:
        return MISSING
    if "±" in paper_cell:
        return f"{v.mean:.1f}" + (f" (±{v.pm:.1f})" if v.pm is not None else "")
    return fmt_mean_std(v)


def fmt_delta(v: Value | None, paper_cell: str) -> str:
    pv = parse_paper(paper_cell)
    if v is None or pv is None:
        return MISSING
    return f"{round(v.mean, 1) - pv:+.1f}"


def flat_rows(t: Rendered, compare: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers (the CSV's ``group/sub`` names) and rows of strings. Default: the paper's layout with our
    numbers; with ``compare``, every metric column becomes ``[paper]``, ``[ours]``, ``[delta]``."""
    headers: list[str] = []
    for h, c in zip(t.headers, t.cells):
        headers.extend([f"{h} [paper]", f"{h} [ours]", f"{h} [delta]"] if (compare and c) else [h])
    rows = []
    for prow, orow in zip(t.paper, t.ours):
        out: list[str] = []
        for p, o in zip(prow, orow):
            if isinstance(o, str):
                out.append(o)
            elif compare:
                out.extend([p, fmt_value(o, p), fmt_delta(o, p)])
            else:
                out.append(fmt_value(o, p))
        rows.append(out)
    return headers, rows


def _md_headers(t: Rendered, compare: bool) -> list[list[str]]:
    """One header row, or two where the CSV has ``group/sub`` columns (or in compare mode): a group's name
    heads its first column only."""
    top: list[str] = []
    sub: list[str] = []
    prev_group = None
    for h, c in zip(t.headers, t.cells):
        group, slash, name = h.partition("/")
        subs = [name] if slash else [""]
        if compare and c:
            subs = [f"{s} {k}".strip() for s in subs for k in ("paper", "ours", "Δ")]
        if not slash:
            group = h
        for i, s in enumerate(subs):
            top.append(group if (i == 0 and (group != prev_group or not slash)) else "")
            sub.append(s)
        prev_group = group if slash else None
    if not any(sub):
        return [top]
    return [top, sub]


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render(t: Rendered, fmt: str = "md", compare: bool = False, provenance: bool = False) -> str:
    if fmt == "json":
        return render_json(t, provenance)
    headers, rows = flat_rows(t, compare)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(headers)
        w.writerows(rows)
        if provenance:
            buf.write("\n")
            w.writerow(["row", "column", "value", "record ids", "runs", "commands"])
            for p in provenance_items(t):
                w.writerow(
                    [
                        p["row"],
                        p["column"],
                        p["value"],
                        " ".join(p["records"]),
                        " ".join(p["runs"]),
                        " ; ".join(p["commands"]),
                    ]
                )
        return buf.getvalue()
    head = _md_headers(t, compare)
    numeric = [c is not None for c in t.cells]
    align = []
    for is_num in numeric:
        align.extend([("---:" if is_num else ":---")] * (3 if (compare and is_num) else 1))
    lines = [_md_line(head[0]), "|" + "|".join(align) + "|"]
    if len(head) > 1:
        lines.append(_md_line([f"**{s}**" if s else "" for s in head[1]]))
    lines += [_md_line(r) for r in rows]
    text = (
        "\n".join(lines)
        + "\n\n"
        + t.caption
        + (" Paper numbers beside ours: Δ = ours − paper." if compare else "")
        + "\n"
    )
    if provenance:
        text += "\nProvenance:\n" + "".join(
            f"- {p['row']} | {p['column']}: {p['value']} from {len(p['records'])} record(s) {', '.join(p['records'])}; "
            f"runs {', '.join(p['runs'])}; command: {' ; '.join(p['commands'])}"
            + (f"; **collapsed embedding** (z_std) in {', '.join(p['collapsed'])}" if p["collapsed"] else "")
            + "\n"
            for p in provenance_items(t)
        )
    return text


def row_name(t: Rendered, i: int) -> str:
    """A row's label plus its fixed cells (the LooC tables repeat 'LooC': the check-marks tell rows apart); an
    added row's label alone (it has no fixed cells)."""
    if i >= len(t.paper) - t.added:
        return t.paper[i][0]
    fixed = [f"{h.split('/')[-1]} {o}" for h, c, o in zip(t.headers[1:], t.cells[1:], t.ours[i][1:]) if c is None]
    return t.paper[i][0] + (f" ({', '.join(fixed)})" if fixed else "")


def provenance_items(t: Rendered) -> list[dict]:
    out = []
    for i, orow in enumerate(t.ours):
        for h, p, o in zip(t.headers, t.paper[i], orow):
            if isinstance(o, Value):
                cmds = []
                for r in o.records:
                    for c in r.get("steps") or [r.get("command", "?")]:
                        if c not in cmds:
                            cmds.append(c)
                out.append(
                    {
                        "row": row_name(t, i),
                        "column": h,
                        "value": fmt_value(o, p),
                        "records": [r.get("id", "?") for r in o.records],
                        "runs": list(dict.fromkeys(r.get("run_id", "?") for r in o.records)),
                        "commands": cmds,
                        "configurations": o.families,
                        "collapsed": collapsed_runs(o.records),
                    }
                )
    return out


def collapsed_runs(records: list[dict]) -> list[str]:
    """The runs among ``records`` whose probed checkpoint had a collapsed embedding (``pretrain_z_std``, written
    by probes since the collapse monitor; older records have none)."""
    zs = [(r.get("run_id", "?"), r["pretrain_z_std"]["x_sqrt_dim"]) for r in records if r.get("pretrain_z_std")]
    if not zs:
        return []
    from cssl_bench.collapse import COLLAPSED_BELOW

    return list(dict.fromkeys(run for run, rel in zs if rel < COLLAPSED_BELOW))


def render_json(t: Rendered, provenance: bool = False) -> str:
    rows = []
    for _i, (prow, orow) in enumerate(zip(t.paper, t.ours)):
        row = {}
        for h, p, o in zip(t.headers, prow, orow):
            if isinstance(o, str):
                row[h] = o
                continue
            d = {
                "paper": p,
                "ours": None if o is None else round(o.mean, 2),
                "text": fmt_value(o, p),
                "delta": None if o is None or parse_paper(p) is None else round(o.mean - parse_paper(p), 2),
                "n": 0 if o is None else o.n,
                "std": None if o is None or o.std is None else round(o.std, 3),
                "pm": None if o is None or o.pm is None else round(o.pm, 3),
            }
            if provenance and o is not None:
                d["records"] = [r.get("id") for r in o.records]
                d["runs"] = list(dict.fromkeys(r.get("run_id") for r in o.records))
                d["commands"] = list(
                    dict.fromkeys(c for r in o.records for c in (r.get("steps") or [r.get("command")]))
                )
                d["collapsed_runs"] = collapsed_runs(o.records)
            row[h] = d
        rows.append(row)
    added = [row[t.headers[0]] for row in rows[len(rows) - t.added :]] if t.added else []
    return (
        json.dumps(
            {
                "table": t.spec.name,
                "paper_csv": t.spec.csv,
                "scale": t.scale,
                "caption": t.caption,
                "headers": t.headers,
                "rows": rows,
                **({"added_rows": added} if added else {}),
                **(
                    {
                        "random_init": {
                            h: {
                                "baseline": key,
                                "label": BASELINE_LABELS[key],
                                "mean": round(v.mean, 2),
                                "std": None if v.std is None else round(v.std, 3),
                                "n": v.n,
                                "text": fmt_mean_std(v),
                            }
                            for h, (key, v) in t.baselines.items()
                        }
                    }
                    if t.baselines
                    else {}
                ),
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


# --- the papers' findings, checked on ours -------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A claim of a paper as inequalities between cells: each ``(a, b)`` says cell a > cell b, a cell
    being (row index, header). ``check_finding`` judges it on our numbers, with the seeds' spread."""

    table: str
    text: str
    greater: tuple[tuple[tuple[int, str], tuple[int, str]], ...]


def _best(rows: range | tuple, col: str, winner: int) -> tuple:
    return tuple(((winner, col), (r, col)) for r in rows if r != winner)


FINDINGS = (
    Finding(
        "rotation",
        "Adding rotation to MoCo's augmentations lowers rotation accuracy",
        (((1, "Rotation/Acc."), (2, "Rotation/Acc.")),),
    ),
    Finding(
        "rotation",
        "Sharing the rotation between q and k does not restore it",
        (((1, "Rotation/Acc."), (3, "Rotation/Acc.")),),
    ),
    Finding(
        "rotation",
        "LooC with rotation restores rotation accuracy (above MoCo and MoCo + Rotation)",
        (((4, "Rotation/Acc."), (1, "Rotation/Acc.")), ((4, "Rotation/Acc."), (2, "Rotation/Acc."))),
    ),
    Finding(
        "rotation",
        "LooC + Rotation keeps more IN-100 accuracy than MoCo + Rotation",
        (((4, "IN-100/top-1"), (2, "IN-100/top-1")),),
    ),
    Finding(
        "finegrained",
        "LooC with colour beats MoCo on fine-grained iNat-1k",
        (((1, "iNat-1k/top-1"), (0, "iNat-1k/top-1")),),
    ),
    Finding("finegrained", "LooC++ is best on iNat-1k", _best(range(5), "iNat-1k/top-1", 4)),
    Finding(
        "finegrained",
        "LooC with colour and rotation is best on Flowers-102 few-shot",
        _best(range(5), "Flowers-102/5-shot", 3) + _best(range(5), "Flowers-102/10-shot", 3),
    ),
    Finding(
        "robustness",
        "Rotation helps ObjectNet-13 (LooC with rotation above MoCo)",
        (((2, "ON-13/top-1"), (1, "ON-13/top-1")),),
    ),
    Finding(
        "robustness",
        "Texture helps corruption robustness (LooC with texture above MoCo on IN-C-100 All)",
        (((3, "IN-C-100 (top-1)/All"), (1, "IN-C-100 (top-1)/All")),),
    ),
    Finding(
        "heads",
        "Concatenating all heads is best on IN-100, iNat-1k and Flowers-102 few-shot",
        _best(range(5), "IN-100/top-1", 4)
        + _best(range(5), "iNat-1k/top-1", 4)
        + _best(range(5), "Flowers-102/5-shot", 4),
    ),
    Finding("methods", "SimSiam is the best at 100 epochs", _best(range(5), "100 ep", 4)),
    Finding(
        "methods",
        "Every method improves with longer pre-training (100 -> 800 epochs)",
        tuple(((r, "800 ep"), (r, "100 ep")) for r in range(5)),
    ),
    Finding(
        "transfer",
        "Every pre-training beats scratch on VOC 07 AP",
        tuple(((r, "VOC 07 detection/AP"), (0, "VOC 07 detection/AP")) for r in range(1, 8)),
    ),
    Finding(
        "transfer",
        "MoCo v2 beats ImageNet supervised on VOC 07 AP",
        (((3, "VOC 07 detection/AP"), (1, "VOC 07 detection/AP")),),
    ),
    Finding(
        "transfer",
        "SimSiam's optimal recipe beats its base recipe on VOC 07 AP",
        (((7, "VOC 07 detection/AP"), (6, "VOC 07 detection/AP")),),
    ),
)


# How many pooled seed stds a margin must exceed for a verdict (the "two pooled seed stds").
CONFIDENCE_STDS = 2.0


def pooled_std(a: Value, b: Value) -> float | None:
    """The pooled seed std of two cells, ``sqrt((s_a^2 + s_b^2) / 2)`` of their sample stds across seeds (ddof 1);
    None where either cell has fewer than two seeds (its std is unknown)."""
    if a.n < 2 or b.n < 2 or a.std is None or b.std is None:
        return None
    return math.sqrt((a.std**2 + b.std**2) / 2)


def compare_cells(a: Value, b: Value) -> dict:
    """One inequality ``a > b`` on our numbers: ``margin`` (a - b of the one-decimal means the tables show, rounded
    to 0.1), ``std`` (``pooled_std``; None: unknown), ``seeds`` ((n_a, n_b)) and ``status``: ``"holds"`` when the
    margin exceeds ``CONFIDENCE_STDS`` pooled stds, ``"fails"`` when it is below minus that, ``"within"`` when it
    lies in between (bounds included), ``"unknown"`` when the std is unknown (a cell of one seed)."""
    margin = round(round(a.mean, 1) - round(b.mean, 1), 1)
    std = pooled_std(a, b)
    if std is None:
        status = "unknown"
    elif margin > CONFIDENCE_STDS * std:
        status = "holds"
    elif margin < -CONFIDENCE_STDS * std:
        status = "fails"
    else:
        status = "within"
    return {"margin": margin, "std": std, "seeds": (a.n, b.n), "status": status}


def _verdict(comparisons: list[dict]) -> tuple[str, dict]:
    """The verdict of a finding from its inequalities (``compare_cells``) and the deciding one (see
    ``check_finding``)."""
    fails = [c for c in comparisons if c["status"] == "fails"]
    if fails:
        return "disagrees", min(fails, key=lambda c: c["margin"])
    unsure = [c for c in comparisons if c["status"] in ("within", "unknown")]
    if unsure:
        return "inconclusive", min(unsure, key=lambda c: c["margin"])
    return "agrees", min(comparisons, key=lambda c: c["margin"])


def check_finding(f: Finding, t: Rendered) -> dict:
    """A finding checked on table ``t``: ``{"table", "finding", "paper", "ours", "verdict", "margin", "std",
    "seeds", "numbers"}``.

    ``paper``: every inequality holds on the paper's numbers. ``ours``: every inequality holds on our means (None
    where a cell is missing). Each inequality a > b is judged on its margin (a - b of the one-decimal means)
    against ``CONFIDENCE_STDS`` (2) pooled seed stds of its two cells (``compare_cells``). ``verdict``:

    - ``"disagrees"`` when some inequality fails beyond two pooled stds (deciding: the most negative such margin);
    - else ``"inconclusive"`` when some inequality's margin lies within two pooled stds, or its std is unknown
      because a cell has one seed only: a single-seed comparison is never conclusive, whatever its margin
      (deciding: the smallest such margin; ``std`` None, shown "n/a");
    - else ``"agrees"``: every inequality holds beyond two pooled stds (deciding: the smallest margin);
    - ``"no data"`` where a cell is missing (``margin``, ``std`` and ``seeds`` None).

    ``margin``, ``std`` and ``seeds`` ((n_a, n_b)) are the deciding inequality's; ``numbers``: each cell of the
    finding as ``row header: mean[ ± std] (paper x)``."""
    col = {h: j for j, h in enumerate(t.headers)}

    def paper(c):
        return parse_paper(t.paper[c[0]][col[c[1]]])

    def value(c) -> Value | None:
        v = t.ours[c[0]][col[c[1]]]
        return v if isinstance(v, Value) else None

    def label(c):
        return f"{row_name(t, c[0])} {c[1]}"

    pv = all(paper(a) > paper(b) for a, b in f.greater)
    pairs = [(value(a), value(b)) for a, b in f.greater]
    cells = list(dict.fromkeys(c for pair in f.greater for c in pair))
    numbers = "; ".join(f"{label(c)}: {fmt_mean_std(value(c))} (paper {paper(c)})" for c in cells)
    out = {"table": f.table, "finding": f.text, "paper": pv, "numbers": numbers}
    if any(a is None or b is None for a, b in pairs):
        return {**out, "ours": None, "verdict": "no data", "margin": None, "std": None, "seeds": None}
    comparisons = [compare_cells(a, b) for a, b in pairs]
    verdict, deciding = _verdict(comparisons)
    return {
        **out,
        "ours": all(round(a.mean, 1) > round(b.mean, 1) for a, b in pairs),
        "verdict": verdict,
        "margin": deciding["margin"],
        "std": deciding["std"],
        "seeds": deciding["seeds"],
    }


def _fmt_std(c: dict) -> str:
    if c["seeds"] is None:
        return MISSING
    return "n/a" if c["std"] is None else f"{c['std']:.2f}"


FINDINGS_LEGEND = (
    "Verdict: each finding is a set of inequalities between cells (a > b). An inequality's margin is a − b of the "
    "means shown (points); it holds when the margin exceeds two pooled seed stds, sqrt((s_a² + s_b²)/2) of the two "
    "cells' sample stds across seeds, and fails when it is below minus that. **agrees**: every inequality holds; "
    "**disagrees**: some inequality fails; **inconclusive**: neither (a margin within two pooled stds, or a cell of "
    "one seed, whose std is unknown: pooled std n/a); **no data**: a cell is missing. Margin, pooled std and seeds "
    "are the deciding inequality's: the most negative failing one, else the smallest inconclusive one, else the "
    "smallest. Numbers: mean ± sample std across seeds (mean alone for one seed)."
)


def findings_markdown(records: list[dict], scale: str, tables: list[str] | None = None) -> str:
    """A markdown table of the findings checked on our numbers at ``scale`` (``check_finding``): per finding its
    verdict (agrees / disagrees / inconclusive / no data), the deciding margin (points, negative where the
    inequality fails), the pooled seed std it was judged against ("n/a" where a cell has one seed), the seeds of
    the deciding cells, and the numbers; then ``FINDINGS_LEGEND``. ``tables``: only these tables' findings."""
    names = tables or list(TABLES)
    built = {n: build(n, records, scale) for n in names}
    lines = [
        f"| table | finding | ours at {scale} scale | margin | pooled std | seeds | numbers: ours (paper) |",
        "|:---|:---|:---|---:|---:|---:|:---|",
    ]
    for f in FINDINGS:
        if f.table not in built:
            continue
        c = check_finding(f, built[f.table])
        lines.append(
            _md_line(
                [
                    f.table,
                    f.text,
                    c["verdict"],
                    MISSING if c["margin"] is None else f"{c['margin']:+.1f}",
                    _fmt_std(c),
                    MISSING if c["seeds"] is None else f"{c['seeds'][0]} vs {c['seeds'][1]}",
                    c["numbers"],
                ]
            )
        )
    return "\n".join(lines) + "\n\n" + FINDINGS_LEGEND + "\n"
