"""Distributed training (two gloo processes on CPU) against one process on the same global batch.

What is compared, and why it must be equal:

- SimCLR, BYOL, SimSiam, SwAV with ``model.sync_bn``: BN statistics over the global batch, so two
  ranks holding one half each compute exactly what one process computes on the whole batch. SimCLR's
  negatives are gathered with gradients, SwAV's Sinkhorn sums run over both ranks; DDP averages the
  gradients. Compared: the global loss of every step, every parameter's gradient after the first step
  and every parameter and buffer after three SGD steps (momentum encoders included).
- MoCo v2 and LooC (shuffling BN): per-rank BN statistics cannot equal one process's statistics on
  the same samples, so these cases use a backbone without BatchNorm (timm's ``test_convnext``, LayerNorm)
  and heads without BN: then the ranks must reproduce one process exactly, which checks the cross-rank
  key shuffle and its inverse, the gathered queue pushes and the averaged gradients. The queues must
  be identical on both ranks. The BN grouping of shuffling BN is checked separately
  (``test_shuffled_forward_groups``) with a batch-dependent function whose output shows each sample's group.
"""

from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from cssl_bench.config import load_recipe
from cssl_bench.data.views import build_view_recipe
from cssl_bench.methods import IMPLEMENTATIONS
from cssl_bench.methods.base import update_momentum_pairs
from cssl_bench.train import distributed as D
from cssl_bench.train.optim import build_optimizer

GLOBAL_BATCH = 8
STEPS = 3
SIZE = 32

# method -> (implementation, recipe overrides); small models so that the whole file runs in seconds
CASES = {
    "simclr": (
        "simclr",
        {
            "model": {"backbone": "resnet10-w0.125", "sync_bn": True},
            "params": {"dim": 8, "hidden": 32, "proj_layers": 3, "temperature": 0.2},
        },
    ),
    "byol": (
        "byol",
        {
            "model": {"backbone": "resnet10-w0.125", "sync_bn": True},
            "params": {"hidden": 32, "dim": 8, "tau_base": 0.9},
        },
    ),
    "simsiam": (
        "simsiam",
        {
            "model": {"backbone": "resnet10-w0.125", "sync_bn": True},
            "params": {"dim": 16, "pred_hidden": 8, "proj_layers": 2},
        },
    ),
    "swav": (
        "swav",
        {
            "model": {"backbone": "resnet10-w0.125", "sync_bn": True},
            "augment": {"views": "multicrop", "n_large": 2, "n_small": 2},
            "params": {"hidden": 32, "dim": 8, "n_prototypes": 12, "freeze_prototypes_epochs": 0, "queue_length": 0},
        },
    ),
    "moco-v2": (
        "moco",
        {
            "model": {"backbone": "timm:test_convnext"},
            "params": {"version": 2, "dim": 8, "mlp_hidden": 32, "queue_size": 20, "momentum": 0.9, "bn_splits": 2},
        },
    ),
    "looc": (
        "looc",
        {
            "model": {"backbone": "timm:test_convnext"},
            "augment": {"views": "looc", "looc_augment": ["color", "rotation"]},
            "params": {"dim": 8, "hidden": 32, "queue_size": 20, "momentum": 0.9, "bn_splits": 2},
        },
    ),
}


def make_method(name: str):
    impl, ov = CASES[name]
    ov = copy.deepcopy(ov)
    params = ov.pop("params")
    ov.setdefault("data", {})["image_size"] = SIZE
    ov["train"] = {"batch_size": GLOBAL_BATCH}
    ov["optim"] = {"name": "sgd", "base_lr": 0.5, "lr_scaling": "none", "weight_decay": 1e-4, "momentum": 0.9}
    recipe = load_recipe("simclr", "tiny", ov)  # the generic layers; the implementation and params are set here
    recipe.params = params
    torch.manual_seed(0)
    method = IMPLEMENTATIONS[impl](recipe)
    return recipe, method


def global_batch(recipe) -> dict[str, torch.Tensor]:
    """Synthetic views [GLOBAL_BATCH, 3, s, s] with the names and sizes the method's view recipe gives."""
    import numpy as np

    img = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    views, _ = build_view_recipe(recipe)(img, np.random.default_rng(0))
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(GLOBAL_BATCH, 3, v.shape[-2], v.shape[-1], generator=g) for k, v in sorted(views.items())}


