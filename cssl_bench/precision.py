"""``train.precision: auto``: bf16 autocast where the device computes bf16 fast, fp32 elsewhere.

``auto`` resolves to

- on CUDA: ``bf16`` when ``torch.cuda.is_bf16_supported(including_emulation=False)`` (Ampere and newer;
  ROCm), else ``fp32``;
- on the CPU: ``bf16`` when the CPU has AMX-BF16 or AVX512-BF16 (the ``amx_bf16`` / ``avx512_bf16`` flags of
  ``/proc/cpuinfo`` on Linux; elsewhere ``torch.cpu.get_capabilities()``), else ``fp32``: without those
  instructions bf16 kernels are emulated and several times slower than fp32.

The environment variable ``CSSL_BENCH_CPU_BF16`` forces the CPU's answer: ``1`` (the CPU counts as having
fast bf16) or ``0`` (it does not). Tests use it to get either answer on any machine; set it to ``0`` to keep
fp32 runs (and their config hashes) on a bf16 CPU.

Where ``auto`` is resolved: ``config.load_recipe`` resolves it once every layer is merged, for the device the
run will use (CUDA when ``torch.cuda.is_available()``, else the CPU), so the recipe, its hash, config.yaml,
run.json and the result records hold the precision actually used, and a bf16 run never shares a config hash
with an fp32 run. The recipe remembers the request (``Recipe.precision_requested``) for run.json. The training
loop and ``autocast`` resolve an unresolved ``auto`` too (a recipe built by hand), for their own device.

This module imports torch only when asked about CUDA (or about a non-Linux CPU).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cssl_bench import UserError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
ENV = "CSSL_BENCH_CPU_BF16"
CPUINFO = Path("/proc/cpuinfo")
# the CPU instructions that make bf16 matrix multiplications and convolutions faster than fp32 (oneDNN)
FAST_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def _cpuinfo_flags(cpuinfo: Path) -> set[str] | None:
    """The ``flags`` of the first processor in ``cpuinfo`` (x86 Linux), or None when the file cannot be read
    or has no flags line."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return None


def _torch_flags() -> set[str]:
    try:
        import torch

        caps = torch.cpu.get_capabilities()
    except Exception:  # an older torch without get_capabilities
        return set()
    return {k for k in FAST_BF16_FLAGS if caps.get(k)}


def cpu_bf16(cpuinfo: Path | str | None = None) -> tuple[bool, str]:
    """(whether this CPU computes bf16 fast, why) — the why as ``info`` shows it. ``cpuinfo``: the file to read
    (default ``/proc/cpuinfo``)."""
    forced = os.environ.get(ENV)
    if forced is not None and forced.strip() != "":
        if forced.strip() not in ("0", "1"):
            raise UserError(f"{ENV} must be 0 or 1 (forces whether the CPU has fast bf16), got {forced!r}", exit_code=2)
        return forced.strip() == "1", f"forced by {ENV}={forced.strip()}"
    path = Path(cpuinfo) if cpuinfo is not None else CPUINFO
    flags = _cpuinfo_flags(path) if (cpuinfo is not None or sys.platform.startswith("linux")) else None
    if flags is None:
        flags, source = _torch_flags(), "torch.cpu.get_capabilities()"
    else:
        source = str(path)
    have = [name for flag, name in FAST_BF16_FLAGS.items() if flag in flags]
    if have:
        return True, f"CPU has {' and '.join(have)}"
    return (
        False,
        f"CPU lacks AMX-BF16 and AVX512-BF16{'' if source == str(CPUINFO) else f' ({source})'}: bf16 is slower there",
    )


def cpu_has_fast_bf16(cpuinfo: Path | str | None = None) -> bool:
    """Whether the CPU has AMX-BF16 or AVX512-BF16 (or ``CSSL_BENCH_CPU_BF16`` says so)."""
    return cpu_bf16(cpuinfo)[0]


def cuda_bf16() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device"
    name = torch.cuda.get_device_name()
    try:
        fast = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # an older torch without the argument
        fast = torch.cuda.is_bf16_supported()
    return fast, f"{name} {'supports' if fast else 'lacks native'} bf16"


def default_device_type() -> str:
    """The device a run on this machine trains on: ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def explain_auto(device_type: str | None = None, cpuinfo: Path | str | None = None) -> tuple[str, str]:
    """(what ``auto`` resolves to on ``device_type`` (default: this machine's), why)."""
    device_type = device_type or default_device_type()
    fast, why = cuda_bf16() if device_type == "cuda" else cpu_bf16(cpuinfo)
    return ("bf16" if fast else "fp32"), why


def resolve_precision(name: str, device_type: str | None = None, cpuinfo: Path | str | None = None) -> str:
    """``name`` itself, or for ``auto`` the precision it stands for on ``device_type`` (``cuda`` or ``cpu``;
    default: this machine's): ``bf16`` or ``fp32``."""
    if name != "auto":
        return name
    return explain_auto(device_type, cpuinfo)[0]
