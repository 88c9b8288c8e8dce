"""The FFCV path against the torchvision path, .beton checks, and the loader choice.

Tests that read or write .beton files are skipped only when ffcv cannot be imported (CI installs it:
`make ffcv` in .ci/run); the loader-choice fallback is tested either way.
"""

import importlib.util
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cssl_bench import UserError
from cssl_bench.data import ffcv_loader as fl
from cssl_bench.data.augment import TwoViews, ssl_pipeline
from cssl_bench.data.datasets import DatasetOptions, get_source
from cssl_bench.data.loaders import train_loader
from cssl_bench.data.train_loader import make_train_loader
from tests.test_augment import assert_looc_sharing, assert_views_close, looc_colour_rotation

HAVE_FFCV = importlib.util.find_spec("ffcv") is not None and importlib.util.find_spec("numba") is not None
needs_ffcv = pytest.mark.skipif(not HAVE_FFCV, reason="ffcv is not installed (make ffcv); CI installs it")

OPTS = DatasetOptions(embedded_train=320, embedded_test=64)


@pytest.fixture(scope="module")
def embedded():
    return get_source("embedded", "train", OPTS)


@pytest.fixture(scope="module")
def betons(embedded, tmp_path_factory):
    """The embedded training split as raw pixels and as JPEG (quality 90)."""
    if not HAVE_FFCV:
        pytest.skip("ffcv is not installed (make ffcv); CI installs it")
    d = tmp_path_factory.mktemp("beton")
    raw = d / "raw.beton"
    jpg = d / "jpg.beton"
    fl.write_beton(embedded, raw, dataset="embedded", split="train", options=OPTS, raw=True, workers=1)
    fl.write_beton(embedded, jpg, dataset="embedded", split="train", options=OPTS, jpeg_quality=90, workers=1)
    return {"raw": raw, "jpg": jpg}


def epoch_batches(loader):
    return [(v, y, i) for v, y, i in loader]


def two_views():
    return TwoViews(ssl_pipeline(32, blur_p=0.5), ssl_pipeline(32, blur_p=0.1))


@needs_ffcv
@pytest.mark.parametrize("start_batch", [0, 2])
def test_same_order_and_views_as_torchvision_on_raw_pixels(embedded, betons, start_batch):
    recipe = two_views()
    b = fl.open_checked(betons["raw"], embedded, "embedded", "train")
    ff = epoch_batches(fl.FFCVViewLoader(b, recipe, 32, seed=5, epoch=2, start_batch=start_batch, workers=2))
    tv = epoch_batches(train_loader(embedded, recipe, 32, 5, 2, start_batch, workers=0))
    assert len(ff) == len(tv) == 10 - start_batch
    for (v, y, i), (rv, ry, ri) in zip(ff, tv):
        assert torch.equal(i, ri) and torch.equal(y, ry) and y.dtype == ry.dtype == torch.int64
        assert list(v) == list(rv)
        for k in v:
            assert v[k].dtype == torch.uint8 and v[k].shape == rv[k].shape == (32, 3, 32, 32)
            assert_views_close(v[k], rv[k])  # same parameters; pixels within the kernels' rounding (see there)


@needs_ffcv
def test_jpeg_pixel_statistics_are_comparable(embedded, betons):
    recipe = two_views()
    b = fl.open_checked(betons["jpg"], embedded, "embedded", "train")
    ff = epoch_batches(fl.FFCVViewLoader(b, recipe, 64, seed=0, epoch=0, workers=2))
    tv = epoch_batches(train_loader(embedded, recipe, 64, 0, 0, workers=0))
    for k in ("v1", "v2"):
        a = torch.cat([v[k] for v, _, _ in ff]).float()
        r = torch.cat([v[k] for v, _, _ in tv]).float()
        assert torch.allclose(
            a.mean(dim=(0, 2, 3)), r.mean(dim=(0, 2, 3)), atol=1.5
        )  # JPEG q90 shifts channel means by < 1.5/255
        assert torch.allclose(a.std(dim=(0, 2, 3)), r.std(dim=(0, 2, 3)), atol=2.0)
        assert (a - r).abs().mean() < 6  # same crops and colours: only JPEG error remains
    assert [y.tolist() for _, y, _ in ff] == [y.tolist() for _, y, _ in tv]


