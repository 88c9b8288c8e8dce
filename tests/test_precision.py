"""Precision options of the pretraining loop on CPU: bf16 and fp16 autocast (fp16 with a GradScaler),
``auto`` (resolved per device when the recipe is loaded), fp32 losses under autocast, channels-last, and
torch.compile (slow). A few steps of a tiny model each."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cssl_bench.config import load_recipe
from cssl_bench.train.loop import autocast, pretrain
from tests.conftest import load_benchmark


def tiny(method: str = "simclr", **train) -> object:
    return load_recipe(
        method,
        "tiny",
        {
            "model": {"backbone": "resnet10-w0.125"},
            "data": {"embedded_train": 32, "embedded_test": 16, "workers": 0},
            "train": {"epochs": 1, "batch_size": 16, "log_every": 1, **train},
            "params": {"hidden": 32} if method == "simclr" else {},
        },
    )


def _log_losses(out: Path) -> list[float]:
    import csv

    with open(out / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
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
    rc = bench.main(
        [
            "--configs",
            "r18-32",
            "--methods",
            "simclr",
            "--batch",
            "2",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--no-lightly",
            "--out",
            str(tmp_path),
        ]
    )
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

    from cssl_bench.nn.norm import SplitBatchNorm2d

    monkeypatch.setattr(SplitBatchNorm2d, "PATH", "auto")  # main() sets the class's path: restored after the test
    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    bench = load_benchmark("profile_step")
    rc = bench.main(
        [
            "moco-v2",
            "--batch",
            "8",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--split-bn",
            "view",
            "--top",
            "5",
            "--set",
            "params.queue_size=64",
            "--label",
            "t",
            "--out",
            str(tmp_path),
        ]
    )
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
        top = [
            {"name": "aten::convolution_backward", "self_ms_per_step": conv_bwd},
            {"name": "aten::mkldnn_convolution", "self_ms_per_step": conv_fwd},
            {"name": "aten::native_batch_norm", "self_ms_per_step": other},
        ]
        return {
            "benchmark": "profile_step",
            "side": side,
            "method": method,
            "config": "r18-32",
            "batch": batch,
            "precision": "fp32",
            "channels_last": True,
            "sets": [],
            "step_ms": step_ms,
            "top": top,
        }

    profiles = {
        "a": prof("ours", "simclr", [900.0, 1100.0], 300.0, 500.0, 150.0),
        "b": prof("lightly", "simclr", [1200.0], 310.0, 490.0, 300.0),
        "c": prof("ours", "byol", [1000.0], 400.0, 400.0, 100.0),  # no lightly profile: no row
        "d": prof("lightly", "simclr", [5000.0], 1.0, 1.0, 1.0, batch=32),
    }  # another batch: not a pair
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


# --- precision auto ------------------------------------------------------------------------------------


def _cpuinfo(tmp_path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    )
    return path


def test_auto_follows_the_cpu_override(monkeypatch):
    """CSSL_BENCH_CPU_BF16 forces the CPU's answer both ways; explicit precisions pass through; a bad value
    is an error naming the variable."""
    from cssl_bench import UserError
    from cssl_bench.precision import ENV, explain_auto, resolve_precision

    monkeypatch.setenv(ENV, "1")
    assert resolve_precision("auto", "cpu") == "bf16"
    assert explain_auto("cpu") == ("bf16", f"forced by {ENV}=1")
    with autocast("auto", "cpu"):
        assert torch.nn.Linear(8, 4)(torch.randn(2, 8)).dtype == torch.bfloat16
    monkeypatch.setenv(ENV, "0")
    assert resolve_precision("auto", "cpu") == "fp32"
    with autocast("auto", "cpu"):
        assert torch.nn.Linear(8, 4)(torch.randn(2, 8)).dtype == torch.float32
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, "cpu") == name
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(UserError, match=ENV):
        resolve_precision("auto", "cpu")


def test_auto_reads_the_cpu_flags(tmp_path, monkeypatch):
    """Without the override, the CPU flags decide: AMX-BF16 or AVX512-BF16 give bf16; a CPU with AVX-512 and
    AVX2 but neither bf16 extension gives fp32 (its bf16 is emulated, slower than fp32)."""
    from cssl_bench import precision as P

    monkeypatch.delenv(P.ENV, raising=False)
    assert P.cpu_bf16(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f amx_tile amx_bf16 amx_int8")) == (
        True,
        "CPU has AMX-BF16",
    )
    assert P.cpu_has_fast_bf16(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_bf16"))
    plain = _cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_tile")
    fast, why = P.cpu_bf16(plain)
    assert not fast and "lacks AMX-BF16 and AVX512-BF16" in why
    # the default path reads P.CPUINFO (/proc/cpuinfo): pointed at the file of a CPU without the flags -> fp32
    monkeypatch.setattr(P, "CPUINFO", plain)
    monkeypatch.setattr(P.sys, "platform", "linux")
    assert P.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(P, "CPUINFO", _cpuinfo(tmp_path, "avx2 amx_bf16"))
    assert P.resolve_precision("auto", "cpu") == "bf16"
    # an unreadable file (or another OS): torch's own CPU capability probe answers
    monkeypatch.setattr(P, "CPUINFO", tmp_path / "missing")
    caps = torch.cpu.get_capabilities()
    assert P.cpu_has_fast_bf16() == bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def _load_cpu(monkeypatch, bf16: bool, method: str = "simclr", scale: str = "tiny", **train):
    """load_recipe as on a CPU-only machine whose CPU has (or lacks) fast bf16."""
    from cssl_bench import precision as P

    monkeypatch.setattr(P, "default_device_type", lambda: "cpu")
    monkeypatch.setenv(P.ENV, "1" if bf16 else "0")
    return load_recipe(method, scale, {"train": train} if train else None)


def test_auto_is_resolved_into_the_recipe_and_its_hash(monkeypatch):
    """The tiny and small scales ask for auto; the loaded recipe holds bf16 or fp32, so bf16 and fp32 runs have
    different hashes, auto's fp32 hashes as an explicit fp32 (the committed runs' hashes stay valid) and auto's
    bf16 as an explicit bf16. config.yaml holds the resolved precision; paper stays fp32."""
    from cssl_bench.config import recipe_from_dict

    bf, fp = _load_cpu(monkeypatch, True), _load_cpu(monkeypatch, False)
    assert (bf.train.precision, bf.precision_requested) == ("bf16", "auto")
    assert (fp.train.precision, fp.precision_requested) == ("fp32", "auto")
    assert bf.hash() != fp.hash()
    assert fp.hash() == _load_cpu(monkeypatch, True, precision="fp32").hash()
    assert bf.hash() == _load_cpu(monkeypatch, False, precision="bf16").hash()
    assert _load_cpu(monkeypatch, True, precision="fp32").precision_requested is None
    import yaml

    assert yaml.safe_load(bf.dump())["train"]["precision"] == "bf16"
    assert recipe_from_dict(bf.to_dict()).hash() == bf.hash()
    assert _load_cpu(monkeypatch, True, scale="small").train.precision == "bf16"
    paper = _load_cpu(monkeypatch, True, scale="paper")
    assert paper.train.precision == "fp32" and paper.precision_requested is None


def test_auto_is_resolved_for_this_machine():
    """Unpatched, load_recipe resolves auto exactly as the precision module says for this machine's device."""
    from cssl_bench.precision import default_device_type, explain_auto

    assert load_recipe("byol", "tiny").train.precision == explain_auto(default_device_type())[0]


