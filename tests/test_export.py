"""`cssl-bench export`: torchvision / timm state dicts that load strictly, and detectron2 pickles named
by the MoCo conversion rules (docs/protocols.md, section 3)."""

import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

# Every detectron2 ResNet key: the stem's conv1 (+ norm), or resN.B.convK (+ norm) / shortcut (+ norm).
D2_KEY = re.compile(
    r"^(stem\.conv1(\.norm)?|res[2-5]\.\d+\.(conv[1-3](\.norm)?|shortcut(\.norm)?))\.(weight|bias|running_mean|running_var)$"
)


@pytest.fixture(scope="module")
def r18_run(tmp_path_factory):
    """A ResNet-18 run with the ImageNet stem (so torchvision's 7x7 conv1 fits), random init (--epochs 0)."""
    from cssl_bench.config import load_recipe
    from cssl_bench.train.loop import pretrain

    out = tmp_path_factory.mktemp("export") / "r18"
    recipe = load_recipe(
        "simclr",
        "tiny",
        {
            "model": {"backbone": "resnet18", "cifar_stem": False},
            "train": {"epochs": 0},
            "data": {"embedded_train": 640, "embedded_test": 200, "workers": 0},
        },
    )
    pretrain(recipe, out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def backbone(r18_run):
    from cssl_bench.eval.features import load_run

    return load_run(r18_run).method.backbone.eval()


def test_torchvision_export_loads_strictly_and_computes_the_same_features(r18_run, backbone, tmp_path, cli):
    import torchvision

    out = tmp_path / "r18_tv.pth"
    p = cli("export", r18_run, "--to", "torchvision", out)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out) and "fc is freshly initialised" in p.stderr
    sd = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    model.load_state_dict(sd, strict=True)  # raises on any missing or unexpected key or shape
    assert sd["fc.weight"].shape == (1000, 512) and sd["fc.bias"].shape == (1000,)
    ours = backbone.state_dict()
    assert set(sd) - set(ours) == {"fc.weight", "fc.bias"}
    for k, v in ours.items():
        assert torch.equal(sd[k], v), k
    model.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), backbone(x))


def test_timm_export_loads_strictly(r18_run, backbone, tmp_path):
    import timm

    from cssl_bench.export import export_run

    out = tmp_path / "r18_timm.pth"
    export_run(r18_run, "timm", out)
    model = timm.create_model("resnet18", num_classes=0)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), backbone(x))


def test_detectron2_export_follows_the_conversion_rules(r18_run, backbone, tmp_path):
    from cssl_bench.export import export_run

    out = tmp_path / "r18.pkl"
    export_run(r18_run, "detectron2", out)
    with open(out, "rb") as f:
        d = pickle.load(f)
    assert d["__author__"] == "cssl-bench" and d["matching_heuristics"] is True
    m = d["model"]
    assert all(isinstance(v, np.ndarray) for v in m.values())
    assert all(D2_KEY.match(k) for k in m), [k for k in m if not D2_KEY.match(k)]
    ours = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(m) == len(ours)
    # hand-applied rules on representative keys
    pairs = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.conv2.weight": "res2.0.conv2.weight",
        "layer1.1.bn2.bias": "res2.1.conv2.norm.bias",
        "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
        "layer2.0.downsample.1.running_mean": "res3.0.shortcut.norm.running_mean",
        "layer4.1.bn1.weight": "res5.1.conv1.norm.weight",
    }
    for tv, d2 in pairs.items():
        np.testing.assert_array_equal(m[d2], ours[tv].numpy())


def test_resnet50_keys_torchvision_strict_and_detectron2_names():
    import torchvision

    from cssl_bench.export import detectron2_checkpoint, detectron2_key, torchvision_state_dict
    from cssl_bench.nn.backbones import build_backbone

    bb = build_backbone("resnet50", 224)
    sd = torchvision_state_dict(bb)
    torchvision.models.resnet50().load_state_dict(sd, strict=True)
    assert sd["fc.weight"].shape == (1000, 2048)
    d2 = detectron2_checkpoint(bb)["model"]
    assert all(D2_KEY.match(k) for k in d2)
    assert len(set(d2)) == len([k for k in bb.state_dict() if not k.endswith("num_batches_tracked")])  # one-to-one
    assert detectron2_key("layer3.5.bn3.weight") == "res4.5.conv3.norm.weight"
    assert detectron2_key("layer1.0.downsample.1.weight") == "res2.0.shortcut.norm.weight"
    assert "res5.2.conv3.norm.running_mean" in d2 and "stem.conv1.norm.bias" in d2


def test_cifar_stem_and_scaled_widths_are_explained(tmp_path):
    from cssl_bench.export import export_backbone
    from cssl_bench.nn.backbones import build_backbone

    bb = build_backbone("resnet18-w0.25", 32)  # CIFAR stem: 3x3 conv1
    e = export_backbone(bb, "torchvision", tmp_path / "w.pth")
    assert any("CIFAR stem" in n for n in e.notes) and any("width-scaled" in n for n in e.notes)
    sd = torch.load(tmp_path / "w.pth", weights_only=True)
    assert sd["conv1.weight"].shape == (16, 3, 3, 3) and sd["fc.weight"].shape == (1000, 128)
    rebuilt = build_backbone("resnet18-w0.25", 32)
    rebuilt.fc = nn.Linear(128, 1000)
    rebuilt.load_state_dict(sd, strict=True)


def test_export_errors(r18_run, tmp_path, cli):
    from cssl_bench import UserError
    from cssl_bench.export import export_backbone, export_run

    p = cli("export", r18_run, "--to", "onnx", tmp_path / "x")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "torchvision, timm, detectron2" in p.stderr
    with pytest.raises(UserError, match="does not exist"):
        export_run(tmp_path / "missing", "timm", tmp_path / "x")
    with pytest.raises(UserError, match="is a folder"):
        export_run(r18_run, "timm", tmp_path)
    with pytest.raises(UserError, match="needs a ResNet"):
        export_backbone(nn.Sequential(nn.Conv2d(3, 4, 3)), "detectron2", tmp_path / "y")