def train_steps(name: str, rank: int, world: int) -> dict:
    """Three training steps of ``name`` on this rank's slice of the global batch (the loop's step:
    forward, backward, SGD, momentum pairs). Returns losses, first-step gradients and the final state.

    In float64: in float32 the summation order (one process vs two) changes the last bits, and a few SGD
    steps of these tiny BN networks amplify that to 1e-3; in float64 the runs agree to ~1e-13."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _train_steps(name, rank, world)
    finally:
        torch.set_default_dtype(default)


def _train_steps(name: str, rank: int, world: int) -> dict:
    recipe, method = make_method(name)
    batch = global_batch(recipe)
    n = GLOBAL_BATCH // world
    views = {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}
    labels = torch.zeros(n, dtype=torch.long)
    model = D.distribute(method, recipe.model.sync_bn, torch.device("cpu"))
    optimizer = build_optimizer(method, recipe)
    method.train()
    losses, grads = [], {}
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # MoCo's key shuffle draws a permutation: the same on one or two processes
        method.on_epoch_start(0)
        out = model(views, labels)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        method.after_backward(0)
        if step == 0:
            grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
        optimizer.step()
        if method.momentum_pairs:
            update_momentum_pairs(method.momentum_pairs, method.momentum(step / STEPS))
        losses.append(float(D.all_reduce_mean(out["loss"].detach())))
    return {"losses": losses, "grads": grads, "state": {k: v.clone() for k, v in method.state_dict().items()}}


def _worker(rank: int, world: int, port: int, names: list[str], out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {name: train_steps(name, rank, world) for name in names}
        results["shuffle"] = _shuffle_check(rank)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every case trained by two gloo processes, and the shuffle check (one spawn for all: process
    start-up dominates)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), list(CASES), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _assert_close(a: dict, b: dict, what: str, rtol: float, atol: float):
    assert a.keys() == b.keys(), f"{what}: different keys"
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{what} {k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), f"{what} {k}"


# SwAV's Sinkhorn runs in float32 whatever the input (losses.sinkhorn): its codes agree to ~1e-7 only.
# (Without the cross-rank sums the differences are ~0.5: these tolerances still decide.)
TOLERANCE = {"swav": 1e-5}


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(name, two_ranks):
    ref = train_steps(name, 0, 1)
    r0, r1 = two_ranks[0][name], two_ranks[1][name]
    tol = TOLERANCE.get(name, 1e-9)
    assert r0["losses"] == r1["losses"]  # the all-reduced loss is bitwise the same on both ranks
    assert ref["losses"] == pytest.approx(r0["losses"], rel=tol, abs=tol * 1e-3)
    assert len(ref["grads"]) > 0
    _assert_close(r0["grads"], ref["grads"], "gradient", rtol=tol * 10, atol=tol)
    _assert_close(r0["grads"], r1["grads"], "gradient rank 1 vs 0", rtol=0, atol=0)  # DDP: identical averaged gradients
    _assert_close(r0["state"], ref["state"], "state after 3 steps", rtol=tol * 10, atol=tol)
    # the training must have done something, or the comparisons above would be vacuous
    torch.set_default_dtype(torch.float64)
    try:
        _, init = make_method(name)
    finally:
        torch.set_default_dtype(torch.float32)
    moved = max(
        (r0["state"][k] - v).abs().max().item()
        for k, v in init.state_dict().items()
        if v.is_floating_point() and v.numel()
    )
    assert moved > 1e-4


@pytest.mark.parametrize("name", ["moco-v2", "looc"])
def test_queues_identical_on_both_ranks(name, two_ranks):
    s0, s1 = two_ranks[0][name]["state"], two_ranks[1][name]["state"]
    keys = [k for k in s0 if k.endswith("keys") or k.endswith("ptr")]
    assert keys
    for k in keys:
        assert torch.equal(s0[k], s1[k]), k
    # 3 steps x 8 gathered keys = 24 pushes into a 20-slot queue: it wrapped, the pointer is at 4
    assert all(int(s0[k]) == 4 for k in keys if k.endswith("ptr"))


def _shuffle_check(rank: int) -> dict:
    """Rank ``rank``'s part of ``test_shuffled_forward_groups`` (run inside the two-rank workers)."""
    from cssl_bench.methods.base import shuffled_forward

    x = torch.arange(16, dtype=torch.float32).view(16, 1)  # the global batch: sample i has value i
    mine = x[rank * 8 : (rank + 1) * 8]
    torch.manual_seed(5 + rank)  # different RNG states: the permutation must still be rank 0's
    seen = []

    def group_stats(v):  # a BN-like batch-dependent map; records which samples this rank encodes together
        seen.append(v.flatten().tolist())
        return torch.cat([v, v.mean(0, keepdim=True).expand_as(v)], dim=1)

    out = shuffled_forward(group_stats, mine)
    return {"out": out, "seen": torch.tensor(seen[0])}