@needs_ffcv
def test_looc_shares_parameters_on_the_ffcv_path(embedded, betons):
    b = fl.open_checked(betons["raw"], embedded, "embedded", "train")
    for views, _, _ in fl.FFCVViewLoader(b, looc_colour_rotation(), 32, seed=1, epoch=0, workers=1):
        assert list(views) == ["q", "k0", "k1", "k2"]
        assert_looc_sharing(views)


@needs_ffcv
def test_make_train_loader_auto_uses_the_beton(embedded, betons, monkeypatch, tmp_path):
    recipe = SimpleNamespace(
        data=SimpleNamespace(
            loader="auto",
            dataset="embedded",
            embedded_size=32,
            embedded_train=320,
            embedded_test=64,
            embedded_seed=0,
            skip_bad=False,
            workers=1,
        ),
        train=SimpleNamespace(batch_size=32, seed=0),
    )
    monkeypatch.setenv("CSSL_BENCH_FFCV_DIR", str(tmp_path))
    assert isinstance(make_train_loader(recipe, embedded, two_views(), 0), torch.utils.data.DataLoader)  # no .beton yet
    target = fl.default_beton_path("embedded", "train", OPTS)
    target.write_bytes(betons["raw"].read_bytes())
    fl.sidecar_path(target).write_bytes(fl.sidecar_path(betons["raw"]).read_bytes())
    assert isinstance(make_train_loader(recipe, embedded, two_views(), 0), fl.FFCVViewLoader)
    recipe.data.loader = "torchvision"
    assert isinstance(make_train_loader(recipe, embedded, two_views(), 0), torch.utils.data.DataLoader)
    recipe.data.loader = "fast"
    with pytest.raises(UserError, match="unknown loader"):
        make_train_loader(recipe, embedded, two_views(), 0)


@needs_ffcv
def test_auto_never_swaps_jpeg_images_in_for_the_embedded_ones(embedded, betons, monkeypatch, tmp_path, capsys):
    """JPEG storage changes the generated images (at 32 px enough to change what a tiny SimCLR learns), so loader
    auto reads a JPEG .beton of an embedded dataset only when asked (loader ffcv), the loader writes raw ones
    for them, and each loader says what it read (the run records it)."""
    recipe = SimpleNamespace(
        data=SimpleNamespace(
            loader="auto",
            dataset="embedded",
            embedded_size=32,
            embedded_train=320,
            embedded_test=64,
            embedded_seed=0,
            skip_bad=False,
            workers=1,
        ),
        train=SimpleNamespace(batch_size=32, seed=0),
    )
    monkeypatch.setenv("CSSL_BENCH_FFCV_DIR", str(tmp_path))
    monkeypatch.setattr(fl, "_NOTICED", set())
    target = fl.default_beton_path("embedded", "train", OPTS)
    target.write_bytes(betons["jpg"].read_bytes())
    fl.sidecar_path(target).write_bytes(fl.sidecar_path(betons["jpg"]).read_bytes())
    tv = make_train_loader(recipe, embedded, two_views(), 0)
    assert isinstance(tv, torch.utils.data.DataLoader) and tv.provenance == {"loader": "torchvision"}
    assert "stores the embedded images as JPEG" in capsys.readouterr().err
    recipe.data.loader = "ffcv"  # asked for: the JPEG file is read, and says so
    ff = make_train_loader(recipe, embedded, two_views(), 0)
    assert ff.provenance == {"loader": "ffcv", "storage": "jpg", "jpeg_quality": 90, "max_side": None}
    target.unlink()
    fl.sidecar_path(target).unlink()
    ff = make_train_loader(recipe, embedded, two_views(), 0)  # missing: written raw
    assert ff.provenance == {"loader": "ffcv", "storage": "raw", "jpeg_quality": None, "max_side": None}
    assert fl.stored_as(fl.read_sidecar(target))["storage"] == "raw"
    recipe.data.loader = "auto"
    assert isinstance(
        make_train_loader(recipe, embedded, two_views(), 0), fl.FFCVViewLoader
    )  # raw: exact, so auto uses it


