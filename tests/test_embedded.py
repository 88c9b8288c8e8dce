import numpy as np

from cssl_bench.data import embedded as emb
from cssl_bench.data.datasets import DatasetOptions, get_source


def test_generation_is_deterministic_and_seed_dependent():
    a = emb.generate(emb.EmbeddedSpec(32, 60, 20, seed=3))
    b = emb.generate(emb.EmbeddedSpec(32, 60, 20, seed=3))
    c = emb.generate(emb.EmbeddedSpec(32, 60, 20, seed=4))
    for split in ("train", "test", "shift"):
        for k in a[split]:
            np.testing.assert_array_equal(a[split][k], b[split][k])
    assert not np.array_equal(a["train"]["images"], c["train"]["images"])


def test_images_and_attributes():
    d = emb.generate(emb.EmbeddedSpec(32, 200, 50, seed=0, version=1))
    tr = d["train"]
    assert tr["images"].shape == (200, 32, 32, 3) and tr["images"].dtype == np.uint8
    assert len(emb.CLASSES) >= 10 and len(emb.PALETTE) >= 8 and len(emb.TEXTURES) >= 4
    assert set(np.unique(tr["label"])) == set(range(len(emb.CLASSES)))  # balanced cycle of classes
    assert tr["color"].max() < len(emb.COLORS) and tr["texture"].max() < len(emb.TEXTURES)
    assert (tr["scale"] > 0).all() and (tr["cx"] > 0).all() and (tr["cx"] < 1).all()
    assert (d["shift"]["style"] == emb.STYLES.index("outline")).all()
    assert (tr["style"] == emb.STYLES.index("filled")).all()


def test_object_colour_is_visible():
    """The object's pixels carry its palette colour: the mean colour under a large red object is red-dominant."""
    rng = np.random.default_rng(0)
    img = emb.render(0, emb.COLORS.index("red"), emb.TEXTURES.index("flat"), 0.5, 0.5, 0.4, "filled", 32, rng)
    centre = img[12:24, 12:20].reshape(-1, 3).mean(0)
    assert centre[0] > centre[1] + 50 and centre[0] > centre[2] + 50


def test_64px_option_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CSSL_BENCH_CACHE", str(tmp_path))
    spec = emb.EmbeddedSpec(64, 30, 10, seed=1)
    first = emb.load(spec)
    assert first["train"]["images"].shape[1:] == (64, 64, 3)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = emb.load(spec)
    np.testing.assert_array_equal(first["test"]["images"], again["test"]["images"])


def test_generator_variants_change_only_their_attribute(tmp_path, monkeypatch):
    """texture_contrast and class_color (recipe: data.embedded_texture_contrast / embedded_class_color): the
    default spec is the committed dataset (same key, same images); a variant keeps every other attribute,
    gets its own cache file, and reaches the training source through the recipe's data section."""
    monkeypatch.setenv("CSSL_BENCH_CACHE", str(tmp_path))
    base = emb.EmbeddedSpec(32, 300, 20, seed=0, version=1)
    assert base.key() == "embedded-v1-s32-300-20-seed0"
    d = emb.generate(base)["train"]
    cc = emb.generate(emb.EmbeddedSpec(32, 300, 20, seed=0, class_color=0.5, version=1))["train"]
    for k in ("label", "texture", "cx", "cy", "scale"):
        np.testing.assert_array_equal(cc[k], d[k])
    own = (cc["color"] == cc["label"] % len(emb.COLORS)).mean()
    assert 0.45 < own < 0.65 and (d["color"] == d["label"] % len(emb.COLORS)).mean() < 0.2  # 0.5 + 0.5 / 10 vs 1 / 10
    # texture contrast: same attributes, the object's brightness varies less across its surface
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    args = (0, emb.COLORS.index("white"), emb.TEXTURES.index("stripes"), 0.5, 0.5, 0.4, "filled", 32)
    strong, weak = emb.render(*args, rng_a), emb.render(*args, rng_b, texture_contrast=0.1)
    assert weak[12:20, 12:20].std() < 0.5 * strong[12:20, 12:20].std()
    # background jitter 0: one grey level for every image (corner pixels: background), other attributes kept
    bj = emb.generate(emb.EmbeddedSpec(32, 300, 20, seed=0, background_jitter=0.0, version=1))["train"]
    np.testing.assert_array_equal(bj["texture"], d["texture"])
    corner = lambda imgs: imgs[:, :3, :3].reshape(len(imgs), -1).mean(1)  # noqa: E731
    assert corner(bj["images"]).std() < 0.25 * corner(d["images"]).std()
    from cssl_bench.config import load_recipe
    from cssl_bench.train.loop import dataset_options

    # a variant is another recipe (hash); the defaults hash as before the options existed (tests/test_looc.py)
    v1 = ["data.embedded_version=1"]
    assert (
        load_recipe("simclr", "tiny", {}, v1 + ["data.embedded_class_color=0.5"]).hash()
        != load_recipe("simclr", "tiny", {}, v1).hash()
    )
    r = load_recipe(
        "simclr", "tiny", {}, v1 + ["data.embedded_train=300", "data.embedded_test=20", "data.embedded_class_color=0.5"]
    )
    src = get_source("embedded", "train", dataset_options(r))
    np.testing.assert_array_equal(src.attributes["color"], cc["color"])
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["embedded-v1-s32-300-20-seed0-cc0.5.npz"]


def test_derived_tasks():
    o = DatasetOptions(embedded_train=100, embedded_test=40, embedded_version=1)
    shape = get_source("embedded", "train", o)
    color = get_source("embedded-color", "train", o)
    shift = get_source("embedded-shift", "test", o)
    assert len(shape.classes) == 10 and len(color.classes) == 10
    np.testing.assert_array_equal(color.labels, shape.attributes["color"])
    assert (shift.attributes["style"] == 1).all()
    img, y = shape[0]
    assert img.shape == (3, 32, 32) and img.dtype.is_floating_point is False