def test_shuffled_forward_groups(two_ranks):
    """Across ranks the key batch is permuted globally: each rank encodes a random half of the global
    batch (not its own half), and every output comes back to the sample it belongs to."""
    r = [two_ranks[i]["shuffle"] for i in range(2)]
    groups = [set(int(v) for v in r[i]["seen"]) for i in range(2)]
    assert groups[0] | groups[1] == set(range(16)) and not groups[0] & groups[1]
    assert groups[0] != set(range(8))  # a shuffle (P = 1/12870 of hitting the identity split by chance)
    for i in range(2):
        out = r[i]["out"]
        assert out[:, 0].tolist() == list(range(i * 8, (i + 1) * 8))  # un-permuted: own samples, in order
        for value, mean in out.tolist():  # each sample carries the mean of the group it was encoded in
            g = groups[0] if int(value) in groups[0] else groups[1]
            assert mean == pytest.approx(sum(g) / len(g))


def test_split_batchnorm_groups_are_divided_between_ranks():
    """bn_splits counts BN groups over the global batch: 8 groups on 2 ranks are 4 per rank."""
    from cssl_bench.nn.norm import SplitBatchNorm2d, split_batchnorm

    m = split_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)), 8)
    D.divide_split_batchnorm(m, 2)
    assert [x.splits for x in m.modules() if isinstance(x, SplitBatchNorm2d)] == [4, 4]
    D.divide_split_batchnorm(m, 8)
    assert [x.splits for x in m.modules() if isinstance(x, SplitBatchNorm2d)] == [1, 1]
    from cssl_bench import UserError

    m = split_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), 6)
    with pytest.raises(UserError, match="bn_splits"):
        D.divide_split_batchnorm(m, 4)


def test_torchrun_command():
    from cssl_bench.cli.train_cmd import torchrun_command

    cmd = torchrun_command(["pretrain", "simclr"], 4)
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "4",
        "--standalone",
        "-m",
        "cssl_bench",
        "pretrain",
        "simclr",
    ]
    cmd = torchrun_command(["pretrain", "simclr"], 8, nnodes=2, node_rank=1, rdzv_endpoint="node0:29400", rdzv_id="job")
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--node-rank") + 1] == "1"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "node0:29400" and cmd[cmd.index("--rdzv-backend") + 1] == "c10d"


def _run_json(path):
    return json.loads((path / "run.json").read_text())


def _log(path):
    import csv

    with open(path / "log.csv") as f:
        return list(csv.DictReader(f))


def test_pretrain_nproc2_matches_one_process_and_only_rank0_writes(cli, tmp_path):
    """``pretrain --nproc 2`` through torchrun (gloo) against one process on the same recipe (global
    batch 16 = 2 x 8, SyncBN): the first step's loss is the same (each rank got its slice of the same
    global batch, and the logged loss is the global one), so are the learning rates (scaled by the
    global batch), and the run directory holds exactly the files of a one-process run, each written
    once (rank 0). Weights are compared in float64 by ``test_two_ranks_match_one_process``: here the
    embedded images have flat regions whose BN outputs sit at ReLU's kink at initialisation, so float32
    rounding differences flip gradient masks and the weights drift apart by ~1e-2 in a few steps."""
    args = [
        "pretrain",
        "simclr",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--sync-bn",
        "--quiet",
        "--set",
        "data.embedded_train=48",
        "--set",
        "data.embedded_test=16",
        "--set",
        "data.workers=0",
        "--set",
        "model.backbone=resnet10-w0.125",
        "--set",
        "params.hidden=32",
        "--set",
        "train.log_every=1",
    ]
    one = cli(*args, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = cli(*args, "--out", tmp_path / "two", "--nproc", "2", env={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr
    assert two.stdout.strip().splitlines() == [str(tmp_path / "two")]  # printed by rank 0 only
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "two") == files(tmp_path / "one")
    log1, log2 = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["step"] for r in log2] == ["1", "2", "3"]  # 48 images / 16 per step, each row written once
    assert [r["lr"] for r in log2] == [r["lr"] for r in log1]
    assert float(log2[0]["loss"]) == pytest.approx(float(log1[0]["loss"]), abs=2e-5)
    info = _run_json(tmp_path / "two")
    assert info["status"] == "complete" and info["batch_size"] == 16 and info["processes"] == 2
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    assert b["step"] == 3


def test_nproc_needs_a_batch_that_splits(cli, tmp_path):
    r = cli("pretrain", "simclr", "--batch-size", "15", "--nproc", "2", "--out", tmp_path / "run")
    assert r.returncode == 2 and "batch size 15 cannot be split over 2 processes" in r.stderr
    assert not (tmp_path / "run").exists()
    r = cli("pretrain", "simclr", "--nproc", "2", "--nnodes", "2", "--out", tmp_path / "run")
    assert r.returncode == 2 and "--rdzv-endpoint" in r.stderr
