"""Atomic checkpoints and run directories.

A run directory holds ``config.yaml`` (the full recipe), ``checkpoints/last.pt`` (and ``prev.pt``, the
previous good one; ``epoch_N.pt`` for kept budgets), ``log.csv`` and ``run.json``. Checkpoints are
written to a temporary file, fsynced, then renamed over the old one, so a kill at any moment leaves a
loadable checkpoint. They are loaded with ``weights_only=True``: a pickle that would run code is refused.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import signal
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from filelock import FileLock, Timeout

from cssl_bench import UserError, __version__
from cssl_bench.config import check_recipe_dict

FORMAT = "cssl-bench/1"

# Fault injection for the reliability tests (documented in docs/reliability.md): CSSL_BENCH_FAULT=KIND:N
# makes the N-th checkpoint write of this process fail: ``kill`` SIGKILLs the process halfway through
# writing the temporary file, ``enospc`` raises "No space left on device" there.
_writes = 0


def _fault(stage: str) -> None:
    spec = os.environ.get("CSSL_BENCH_FAULT", "")
    if ":" not in spec or stage != "mid-write":
        return
    kind, n = spec.split(":", 1)
    if kind not in ("kill", "enospc") or not n.isdigit() or int(n) != _writes:
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, "No space left on device")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (``reason``: the OS's words); the file it would replace is intact."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"could not write checkpoint {path} ({reason}); the previous checkpoint is intact")
        self.path, self.reason = path, reason


def check_writable_dir(folder: Path) -> None:
    """Create ``folder`` if needed, then write and remove a temporary file in it: an ``OSError`` (permission
    denied, a file in the way, ...) says, before any work, that records or checkpoints could not be written there."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cssl-write-check-", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(state: dict, path: Path, keep_previous: bool = True) -> None:
    """Write ``state`` atomically to ``path``; the checkpoint it replaces becomes ``prev.pt``."""
    global _writes
    _writes += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            buf = io.BytesIO()
            torch.save(state, buf)
            data = buf.getbuffer()
            f.write(data[: len(data) // 2])
            _fault("mid-write")
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name("prev.pt"))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(path, e.strerror or str(e)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_checkpoint(path: Path) -> dict:
    """Load a cssl-bench checkpoint safely; every failure is a one-line ``UserError``."""
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UserError(f"checkpoint {path} is corrupted or truncated (not a torch checkpoint archive)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next(
            (ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "it holds more than plain weights"
        )
        raise UserError(f"checkpoint {path} was refused: loading it would run code ({why[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} is corrupted or truncated ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a cssl-bench checkpoint")
    return state


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """``last.pt`` if it loads, else ``prev.pt`` (a kill between the two renames leaves only prev); None when
    neither exists. When checkpoints exist but none loads, a ``UserError`` names each and why: resuming
    must never silently start again from epoch 0 and overwrite them."""
    damaged = []
    for name in ("last.pt", "prev.pt"):
        p = run_dir / "checkpoints" / name
        if p.exists():
            try:
                load_checkpoint(p)
                return p
            except UserError as e:
                damaged.append(str(e))
    if damaged:
        raise UserError(
            f"cannot resume {run_dir}: no loadable checkpoint ({'; '.join(damaged)}); nothing was changed "
            f"(move the damaged checkpoints away to start the run again)"
        )
    return None


def write_run_json(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "run.json", json.dumps({"cssl_bench_version": __version__, **info}, indent=2))


def run_complete(run_dir: Path, recipe) -> bool:
    """Whether ``run_dir`` holds a finished pretraining of ``recipe``: its run.json says ``complete`` for the
    recipe's hash (False when run.json is missing or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("status") == "complete" and info.get("config_hash") == recipe.hash()


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` while a process trains into ``run_dir``; a second process that tries to train
    into the same directory (two ``reproduce`` commands sharing a runs folder, a ``pretrain --resume`` beside a
    running one) gets a one-line error instead of interleaving its checkpoints with the first's. The lock is
    an OS file lock (``filelock``): a killed process releases it, so a killed run resumes without clean-up."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"{run_dir} is being trained by another process (it holds {run_dir / LOCK_NAME}); "
            "wait for it to finish or use another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def wait_until_free(run_dir: Path, on_wait: Callable[[], None] | None = None) -> bool:
    """Return once no process holds ``run_dir``'s lock (``run_lock``), calling ``on_wait`` first if one does;
    True when it had to wait. Creates nothing where no lock file exists."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return False
    try:
        with FileLock(str(path), timeout=0):
            return False
    except Timeout:
        pass
    if on_wait is not None:
        on_wait()
    with FileLock(str(path)):  # blocks until the trainer exits (or is killed)
        return True


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(recipe dict, run.json) of a run directory, with one-line errors when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory {run_dir} does not exist")
    cfg = run_dir / "config.yaml"
    if not cfg.exists():
        raise UserError(f"{run_dir} is not a cssl-bench run directory (no config.yaml)")
    try:
        recipe = yaml.safe_load(cfg.read_text())
        info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserError(f"{run_dir}: unreadable run files ({type(e).__name__})") from None
    check_recipe_dict(recipe, str(cfg), "; the run directory is damaged")
    if not isinstance(info, dict):
        info = {}
    return recipe, info