def test_run_json_and_records_carry_the_precision(tmp_path, monkeypatch):
    """A run asked for auto on a bf16 CPU trains in bf16: config.yaml and run.json say bf16 (run.json also
    ``precision_requested: auto``), and its result records say bf16; an explicit fp32 run says fp32 only."""
    import json

    import yaml

    from cssl_bench.eval.features import load_run
    from cssl_bench.eval.probes import records_for

    monkeypatch.setenv("CSSL_BENCH_CPU_BF16", "1")
    r = tiny(precision="auto")
    if torch.cuda.is_available():
        pytest.skip("the loop would train on the GPU")
    out = pretrain(r, tmp_path / "auto", show_progress=False, stop_after_steps=1)
    info = json.loads((out / "run.json").read_text())
    assert info["precision"] == "bf16" and info["precision_requested"] == "auto"
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["precision"] == "bf16"
    assert all(torch.isfinite(torch.tensor(_log_losses(out))))
    (rec,) = records_for(load_run(out), "embedded", "backbone", {"name": "knn"}, {"knn/top1": 12.5})
    assert rec["precision"] == "bf16" and rec["config_hash"] == tiny(precision="bf16").hash()

    out = pretrain(tiny(precision="fp32", epochs=0), tmp_path / "fp32", show_progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["precision"] == "fp32" and "precision_requested" not in info
    (rec,) = records_for(load_run(out), "embedded", "backbone", {"name": "knn"}, {"knn/top1": 10.0})
    assert rec["precision"] == "fp32"


def test_resume_names_a_precision_that_auto_resolves_differently(tmp_path, monkeypatch):
    """A run made where auto meant fp32, resumed where it means bf16: refused, naming the precision to pass."""
    from cssl_bench import UserError

    if torch.cuda.is_available():
        pytest.skip("the loop would train on the GPU")
    monkeypatch.setenv("CSSL_BENCH_CPU_BF16", "0")
    out = pretrain(tiny(precision="auto"), tmp_path / "run", show_progress=False, stop_after_steps=1)
    monkeypatch.setenv("CSSL_BENCH_CPU_BF16", "1")
    with pytest.raises(
        UserError,
        match="holds a run in fp32, but precision auto resolves to bf16 on this machine; resume with --precision fp32",
    ):
        pretrain(tiny(precision="auto"), out, resume=True, show_progress=False)
    out = pretrain(tiny(precision="fp32"), out, resume=True, show_progress=False)  # as the message says
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_losses_compute_in_fp32_under_autocast():
    """Under bf16 autocast the losses run in float32 (the similarity matmuls, log-softmax and cosine included):
    the value is the fp32 loss of the same bf16 inputs, and gradients reach the bf16 inputs. Outside autocast
    the wrapper changes nothing."""
    from cssl_bench.methods import losses as L

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=1)
    na, nb = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    cases = {
        "nt_xent": (L.nt_xent, (a, b)),
        "info_nce": (L.info_nce, (na, nb, queue)),
        "negative_cosine": (L.negative_cosine, (a, b)),
        "byol_loss": (L.byol_loss, (a, a + 0.05 * b)),  # near 0, where bf16 arithmetic would be coarsest
        "swav_multicrop_loss": (L.swav_multicrop_loss, ([a, b], [L.sinkhorn(a), L.sinkhorn(b)])),
        "looc_loss": (L.looc_loss, ([na, nb], [torch.stack([nb, na])] * 2, [queue, queue])),
    }
    for name, (fn, args) in cases.items():
        half = [
            [t.bfloat16().requires_grad_() for t in x] if isinstance(x, list) else x.bfloat16().requires_grad_()
            for x in args
        ]
        with autocast("bf16", "cpu"):
            loss = fn(*half)
        ref = fn.__wrapped__(*[[t.float() for t in x] if isinstance(x, list) else x.float() for x in half])
        assert loss.dtype == torch.float32 and torch.equal(loss.detach(), ref.detach()), name
        loss.backward()
        first = half[0][0] if isinstance(half[0], list) else half[0]
        assert first.grad is not None and first.grad.dtype == torch.bfloat16 and torch.isfinite(first.grad).all(), name
        assert torch.equal(fn(*args), fn.__wrapped__(*args)), name  # fp32: bitwise the plain function


def test_swav_prototype_scores_are_fp32_under_autocast():
    """SwAV's prototype scores (exponentiated at 1/epsilon = 20 by Sinkhorn) stay fp32 under bf16 autocast."""
    from cssl_bench.methods import build_method

    m = build_method(
        load_recipe("swav", "tiny", {"model": {"backbone": "resnet10-w0.125"}, "params": {"n_prototypes": 30}})
    )
    z = torch.nn.functional.normalize(torch.randn(4, m.p.dim), dim=1).bfloat16()
    with autocast("bf16", "cpu"):
        s = m._scores(z)
        assert s.dtype == torch.float32 and m.prototypes(z.float()).dtype == torch.bfloat16
    assert torch.equal(s, m.prototypes(z.float()))
