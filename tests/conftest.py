import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
# Tests compare against committed fp32 records and config hashes; train.precision auto would pick bf16 on a CPU
# with AMX-BF16 / AVX512-BF16 (cssl_bench/precision.py reads this variable each time auto is resolved).
# Tests that need either answer set or delete it themselves (monkeypatch); subprocesses inherit it.
os.environ.setdefault("CSSL_BENCH_CPU_BF16", "0")

import subprocess
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Caches and results go to temporary folders: tests never touch committed files or ~/.cache."""
    root = tmp_path_factory.mktemp("cssl")
    os.environ["CSSL_BENCH_CACHE"] = str(root / "cache")
    os.environ["CSSL_BENCH_RESULTS"] = str(root / "results")
    yield


# Small embedded dataset for fast tests: 640 training / 200 test images at 32 px.
SMALL = ["--set", "data.embedded_train=640", "--set", "data.embedded_test=200", "--set", "data.workers=0"]


def load_benchmark(name):
    """Import the benchmark suite's ``benchmarks/NAME.py`` as a module (the benchmarks are scripts, not a package).
    Only the suite: no test imports ``benchmarks/diagnostics/`` (what a test needs of a diagnostic lives in the
    package, e.g. ``cssl_bench.eval.diagnostics``)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run the real console entry point in a subprocess; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cssl_bench", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=e,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


def run_cli_here(*args, env=None, **kw):
    """The console entry point called in this process (no interpreter and torch start-up: ~4 s saved per call),
    for commands refused before any work; output and exit status as ``run_cli``'s. Calls that set ``env`` (read
    at import by rich) or pass subprocess options still go through ``run_cli``."""
    import contextlib
    import io

    if env or kw:
        return run_cli(*args, env=env, **kw)
    from cssl_bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(["cssl-bench", *map(str, args)], code, out.getvalue(), err.getvalue())


# CLI options for a few-second pretraining: small data, no loader workers, a tiny backbone
FAST_CLI = [
    "--set",
    "data.embedded_train=256",
    "--set",
    "data.embedded_test=64",
    "--set",
    "data.workers=0",
    "--batch-size",
    "32",
    "--backbone",
    "resnet10-w0.125",
    "--quiet",
]


def one_line_error(p, code=None, *contains) -> str:
    """Assert a refused command: non-zero exit (``code`` when given), stderr one ``error:`` line, no traceback,
    and each of ``contains`` (strings, or lists of strings) in it. Returns the line."""
    assert p.returncode != 0, p.stdout
    if code is not None:
        assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert "Traceback" not in p.stderr
    for c in contains:
        for text in [c] if isinstance(c, str) else c:
            assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def small_args():
    return list(SMALL)