def test_export_imagefolder_roundtrip(tmp_path):
    n = emb.export_imagefolder(emb.EmbeddedSpec(32, 30, 10, 0, version=1), tmp_path / "out")
    assert n == 40
    src = get_source(f"imagefolder:{tmp_path / 'out'}", "train")
    assert len(src) == 30 and src.classes == sorted(emb.CLASSES)
    img, _ = src[0]
    assert img.shape == (3, 32, 32)


# --- generator version 2 (the default stand-in) ---------------------------------------------------------

from cssl_bench.data import embedded_v2 as v2  # noqa: E402


def _v2(n=400, seed=0):
    return emb.generate(emb.EmbeddedSpec(32, n, 40, seed=seed))


def test_v2_is_the_default_and_v1_stays_selectable():
    assert (
        emb.EmbeddedSpec(32, 10, 5).version == 2 and emb.EmbeddedSpec(32, 10, 5).key() == "embedded-v2-s32-10-5-seed0"
    )
    assert emb.EmbeddedSpec(32, 10, 5, version=1).key() == "embedded-v1-s32-10-5-seed0"
    a, b = _v2(60, 3), _v2(60, 3)
    for split in ("train", "test", "shift"):
        for k in a[split]:
            np.testing.assert_array_equal(a[split][k], b[split][k])
    assert not np.array_equal(a["train"]["images"], _v2(60, 4)["train"]["images"])
    import pytest

    with pytest.raises(ValueError, match="version 1 only"):
        emb.EmbeddedSpec(32, 10, 5, class_color=0.5)


def test_v2_attributes_and_derived_tasks():
    d = _v2()
    tr = d["train"]
    assert set(tr) == {"images", *v2.ATTRIBUTES}
    assert set(np.unique(tr["label"])) == set(range(10))
    np.testing.assert_array_equal(tr["fine"] // v2.N_SUB, tr["label"])
    assert tr["fine"].max() < len(v2.FINE_CLASSES) and tr["color"].max() < len(v2.HUE_NAMES)
    assert (d["shift"]["style"] == v2.STYLES.index("outline")).all() and (tr["style"] == 0).all()
    o = DatasetOptions(embedded_train=100, embedded_test=40)
    fine, color = get_source("embedded-fine", "test", o), get_source("embedded-color", "train", o)
    assert len(fine.classes) == 40 and len(color.classes) == 12
    np.testing.assert_array_equal(fine.labels, get_source("embedded", "test", o).attributes["fine"])


def test_v2_appearance_correlates_with_class_without_naming_it():
    """Hue and background setting predict the class better than chance, yet every hue bin and every setting is
    shared by several classes (overlapping distributions, not a one-to-one code)."""
    tr = _v2(2000)["train"]
    for attr, n_values in (("color", 12), ("context", 5)):
        joint = np.zeros((n_values, 10))
        np.add.at(joint, (tr[attr], tr["label"]), 1)
        best_guess = joint.max(1).sum() / joint.sum()  # class guessed from the attribute alone
        assert 0.15 < best_guess < 0.6, (attr, best_guess)
        assert ((joint > 0.05 * joint.sum(1, keepdims=True)).sum(1)[joint.sum(1) > 0] >= 2).all(), attr


def test_v2_objects_are_large_and_background_carries_no_per_image_tint():
    """The object covers a large part of the image, and the background's per-image level varies less than a
    brightness jitter of 0.4 does (no level or tint that survives the augmentations as an identity cue)."""
    tr = _v2(300)["train"]
    assert 0.34 <= tr["scale"].min() and tr["scale"].max() <= 0.46
    assert np.abs(tr["bg_level"] - 1).max() <= 0.12 < 0.4
    np.random.default_rng(0)
    inst = dict(
        cx=0.5,
        cy=0.5,
        scale=0.4,
        tilt=0.0,
        sx=1.0,
        sy=1.0,
        shear=0.0,
        hue=0.0,
        sat=0.8,
        val=0.9,
        freq_scale=1.0,
        context=0,
        bg_level=1.0,
        light_angle=0.0,
        light_gain=0.0,
    )
    blank = v2.render(0, 0, {**inst, "scale": 0.0001}, "filled", 32, np.random.default_rng(0)).astype(np.float32)
    covered = [
        (
            np.abs(v2.render(k, 0, inst, "filled", 32, np.random.default_rng(0)).astype(np.float32) - blank).sum(-1)
            > 30
        ).mean()
        for k in range(10)
    ]  # the same draws of rng: only the object differs
    assert np.mean(covered) > 0.3 and min(covered) > 0.2, covered
    # no i.i.d. pixel noise: neighbouring background pixels differ little
    assert np.abs(np.diff(blank, axis=1)).mean() < 6


def test_recipe_of_an_old_run_reads_generator_v1():
    """A run directory's config.yaml from before data.embedded_version existed was trained on version 1, and its
    hash is the hash it had then (version 1 is left out of the hash); today's recipes hash version 2 in."""
    from cssl_bench.config import load_recipe, recipe_from_dict

    old = load_recipe("simclr", "tiny", {}, ["data.embedded_version=1"]).to_dict()
    del old["data"]["embedded_version"]
    r = recipe_from_dict(old)
    assert r.data.embedded_version == 1
    assert "embedded_version" not in r.hash_dict()["data"]
    assert load_recipe("simclr", "tiny").hash_dict()["data"]["embedded_version"] == 2
