"""The collapse monitor's verdicts, without torch (tables and records read them): ``z_std`` (SimSiam's Fig. 2
metric, ``methods.base.output_std``) relative to embeddings spread over the sphere, a run's value at a checkpoint's
step (its log.csv), and the one-line warning when it says the embedding collapsed."""

from __future__ import annotations

import csv
from pathlib import Path

COLLAPSED_BELOW = 0.05  # z_std x sqrt(dim) under this (5% of the spread over the sphere) at the end of a run: collapsed


def collapse_warning(info: dict) -> str | None:
    """A one-line warning when a run's last logged ``z_std`` says its embedding collapsed (run.json ``info``).
    z_std x sqrt(dim) is 1 for embeddings spread over the sphere and 0 when every image maps to one vector."""
    rel = info.get("z_std_x_sqrt_dim")
    if rel is None or rel >= COLLAPSED_BELOW:
        return None
    return (
        f"{info.get('method', 'this run')}'s embedding collapsed during pretraining (z_std x sqrt(dim) = {rel:.3g} "
        f"at step {info.get('z_std_step')}; 1 = spread over the sphere, 0 = one vector for every image): "
        f"its probes measure a collapsed model (log.csv has the z_std trace)"
    )


def x_sqrt_dim(z_std: float, dim: int) -> float:
    """z_std relative to embeddings spread over the sphere (1/sqrt(dim)): 1 spread, 0 collapsed."""
    return round(z_std * dim**0.5, 4)


def checkpoint_z_std(run_dir: Path, step: int, dim: int | None) -> dict | None:
    """The last ``z_std`` a run logged at or before ``step`` (its log.csv), as {"step", "value", "x_sqrt_dim"};
    None without a logged value or an embedding dimension."""
    path = Path(run_dir) / "log.csv"
    if not dim or not path.exists():
        return None
    found = None
    with open(path) as f:
        for r in csv.DictReader(f):
            if r.get("z_std") and int(r["step"]) <= step:
                found = {
                    "step": int(r["step"]),
                    "value": float(r["z_std"]),
                    "x_sqrt_dim": x_sqrt_dim(float(r["z_std"]), dim),
                }
    return found
