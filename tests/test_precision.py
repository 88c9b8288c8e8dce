"""Precision options of the pretraining loop on CPU: bf16 and fp16 autocast (fp16 with a GradScaler),
channels-last, and torch.compile (slow). A few steps of a tiny model each."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cssl_bench.config import load_recipe
from cssl_bench.train.loop import autocast, pretrain
from tests.conftest import load_benchmark


def tiny(method: str = "simclr", **train) -> object:
    return load_recipe(method, "tiny", {
        "model": {"backbone": "resnet10-w0.125"},
        "data": {"embedded_train": 32, "embedded_test": 16, "workers": 0},
        "train": {"epochs": 1, "batch_size": 16, "log_every": 1, **train},
        "params": {"hidden": 32} if method == "simclr" else {},
    })


def _log_losses(out: Path) -> list[float]:
    import csv

    with open(out / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_computes_in_the_requested_dtype(precision, dtype):
    lin = torch.nn.Linear(8, 4)
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast(precision, "cpu"):
        assert lin(torch.randn(2, 8)).dtype == dtype
        assert conv(torch.randn(1, 3, 8, 8)).dtype == dtype
        # the contrastive losses stay accurate: autocast runs cross-entropy in fp32
        assert torch.nn.functional.cross_entropy(lin(torch.randn(2, 8)), torch.tensor([0, 1])).dtype == torch.float32
    assert lin(torch.randn(2, 8)).dtype == torch.float32  # only inside the context


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_pretraining_steps(precision, tmp_path):
    """Two steps in reduced precision: finite losses close to fp32's first loss (same initial weights,
    same batch), fp32 master weights that moved, and for fp16 a GradScaler whose state is checkpointed."""
    ref = pretrain(tiny(precision="fp32"), tmp_path / "fp32", show_progress=False)
    out = pretrain(tiny(precision=precision), tmp_path / precision, show_progress=False)
    losses, ref_losses = _log_losses(out), _log_losses(ref)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] == pytest.approx(ref_losses[0], rel=0.02)  # reduced precision, not a different model
    init = torch.load(out / "checkpoints" / "prev.pt", weights_only=True)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    w0, w1 = init["model"]["backbone.conv1.weight"], last["model"]["backbone.conv1.weight"]
    assert w1.dtype == torch.float32 and not torch.equal(w0, w1)
    if precision == "fp16":
        assert last["scaler"]["scale"] > 0  # enabled: the loss scale is part of the checkpoint
    else:
        assert last["scaler"] == {}  # bf16 needs no loss scaling


def test_channels_last_option(tmp_path):
    """``model.channels_last`` stores the 4-d weights in NHWC order, and training gives the same first
    loss as the default layout (a memory format, not a different computation)."""
    nhwc = pretrain(tiny(), tmp_path / "nhwc", show_progress=False, stop_after_steps=1)
    from dataclasses import replace

    r = tiny()
    r = replace(r, model=replace(r.model, channels_last=False))
    nchw = pretrain(r, tmp_path / "nchw", show_progress=False, stop_after_steps=1)
    w = torch.load(nhwc / "checkpoints" / "last.pt", weights_only=True)["model"]["backbone.layer1.0.conv1.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    w = torch.load(nchw / "checkpoints" / "last.pt", weights_only=True)["model"]["backbone.layer1.0.conv1.weight"]
    assert w.is_contiguous()
    assert _log_losses(nhwc)[0] == pytest.approx(_log_losses(nchw)[0], rel=1e-5)


@pytest.mark.slow
def test_compile_option(tmp_path):
    """``train.compile`` runs the step through torch.compile (inductor) and trains the same model."""
    ref = pretrain(tiny(), tmp_path / "eager", show_progress=False)
    out = pretrain(tiny(compile=True), tmp_path / "compiled", show_progress=False)
    assert _log_losses(out)[0] == pytest.approx(_log_losses(ref)[0], rel=1e-4)


def test_train_step_benchmark_runs(tmp_path):
    """benchmarks/train_step.py end to end on the smallest setting: a row per method with its FLOPs
    (about 3x the forward FLOPs of two ResNet-18 views: forward + backward) and the JSON file."""
    import json

    bench = load_benchmark("train_step")
    rc = bench.main(["--configs", "r18-32", "--methods", "simclr", "--batch", "2", "--steps", "1", "--rounds", "1",
                     "--warmup", "0", "--no-lightly", "--out", str(tmp_path)])
    assert rc == 0
    info = json.loads((tmp_path / "train_step-cpu-fp32.json").read_text())
    (row,) = info["rows"]
    assert row["method"] == "simclr" and row["images_per_s"] > 0 and info["matmul_peak_tflops"]["fp32"] > 0
    # ResNet-18 with the CIFAR stem at 32 px: 0.556 GMAC per image forward; 2 views x 2 images, fwd + bwd ~ 3x
    forward = 2 * 0.556e9 * 2 * 2
    assert 2.5 * forward < row["flops_per_step"] < 3.2 * forward
    assert info["machine"]["cores"] == os.cpu_count() and info["machine"]["torch"] == torch.__version__


def test_profile_step_benchmark_runs(tmp_path, monkeypatch):
    """benchmarks/profile_step.py end to end: MoCo v2 with a recipe override and a forced split-BN path; the
    JSON has the step times, the override, and operators whose self times add up to at most the total."""
    import json

    from cssl_bench.methods.base import SplitBatchNorm2d

    monkeypatch.setattr(SplitBatchNorm2d, "PATH", "auto")  # main() sets the class's path: restored after the test
    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    bench = load_benchmark("profile_step")
    rc = bench.main(["moco-v2", "--batch", "8", "--steps", "1", "--warmup", "0", "--split-bn", "view", "--top", "5",
                     "--set", "params.queue_size=64", "--label", "t", "--out", str(tmp_path)])
    assert rc == 0 and SplitBatchNorm2d.PATH == "view"
    info = json.loads((tmp_path / "profile-moco-v2-cpu-fp32-t.json").read_text())
    assert info["sets"] == ["params.queue_size=64"] and info["split_bn"] == "view" and len(info["step_ms"]) == 1
    top = info["top"]
    assert len(top) == 5 and all(r["self_ms_per_step"] > 0 for r in top)
    assert sum(r["self_ms_per_step"] for r in top) <= info["self_ms_per_step_total"] + 1e-6
    assert any("convolution" in r["name"] for r in top)


def test_ratio_bound_pairs_profiles_and_computes_the_bound(tmp_path, monkeypatch, capsys):
    """benchmarks/ratio_bound.py on hand-made profiles: ours is paired with lightly's profile of the same step
    only; the bound is lightly's step over our convolution time (forward + backward kernels, nothing else)."""
    import json

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    bench = load_benchmark("ratio_bound")

    def prof(side, method, step_ms, conv_fwd, conv_bwd, other, batch=64):
        top = [{"name": "aten::convolution_backward", "self_ms_per_step": conv_bwd},
               {"name": "aten::mkldnn_convolution", "self_ms_per_step": conv_fwd},
               {"name": "aten::native_batch_norm", "self_ms_per_step": other}]
        return {"benchmark": "profile_step", "side": side, "method": method, "config": "r18-32", "batch": batch,
                "precision": "fp32", "channels_last": True, "sets": [], "step_ms": step_ms, "top": top}

    profiles = {"a": prof("ours", "simclr", [900.0, 1100.0], 300.0, 500.0, 150.0),
                "b": prof("lightly", "simclr", [1200.0], 310.0, 490.0, 300.0),
                "c": prof("ours", "byol", [1000.0], 400.0, 400.0, 100.0),       # no lightly profile: no row
                "d": prof("lightly", "simclr", [5000.0], 1.0, 1.0, 1.0, batch=32)}  # another batch: not a pair
    for name, p in profiles.items():
        (tmp_path / f"profile-{name}.json").write_text(json.dumps(p))
    out = tmp_path / "bound.json"
    assert bench.main([str(tmp_path), "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["method"] == "simclr" and row["ours_step_ms"] == 1000.0 and row["lightly_step_ms"] == 1200.0
    assert row["ours_conv_ms"] == 800.0 and row["lightly_conv_ms"] == 800.0
    assert row["ratio"] == 1.2 and row["conv_share"] == 0.8 and row["bound"] == 1.5
    assert "simclr" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench.main([str(empty)]) == 1 and "no pair" in capsys.readouterr().err
    short = tmp_path / "short"  # a profile whose recorded operators miss the backward convolution: no bound from it
    short.mkdir()
    cut = dict(profiles["b"], top=profiles["b"]["top"][1:])
    for name, p in (("a", profiles["a"]), ("b", cut)):
        (short / f"profile-{name}.json").write_text(json.dumps(p))
    assert bench.main([str(short)]) == 1 and "too few operators" in capsys.readouterr().err
