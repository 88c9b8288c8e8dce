"""`cssl-bench import`: checkpoints of other codebases become run directories that the probes accept.

Each format's checkpoint is built here with that codebase's key layout (modules assembled as its code assembles
them, wrapped as its training script saves them), from a small random backbone; the import must map every
backbone tensor (compared with the source) and account for every other key as a known part. Export -> import
must give the same features. Bad files are refused with one line.
"""

from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch
import torch.nn as nn

from cssl_bench.nn.backbones import build_backbone
from cssl_bench.pipeline.importing import import_checkpoint
from tests.conftest import SMALL, one_line_error, run_cli_here

ARCH = "resnet18-w0.25"


def randomised(backbone: nn.Module, seed: int = 0) -> nn.Module:
    """``backbone`` with every tensor (BN running statistics included) drawn at random, so a copy is recognisable."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in backbone.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + (0.5 if "running_var" in name else -0.5))
            else:
                t.fill_(int(torch.randint(0, 100, (1,), generator=g)))
    return backbone


def resnet(seed: int = 0, fc: int | None = None, cifar: bool = True) -> nn.Module:
    """A width-scaled ResNet-18 (torchvision names); ``fc``: a classifier of that many classes, as torchvision has."""
    m = randomised(build_backbone(ARCH, 32, cifar), seed)
    if fc:
        m.fc = nn.Linear(m.out_dim, fc)
    return m


def mlp(d_in: int, d_out: int, bn: bool = True) -> nn.Sequential:
    layers = (
        [nn.Linear(d_in, 64, bias=not bn)] + ([nn.BatchNorm1d(64)] if bn else []) + [nn.ReLU(), nn.Linear(64, d_out)]
    )
    return nn.Sequential(*layers)


class Holder(nn.Module):
    """A container whose state dict keys are ``name.*`` for each given module (the layout a codebase's model has)."""

    def __init__(self, **modules):
        super().__init__()
        for k, v in modules.items():
            if isinstance(v, torch.Tensor):
                self.register_buffer(k, v)
            else:
                setattr(self, k, v)


def ddp(model: nn.Module) -> dict:
    """The state dict of ``model`` wrapped in DistributedDataParallel (every key gets ``module.``)."""
    return {f"module.{k}": v for k, v in model.state_dict().items()}


def moco_v2(bb):
    enc_q = copy.deepcopy(bb)
    enc_q.fc = mlp(bb.out_dim, 16, bn=False)  # main_moco.py --mlp: fc becomes Linear-ReLU-Linear
    model = Holder(encoder_q=enc_q, encoder_k=copy.deepcopy(enc_q), queue=torch.randn(16, 64))
    model.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
    return {"epoch": 200, "arch": "resnet18", "state_dict": ddp(model), "optimizer": {"state": {}, "param_groups": []}}


def moco_v3(bb):
    base = copy.deepcopy(bb)
    base.fc = mlp(bb.out_dim, 16)
    model = Holder(base_encoder=base, momentum_encoder=copy.deepcopy(base), predictor=mlp(16, 16))
    return {"epoch": 100, "arch": "resnet50", "state_dict": ddp(model), "optimizer": {}, "scaler": {}}


def simsiam(bb):
    enc = copy.deepcopy(bb)
    d = bb.out_dim
    enc.fc = nn.Sequential(
        nn.Linear(d, d, bias=False),
        nn.BatchNorm1d(d),
        nn.ReLU(),
        nn.Linear(d, d, bias=False),
        nn.BatchNorm1d(d),
        nn.ReLU(),
        nn.Linear(d, 32),
        nn.BatchNorm1d(32, affine=False),
    )
    model = Holder(encoder=enc, predictor=mlp(32, 32))
    return {"epoch": 100, "arch": "resnet50", "state_dict": ddp(model), "optimizer": {}}


def swav(bb):
    model = copy.deepcopy(bb)  # SwAV's ResNet: the backbone's modules plus projection_head and prototypes, no fc
    model.projection_head = mlp(bb.out_dim, 16)
    model.prototypes = nn.Linear(16, 30, bias=False)
    return ddp(model)  # the released swav_800ep_pretrain.pth.tar: the DDP state dict itself


def byol_pytorch(bb):
    net = copy.deepcopy(bb)
    net.fc = nn.Linear(bb.out_dim, 10)  # the user's torchvision ResNet keeps its classifier
    online = Holder(net=net, projector=Holder(net=mlp(bb.out_dim, 16)))
    learner = Holder(net=net, online_encoder=online, online_predictor=Holder(net=mlp(16, 16)))
    learner.target_encoder = copy.deepcopy(online)
    return learner.state_dict()  # torch.save(learner.state_dict(), ...): net.* and online_encoder.net.* both


def byol_sthalles(bb):
    encoder = nn.Sequential(*list(bb.children())[:-1])  # PyTorch-BYOL: resnet children up to avgpool
    online = Holder(encoder=encoder, projetion=Holder(net=mlp(bb.out_dim, 16)))
    target = copy.deepcopy(online)
    return {
        "online_network_state_dict": online.state_dict(),
        "target_network_state_dict": target.state_dict(),
        "optimizer_state_dict": {"state": {}, "param_groups": []},
    }


class WeightNormHead(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mlp = mlp(d, 16, bn=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(16, 40, bias=False))


def dino(bb, student_bb):
    student = Holder(backbone=copy.deepcopy(student_bb), head=WeightNormHead(bb.out_dim))
    teacher = Holder(backbone=copy.deepcopy(bb), head=WeightNormHead(bb.out_dim))
    return {
        "student": ddp(student),
        "teacher": ddp(teacher),  # a ResNet teacher has BN: main_dino.py wraps it in DDP too
        "optimizer": {},
        "epoch": 100,
        "args": argparse.Namespace(arch="resnet50", out_dim=65536),  # DINO keeps its argparse namespace
        "dino_loss": {"center": torch.zeros(1, 40)},
    }


def torchvision_sd(bb):
    m = copy.deepcopy(bb)
    m.fc = nn.Linear(bb.out_dim, 1000)
    return m.state_dict()


def lightly_head(d_in: int, hidden: int, d_out: int) -> nn.Module:
    """The key layout of lightly's BYOL projection/prediction heads (``layers.0`` Linear without bias, ``layers.1``
    BatchNorm1d, ``layers.3`` Linear), written here so the tests do not need lightly installed."""
    layers = nn.Sequential(
        nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out)
    )
    return Holder(layers=layers)


def lightly_model(bb):
    backbone = nn.Sequential(*list(copy.deepcopy(bb).children())[:-1])  # lightly's examples
    projection = lightly_head(bb.out_dim, 64, 16)
    model = Holder(
        backbone=backbone,
        projection_head=projection,
        prediction_head=lightly_head(16, 64, 16),
        backbone_momentum=copy.deepcopy(backbone),
        projection_head_momentum=copy.deepcopy(projection),
    )
    return model.state_dict()


def solo_learn(bb):
    model = Holder(
        backbone=copy.deepcopy(bb),
        projector=mlp(bb.out_dim, 16),
        classifier=nn.Linear(bb.out_dim, 10),
        momentum_backbone=copy.deepcopy(bb),
        momentum_projector=mlp(bb.out_dim, 16),
        queue=torch.randn(2, 16, 64),
    )
    model.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
    return {
        "epoch": 399,
        "global_step": 1000,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": model.state_dict(),
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": {"cfg": {"method": "mocov2plus"}},
    }


CASES = {
    "moco": (moco_v2, "moco", "state_dict", "encoder_q."),
    "moco-v3": (moco_v3, "moco", "state_dict", "base_encoder."),
    "simsiam": (simsiam, "simsiam", "state_dict", "encoder."),
    "swav": (swav, "swav", "", ""),
    "byol": (byol_pytorch, "byol", "", "online_encoder.net."),
    "byol-sthalles": (byol_sthalles, "byol", "online_network_state_dict", "encoder."),
    "dino": (None, "dino", "teacher", "backbone."),
    "torchvision": (torchvision_sd, "torchvision", "", ""),
    "lightly": (lightly_model, "lightly", "", "backbone."),
    "solo-learn": (solo_learn, "solo-learn", "state_dict", "backbone."),
}


def _flat(obj, container: str) -> dict:
    for part in filter(None, container.split("/")):
        obj = obj[part]
    return obj


@pytest.mark.parametrize("case", list(CASES))
def test_each_format_maps_every_backbone_tensor_and_names_every_other_key(case, tmp_path):
    build, fmt, container, prefix = CASES[case]
    bb = resnet(seed=1)
    obj = dino(bb, resnet(seed=2)) if case == "dino" else build(bb)
    path = tmp_path / f"{case}.pth"
    torch.save(obj, path)
    r = import_checkpoint(path, "auto", ARCH, tmp_path / "run", scale="tiny")
    rep = r.report
    assert r.fmt == fmt and rep["detected"] and (rep["container"] or "") == container
    assert (rep["backbone_prefix"] or "") == prefix
    # no key silently dropped: each source key is a backbone tensor or counted in a known part
    source = _flat(obj, container)
    assert rep["extra"] == [] and rep["filled"] == []
    assert rep["mapped"] + sum(rep["known_parts"].values()) == len(source), rep["known_parts"]
    assert rep["mapped"] == rep["backbone_tensors"] == len(bb.state_dict())
    # the imported tensors are the source backbone's (DINO: the teacher's, not the student's)
    model = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k, v in bb.state_dict().items():
        assert torch.equal(model[f"backbone.{k}"], v), k
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "complete" and info["method"] == f"imported:{fmt}" and info["epochs"] is None
    assert info["source"] == {"file": path.name, "sha256": r.source["sha256"], "format": fmt}
    assert rep["cifar_stem"] is True  # a 3x3 conv1 in the file


def test_explicit_format_and_key_dino_student_and_missing_bn_counters(tmp_path):
    bb, student = resnet(seed=1), resnet(seed=2)
    path = tmp_path / "dino.pth"
    torch.save(dino(bb, student), path)
    r = import_checkpoint(path, "dino", ARCH, tmp_path / "s", scale="tiny", key="student", epochs=100)
    model = torch.load(tmp_path / "s" / "checkpoints" / "last.pt", weights_only=True)
    assert model["epoch"] == 100 and r.report["container"] == "student"
    assert all(torch.equal(model["model"][f"backbone.{k}"], v) for k, v in student.state_dict().items())
    # a torchvision state dict without BN's num_batches_tracked (older checkpoints): filled with 0 and listed
    sd = {k: v for k, v in torchvision_sd(bb).items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    r = import_checkpoint(tmp_path / "old.pth", "torchvision", ARCH, tmp_path / "o", scale="tiny")
    n_bn = sum(k.endswith("num_batches_tracked") for k in bb.state_dict())
    assert len(r.report["filled"]) == n_bn and r.report["mapped"] == len(bb.state_dict()) - n_bn


def test_timm_model_imports_with_its_classifier_left_out(tmp_path):
    import timm

    m = timm.create_model("resnet10t", num_classes=7)  # timm's names (deep stem conv1.0 ...), classifier fc
    randomised(m, 3)
    torch.save(m.state_dict(), tmp_path / "t.pth")
    r = import_checkpoint(tmp_path / "t.pth", "timm", "timm:resnet10t", tmp_path / "run", scale="tiny")
    assert r.report["known_parts"] == {"fc": 2} and r.report["extra"] == []
    model = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(model[f"backbone.{k}"], v) for k, v in m.state_dict().items() if not k.startswith("fc."))


def test_resnet50_key_mapping_imagenet_stem_and_half_precision(tmp_path):
    """A full ResNet-50 torchvision state dict saved in float16 (CPU, no forward pass): 318 tensors mapped and cast
    to float32, the ImageNet stem (7x7 conv1, max-pool) kept."""
    bb = build_backbone("resnet50", 224)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in torchvision_sd(bb).items()}
    torch.save(sd, tmp_path / "r50.pth")
    r = import_checkpoint(tmp_path / "r50.pth", "auto", "resnet50", tmp_path / "run", scale="paper")
    assert r.fmt == "torchvision" and r.report["cifar_stem"] is False and r.report["cast"] == ["float16->float32"]
    assert r.report["mapped"] == len(bb.state_dict()) == 318 and r.report["known_parts"] == {"fc": 2}
    model = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert model["backbone.conv1.weight"].dtype == torch.float32
    assert torch.equal(model["backbone.layer4.2.conv3.weight"], sd["layer4.2.conv3.weight"].float())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny-scale run of this project (random init, --epochs 0): the source of the export -> import round trip."""
    from cssl_bench.config import load_recipe
    from cssl_bench.train.loop import pretrain

    out = tmp_path_factory.mktemp("imp") / "run"
    recipe = load_recipe(
        "simclr",
        "tiny",
        {
            "model": {"backbone": ARCH},
            "train": {"epochs": 0},
            "data": {"embedded_train": 640, "embedded_test": 200, "workers": 0},
        },
    )
    pretrain(recipe, out, show_progress=False)
    return out


@pytest.mark.parametrize("to", ["torchvision", "timm"])
def test_export_then_import_gives_the_same_features(tiny_run, to, tmp_path):
    from cssl_bench.eval.features import load_run
    from cssl_bench.export import export_run

    export_run(tiny_run, to, tmp_path / "bb.pth")
    r = import_checkpoint(tmp_path / "bb.pth", "auto", ARCH, tmp_path / "imp", scale="tiny")
    assert r.fmt == "torchvision"  # timm's ResNets have torchvision's names: auto reads either as torchvision
    ours, back = load_run(tiny_run).method.backbone.cpu(), load_run(tmp_path / "imp").method.backbone.cpu()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(x), back(x))


# ----------------------------------------------------------------------------------------------- refused files


class Config:
    """A custom class: unpickling it needs this module's code, which weights_only refuses."""

    lr = 0.1


