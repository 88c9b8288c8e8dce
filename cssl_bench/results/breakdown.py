"""Per-corruption accuracy behind the rows of LooC Table 3 (``robustness``) or Table 5 (``heads``): which corruptions
separate two rows.

A row's ``IN-C-100 All`` cell is one number over 15 corruptions x 5 severities; the probes that made it also
stored every ``corruption/<name>/s<k>`` record. ``corruption_breakdown`` takes the records the table itself
selects for each row's All cell and reads the per-corruption records of the same probes (run, feature,
checkpoint epoch, protocol): per seed the mean over its severities, then mean and sample std across seeds.
Reads records only (``benchmarks/diagnostics/corruption_breakdown.py`` prints and stores it).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict

from cssl_bench.results import tables as T


def _probe_key(rec: dict) -> tuple:
    return rec["run_id"], rec["feature"], rec["epochs"], json.dumps(rec.get("protocol"), sort_keys=True)


def mean_std(values: list[float]) -> dict:
    """``{"values", "mean", "std"}`` rounded to 2 decimals; std is the sample std (None for one value)."""
    return {
        "values": [round(v, 2) for v in values],
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
    }


# the tables with an IN-C-100 All column, and that column's header
ALL_COLUMNS = {"robustness": "IN-C-100 (top-1)/All", "heads": "IN-C-100/all top-1"}


def corruption_breakdown(records: list[dict], scale: str, table: str = "robustness") -> list[dict]:
    """One dict per row of ``table`` (``ALL_COLUMNS``) with an All value: ``row`` (its name, with its check marks),
    ``seeds``, ``clean`` (the row's IN-100 top-1 cell, or None), ``all`` (its All cell) and ``corruptions``:
    corruption name -> ``mean_std`` of the per-seed means over severities, in the order the records name them."""
    if table not in ALL_COLUMNS:
        raise ValueError(f"no IN-C-100 All column in table {table!r}; tables: {', '.join(ALL_COLUMNS)}")
    t = T.build(table, records, scale)
    all_col = t.headers.index(ALL_COLUMNS[table])
    clean_col = next(j for j, h in enumerate(t.headers) if h == "IN-100/top-1")
    by_probe: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["metric"].startswith("corruption/") and r["metric"].count("/") == 2:
            by_probe[_probe_key(r)].append(r)
    out = []
    for i, row in enumerate(t.ours):
        v = row[all_col]
        if not isinstance(v, T.Value):
            continue
        per_seed: dict[str, list[float]] = {}
        seeds = []
        for rec in sorted(v.records, key=lambda r: r["seed"]):
            seeds.append(rec["seed"])
            severities: dict[str, list[float]] = defaultdict(list)
            for x in by_probe[_probe_key(rec)]:
                severities[x["metric"].split("/")[1]].append(x["value"])
            for name, vals in severities.items():
                per_seed.setdefault(name, []).append(statistics.fmean(vals))
        clean = row[clean_col]
        out.append(
            {
                "row": T.row_name(t, i),
                "seeds": seeds,
                "clean": mean_std([r["value"] for r in clean.records]) if isinstance(clean, T.Value) else None,
                "all": mean_std([r["value"] for r in v.records]),
                "corruptions": {name: mean_std(vals) for name, vals in per_seed.items()},
            }
        )
    return out


def _config_label(rec: dict) -> str:
    """``method[augment;heads=...] feature`` of a record (its run's configuration without the seed)."""
    aug = ",".join(rec.get("augment") or [])
    heads = rec.get("variance_heads")
    inner = aug + (f";heads={','.join(heads) or 'none'}" if heads is not None and heads != rec.get("augment") else "")
    return f"{rec['method']}{f'[{inner}]' if inner else ''} {rec['feature']}"


def corruption_by_config(records: list[dict]) -> list[dict]:
    """The corruption probes of any store grouped by configuration (method, augmentations, variance heads,
    feature, checkpoint epoch, probe protocol; seeds pooled): one dict per configuration with ``config`` (a
    label), ``seeds``, ``all`` (``mean_std`` of the ``corruption/all`` records) and ``corruptions`` as in
    ``corruption_breakdown``. For runs that no table row probes for corruption (e.g. LooC Table 2's runs)."""
    by_probe: dict[tuple, list[dict]] = defaultdict(list)
    alls: dict[tuple, dict] = {}
    for r in records:
        if r["metric"] == "corruption/all":
            alls[_probe_key(r)] = r
        elif r["metric"].startswith("corruption/") and r["metric"].count("/") == 2:
            by_probe[_probe_key(r)].append(r)
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for key, rec in alls.items():
        groups[(_config_label(rec), rec["epochs"], json.dumps(rec.get("protocol"), sort_keys=True))].append(key)
    out = []
    for (label, _, _), keys in groups.items():
        keys.sort(key=lambda k: alls[k]["seed"])
        per_seed: dict[str, list[float]] = {}
        for k in keys:
            severities: dict[str, list[float]] = defaultdict(list)
            for x in by_probe[k]:
                severities[x["metric"].split("/")[1]].append(x["value"])
            for name, vals in severities.items():
                per_seed.setdefault(name, []).append(statistics.fmean(vals))
        out.append(
            {
                "config": label,
                "seeds": [alls[k]["seed"] for k in keys],
                "all": mean_std([alls[k]["value"] for k in keys]),
                "corruptions": {name: mean_std(vals) for name, vals in per_seed.items()},
            }
        )
    return out