def test_ffcv_requested_but_not_installed_falls_back_with_one_notice(embedded, monkeypatch, capsys):
    monkeypatch.setattr(fl, "ffcv_installed", lambda: False)
    monkeypatch.setattr(fl, "_NOTICED", set())
    recipe = SimpleNamespace(
        data=SimpleNamespace(
            loader="ffcv",
            dataset="embedded",
            embedded_size=32,
            embedded_train=320,
            embedded_test=64,
            embedded_seed=0,
            skip_bad=False,
            workers=0,
        ),
        train=SimpleNamespace(batch_size=32, seed=0),
    )
    for epoch in range(2):
        assert isinstance(make_train_loader(recipe, embedded, two_views(), epoch), torch.utils.data.DataLoader)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ffcv is not installed" in lines[0] and "make ffcv" in lines[0]


# ----------------------------------------------------------------------------------------------
# .beton checks


@needs_ffcv
def test_beton_of_another_dataset_is_one_clear_line(betons, embedded):
    other_size = get_source("embedded", "train", DatasetOptions(embedded_size=64, embedded_train=320, embedded_test=64))
    with pytest.raises(UserError) as e:
        fl.open_checked(betons["raw"], other_size, "embedded", "train")
    assert "\n" not in str(e.value) and "32x32" in str(e.value) and "64x64" in str(e.value)
    shorter = get_source("embedded", "train", DatasetOptions(embedded_train=300, embedded_test=64))
    with pytest.raises(UserError, match="has 320 images but embedded has 300"):
        fl.open_checked(betons["raw"], shorter, "embedded", "train")
    colour = get_source("embedded-color", "train", OPTS)
    with pytest.raises(UserError, match="holds embedded/train, not embedded-color/train|labels differ"):
        fl.open_checked(betons["raw"], colour, "embedded-color", "train")


@needs_ffcv
def test_truncated_beton_is_one_clear_line(betons, embedded, tmp_path):
    data = betons["jpg"].read_bytes()
    for cut in (len(data) // 2, 40):
        p = tmp_path / f"cut{cut}.beton"
        p.write_bytes(data[:cut])
        with pytest.raises(UserError) as e:
            fl.Beton(p)
        assert "\n" not in str(e.value) and "truncated" in str(e.value)


@needs_ffcv
def test_convert_counts_bad_images_and_skip_bad_stores_them(cli, tmp_path):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 16), (40 * i, 80, 120)).save(root / c / f"{i}.jpg", quality=95)
    bad = root / "b" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    out = tmp_path / "x.beton"
    src = get_source(f"imagefolder:{root}", "train")
    with pytest.raises(UserError, match=r"1 unreadable image\(s\) in .*1\.jpg.*--skip-bad"):  # counted, named, not kept
        fl.write_beton(src, out, dataset=f"imagefolder:{root}", split="train", max_side=12, workers=1)
    assert not out.exists() and not list(tmp_path.glob("x.beton*"))
    r = cli("data", "convert", f"imagefolder:{root}", out, "--max-side", "12", "--workers", "1", "--skip-bad")
    assert r.returncode == 0, r.stderr
    assert "1 unreadable image(s) stored as black images" in r.stderr and out.exists()
    b = fl.Beton(out)
    assert b.meta["bad"] == [4] and b.n == 6 and list(b.labels) == [0, 0, 0, 1, 1, 1]
    assert (b.heights[0], b.widths[0]) == (9, 12)  # longer side downscaled to 12 (FFCV's rounding down)
    imgs = b.decode(np.array([0, 4, 5]))
    assert (
        imgs[0].shape == (3, 9, 12) and imgs[1].shape == (3, 12, 12) and int(imgs[1].sum()) == 0
    )  # black, downscaled too
    src = get_source(f"imagefolder:{root}", "train", DatasetOptions(skip_bad=True))
    fl.open_checked(out, src, f"imagefolder:{root}", "train")  # matches its dataset


def test_convert_without_ffcv_is_one_line(cli, tmp_path):
    env = {}
    if HAVE_FFCV:  # hide the installed ffcv from the CLI process: a None entry in sys.modules is "not installed"
        hide = tmp_path / "hide_ffcv"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text("import sys\nsys.modules['ffcv'] = None\n")
        env["PYTHONPATH"] = os.pathsep.join([str(hide), *filter(None, [os.environ.get("PYTHONPATH")])])
    r = cli("data", "convert", "embedded", tmp_path / "x.beton", env=env)
    assert r.returncode != 0 and "make ffcv" in r.stderr and "Traceback" not in r.stderr