def _moco_file(tmp_path, **changes) -> str:
    obj = moco_v2(resnet())
    obj["state_dict"].update(changes.get("add", {}))
    for k in [k for k in obj["state_dict"] if any(k.startswith(d) for d in changes.get("drop", ()))]:
        del obj["state_dict"][k]
    path = tmp_path / "m.pth.tar"
    torch.save(obj, path)
    return str(path)


def test_bad_files_give_one_line_and_a_nonzero_exit(tmp_path):
    good = _moco_file(tmp_path)
    data = open(good, "rb").read()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    cases = [
        (tmp_path / "trunc.pth", ARCH, ["corrupted", "truncated"]),
        (good, "resnet18", ["does not fit --arch resnet18", "of other shapes", "looks like resnet18-w0.25"]),
        (tmp_path / "none.pth", ARCH, ["does not exist"]),
    ]
    torch.save({"state_dict": moco_v2(resnet())["state_dict"], "cfg": Config()}, tmp_path / "code.pth")
    cases.append((tmp_path / "code.pth", ARCH, ["would run code", "Config"]))
    for path, arch, words in cases:
        p = run_cli_here("import", path, "--arch", arch, "--scale", "tiny", "--out", tmp_path / "never")
        one_line_error(p, 2, words)
    assert not (tmp_path / "never").exists()


