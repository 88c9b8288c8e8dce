"""The append-only results store: one JSON line per metric, with its provenance.

A record: ``id``, ``run_id``, ``method``, ``dataset`` (evaluated on), ``pretrain_dataset``, ``scale``,
``backbone``, ``epochs``, ``batch``, ``seed``, ``feature``, ``protocol`` (options), ``metric``, ``value``
(and ``ci95`` where a metric has one; ``data_options`` where the dataset options differ from the defaults),
``code_version``, ``config_hash``, ``command``, ``time``; ``plugin`` (and ``plugin_loaded``) for a method
defined outside the package (``plugin_provenance``).
Lines are appended under a file lock, each written whole with a single ``write`` and fsynced; a torn
last line (a killed writer) is skipped with a warning when read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from functools import lru_cache
from pathlib import Path

from filelock import FileLock, Timeout

from cssl_bench import UserError, __version__

FILENAME = "records.jsonl"


def default_results_dir() -> Path:
    return Path(os.environ.get("CSSL_BENCH_RESULTS", "runs/results"))


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the source tree when it is a checkout (``+dirty`` if modified)."""
    here = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "cssl_bench"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return f"{__version__}+g{sha.stdout.strip()}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def current_command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("cssl-bench", "__main__.py")):
        argv[0] = "cssl-bench"
    return " ".join(argv)


class ResultsStore:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_results_dir()
        self.path = self.root / FILENAME

    def append(self, records: list[dict]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.path) + ".lock", timeout=60)
            with lock:
                self._repair_tail()
                data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except Timeout:
            raise UserError(f"results store {self.root} is locked by another process for over 60 s") from None
        except PermissionError:
            raise UserError(f"cannot write to the results directory {self.root} (permission denied)") from None
        except OSError as e:
            raise UserError(f"cannot write to the results directory {self.root} ({e.strerror})") from None

    def _repair_tail(self) -> None:
        """A writer killed mid-line leaves a line without its newline: end it so the next record starts cleanly."""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
            if last != b"\n":
                with open(self.path, "ab") as f:
                    f.write(b"\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict) or "metric" not in rec or "value" not in rec:
                        raise ValueError("not a record")
                    if isinstance(rec["value"], bool) or not isinstance(rec["value"], (int, float)):
                        raise ValueError("its value is not a number")
                    out.append(rec)
                except (json.JSONDecodeError, ValueError) as e:
                    why = "" if isinstance(e, json.JSONDecodeError) or str(e) == "not a record" else f" ({e})"
                    warnings.warn(f"{self.path}:{n}: skipped an unreadable results line{why}", stacklevel=2)
        return out


def plugin_provenance(recipe) -> dict:
    """``{"plugin": ref}`` for a run of a method defined outside the package (``Recipe.plugin``: entry point name,
    distribution and version, or method file path and sha256, and its recipe file; cssl_bench/methods/plugins.py),
    plus ``plugin_loaded`` (the same keys) where the code the run was reloaded with differs; {} for built-ins."""
    ref = getattr(recipe, "plugin", None)
    if not ref:
        return {}
    loaded = getattr(recipe, "plugin_loaded", None)
    return {"plugin": dict(ref), **({"plugin_loaded": dict(loaded)} if loaded else {})}


def make_record(
    *,
    run_id: str,
    method: str,
    dataset: str,
    pretrain_dataset: str,
    scale: str,
    backbone: str,
    epochs: int,
    batch: int,
    seed: int,
    feature: str,
    protocol: dict,
    metric: str,
    value: float,
    config_hash: str,
    extra: dict | None = None,
) -> dict:
    return {
        "id": uuid.uuid4().hex[:12],
        "run_id": run_id,
        "method": method,
        "dataset": dataset,
        "pretrain_dataset": pretrain_dataset,
        "scale": scale,
        "backbone": backbone,
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "feature": feature,
        "protocol": protocol,
        "metric": metric,
        "value": round(float(value), 4),
        "code_version": code_version(),
        "config_hash": config_hash,
        "command": current_command(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