def test_lightly_resnet_generator_layout_is_refused(tmp_path):
    """lightly's ResNetGenerator as nn.Sequential has no stem ReLU in its forward: mapping it would change features.
    Its key layout (``0`` conv1, ``1`` bn1, ``2``-``5`` the stages with ``shortcut`` where torchvision says
    ``downsample``, no ``7``) is rebuilt here from a ResNet so the test does not need lightly installed."""
    from cssl_bench import UserError

    r = resnet()
    parts = [r.conv1, r.bn1, r.layer1, r.layer2, r.layer3, r.layer4]
    sd = nn.Sequential(*parts).state_dict()
    backbone = {k.replace(".downsample.", ".shortcut."): v for k, v in sd.items()}
    assert any(".shortcut." in k for k in backbone) and "2.0.conv1.weight" in backbone
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state.update({f"projection_head.{k}": v for k, v in mlp(128, 16).state_dict().items()})
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(UserError, match="ResNetGenerator"):
        import_checkpoint(tmp_path / "g.pth", "auto", ARCH, tmp_path / "run", scale="tiny")
    assert not (tmp_path / "run").exists()


def test_keys_not_covering_the_backbone_and_unknown_keys(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    p = run_cli_here("import", _moco_file(d, drop=("module.encoder_q.layer4",)), "--arch", ARCH, "--scale", "tiny")
    one_line_error(p, 2, ["backbone tensors missing", "layer4.0.conv1.weight", "in all)"])
    d = tmp_path / "b"
    d.mkdir()
    extra = _moco_file(d, add={"module.mystery.weight": torch.ones(3)})
    args = ["import", extra, "--arch", ARCH, "--scale", "tiny", "--out", tmp_path / "run"]
    one_line_error(run_cli_here(*args), 2, ["module.mystery.weight", "--allow-extra"])
    p = run_cli_here(*args, "--allow-extra")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["import"]["extra"] == ["module.mystery.weight"]
    one_line_error(run_cli_here("import", extra, "--arch", ARCH, "--format", "simsiam"), 2, ["no simsiam backbone"])


def test_imported_run_goes_through_probe_knn_with_its_source_in_the_records(tmp_path):
    path = _moco_file(tmp_path)
    run = tmp_path / "run"
    p = run_cli_here("import", path, "--arch", ARCH, "--scale", "tiny", "--out", run, "--epochs", "200", *SMALL)
    assert p.returncode == 0 and p.stdout.strip() == str(run), p.stderr
    assert "moco (detected) from state_dict: 120 of 120 backbone tensors mapped" in p.stderr
    p = run_cli_here("probe", "knn", run, "--results", tmp_path / "res", "--json")
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    sha = json.loads((run / "run.json").read_text())["source"]["sha256"]
    assert recs and all(
        r["method"] == "imported:moco" and r["epochs"] == 200 and r["source"]["sha256"] == sha for r in recs
    )
    assert 0 <= recs[0]["value"] <= 100
    again = run_cli_here("import", path, "--arch", ARCH, "--scale", "tiny", "--out", run, "--epochs", "200", *SMALL)
    assert again.returncode == 0 and "already exists" in again.stderr
