"""Named datasets read from small fixtures in their published layouts, and bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from cssl_bench import UserError
from cssl_bench.data.datasets import REGISTRY, get_source
from cssl_bench.data.named import ON13, imagenet100_wnids, objectnet13_folders

NAMED = ("imagenet", "imagenet100", "flowers102", "cub200", "inat2019", "objectnet13", "imagenet-c-100")
ROOT_VARS = (
    "CSSL_BENCH_DATA",
    "CSSL_BENCH_IMAGENET",
    "CSSL_BENCH_IMAGENET100",
    "CSSL_BENCH_FLOWERS102",
    "CSSL_BENCH_CUB200",
    "CSSL_BENCH_INAT2019",
    "CSSL_BENCH_OBJECTNET",
    "CSSL_BENCH_IMAGENET_C",
)


@pytest.fixture(autouse=True)
def _no_real_roots(monkeypatch, tmp_path):
    """Every root points into an empty temporary folder unless a test sets it."""
    for v in ROOT_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("CSSL_BENCH_DATA", str(tmp_path / "nothing-here"))


def img(path, value=0, size=(6, 5), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path, format=fmt)


def test_imagenet100_list_is_cmcs():
    """CMC's imagenet100.txt (Tian et al., github.com/HobbitLong/CMC): 100 distinct ids, first/last as published,
    and the 13 ObjectNet classes of docs/protocols.md, section 2 are among them."""
    ids = imagenet100_wnids()
    assert len(ids) == 100 and len(set(ids)) == 100
    assert ids[:3] == ["n02869837", "n01749939", "n02488291"] and ids[-1] == "n02090622"
    assert set(ON13) <= set(ids)


def test_every_named_dataset_is_registered_with_where_and_found():
    for name in NAMED:
        info = REGISTRY[name]
        assert info.found() is False
        assert "nothing-here" in info.where()


@pytest.mark.parametrize("name", NAMED)
def test_missing_root_is_one_line_saying_what_is_expected_where(name):
    split = "gaussian_noise/1" if name == "imagenet-c-100" else "test"
    with pytest.raises(UserError) as e:
        get_source(name, split)
    msg = str(e.value)
    assert "\n" not in msg and "nothing-here" in msg and "expected" in msg


def make_imagenet(root, wnids, per_class=2):
    for split in ("train", "val"):
        for k, w in enumerate(wnids):
            for i in range(per_class):
                img(root / split / w / f"{w}_{i}.JPEG", value=10 * k + i, fmt="JPEG")


def test_imagenet_layout(tmp_path, monkeypatch):
    make_imagenet(tmp_path / "in", ["n01440764", "n01443537", "n01484850"])
    (tmp_path / "in" / "train" / "README.txt").write_text("not a class")
    monkeypatch.setenv("CSSL_BENCH_IMAGENET", str(tmp_path / "in"))
    assert REGISTRY["imagenet"].found()
    tr, te = get_source("imagenet", "train"), get_source("imagenet", "test")
    assert tr.classes == ["n01440764", "n01443537", "n01484850"] and len(tr) == 6 and len(te) == 6
    assert list(tr.labels) == [0, 0, 1, 1, 2, 2]
    x, y = tr[3]
    assert x.shape == (3, 5, 6) and y == 1


def test_imagenet100_restricts_an_imagenet_root_to_the_100_classes(tmp_path, monkeypatch):
    ids = imagenet100_wnids()
    make_imagenet(tmp_path / "imagenet", ids + ["n01440764"], per_class=1)  # one class outside IN-100
    monkeypatch.setenv("CSSL_BENCH_DATA", str(tmp_path))
    src = get_source("imagenet100", "train")
    assert src.classes == sorted(ids) and len(src) == 100 and "n01440764" not in src.classes
    assert REGISTRY["imagenet100"].found() and str(tmp_path / "imagenet") in REGISTRY["imagenet100"].where()
    # a dedicated IN-100 folder wins, and missing classes are named
    make_imagenet(tmp_path / "imagenet100", ids[:98], per_class=1)
    with pytest.raises(UserError, match="2 of the 100 classes are missing"):
        get_source("imagenet100", "test")


def test_flowers102_layout(tmp_path, monkeypatch):
    from scipy.io import savemat

    root = tmp_path / "flowers-102"
    labels = np.array([[3, 1, 2, 1, 3, 2, 1, 2, 3]])  # 1-based classes of images 1..9
    for i in range(1, 10):
        img(root / "jpg" / f"image_{i:05d}.jpg", value=i * 20, fmt="JPEG")
    savemat(root / "imagelabels.mat", {"labels": labels})
    savemat(
        root / "setid.mat",
        {"trnid": np.array([[4, 1, 2]]), "valid": np.array([[3, 5]]), "tstid": np.array([[6, 7, 8, 9]])},
    )
    monkeypatch.setenv("CSSL_BENCH_FLOWERS102", str(root))
    tr, va, te = (get_source("flowers102", s) for s in ("train", "val", "test"))
    assert [f.name for f in tr.files] == ["image_00001.jpg", "image_00002.jpg", "image_00004.jpg"]
    assert list(tr.labels) == [2, 0, 0] and list(va.labels) == [1, 2] and list(te.labels) == [1, 0, 1, 2]
    assert tr.classes == ["001", "002", "003"]


def test_cub200_layout(tmp_path, monkeypatch):
    root = tmp_path / "CUB_200_2011"
    rows = [
        (1, "001.Albatross/a.jpg", 1, 1),
        (2, "001.Albatross/b.jpg", 1, 0),
        (3, "002.Auklet/c.jpg", 2, 1),
        (4, "002.Auklet/d.jpg", 2, 0),
    ]
    for i, p, _, _ in rows:
        img(root / "images" / p, value=i * 30, fmt="JPEG")
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (root / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")
    monkeypatch.setenv("CSSL_BENCH_DATA", str(tmp_path))
    tr, te = get_source("cub200", "train"), get_source("cub200", "test")
    assert [f.name for f in tr.files] == ["a.jpg", "c.jpg"] and list(tr.labels) == [0, 1]
    assert [f.name for f in te.files] == ["b.jpg", "d.jpg"] and te.classes == ["001.Albatross", "002.Auklet"]
    assert te[1][0].shape == (3, 5, 6)


def test_inat2019_layout(tmp_path, monkeypatch):
    root = tmp_path / "inat"
    cats = [{"id": 7, "name": "Plantae 7"}, {"id": 2, "name": "Aves 2"}]

    def write(split, entries):
        images, anns = [], []
        for k, (iid, cat) in enumerate(entries):
            fn = f"train_val2019/{cat}/{iid}.jpg"
            img(root / fn, value=k * 40, fmt="JPEG")
            images.append({"id": iid, "file_name": fn, "width": 6, "height": 5})
            anns.append({"id": 100 + iid, "image_id": iid, "category_id": cat})
        (root / f"{split}2019.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))

    write("train", [(5, 7), (1, 2), (3, 7)])
    write("val", [(9, 2), (8, 7)])
    monkeypatch.setenv("CSSL_BENCH_INAT2019", str(root))
    tr, te = get_source("inat2019", "train"), get_source("inat2019", "test")
    assert tr.classes == ["Aves 2", "Plantae 7"]  # label = rank of the category id
    assert [f.name for f in tr.files] == ["1.jpg", "3.jpg", "5.jpg"] and list(tr.labels) == [0, 1, 1]
    assert list(te.labels) == [1, 0]


def test_objectnet13_maps_folders_to_in100_ids(tmp_path, monkeypatch):
    images = tmp_path / "objectnet-1.0" / "images"
    for folder in ("bench", "bottle_cap", "chair", "banana", "n02974003"):
        for i in range(2):
            img(images / folder / f"{i}.png", value=i)
    (tmp_path / "objectnet-1.0" / "mappings").mkdir()
    (tmp_path / "objectnet-1.0" / "mappings" / "folder_to_objectnet_label.json").write_text(
        json.dumps({"laptop_x": "Laptop (open)"})
    )
    img(images / "laptop_x" / "0.png")
    monkeypatch.setenv("CSSL_BENCH_DATA", str(tmp_path))
    src = get_source("objectnet13", "test")
    assert src.classes == [
        "n03891251",
        "n02877765",
        "n04099969",
        "n03642806",
        "n02974003",
    ]  # docs/protocols.md order, found ones
    assert len(src) == 9 and list(src.labels) == [0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert "n07753592" not in objectnet13_folders(images)  # banana is not one of the 13
    with pytest.raises(UserError, match="only a test split"):
        get_source("objectnet13", "train")


def test_imagenet_c_100_layout(tmp_path, monkeypatch):
    root = tmp_path / "imagenet-c"
    ids = imagenet100_wnids()
    for w in (ids[0], ids[1], "n01440764"):
        img(root / "gaussian_noise" / "3" / w / "x.JPEG", fmt="JPEG")
    monkeypatch.setenv("CSSL_BENCH_IMAGENET_C", str(root))
    src = get_source("imagenet-c-100", "gaussian_noise/3")
    assert src.classes == sorted([ids[0], ids[1]]) and len(src) == 2
    with pytest.raises(UserError, match="CORRUPTION/SEVERITY"):
        get_source("imagenet-c-100", "test")
    with pytest.raises(UserError, match="does not exist"):
        get_source("imagenet-c-100", "fog/5")


# ----------------------------------------------------------------------------------------------
# bad input


def test_truncated_jpeg_is_named_and_skip_bad_skips(tmp_path):
    img(tmp_path / "a" / "good.jpg", size=(32, 32), fmt="JPEG")
    img(tmp_path / "a" / "bad.jpg", size=(32, 32), fmt="JPEG")
    data = (tmp_path / "a" / "bad.jpg").read_bytes()
    (tmp_path / "a" / "bad.jpg").write_bytes(data[: len(data) // 2])
    src = get_source(f"imagefolder:{tmp_path}", "train")
    with pytest.raises(UserError, match="bad.jpg.*--skip-bad"):
        [src[i] for i in range(len(src))]
    from cssl_bench.data.datasets import DatasetOptions

    src = get_source(f"imagefolder:{tmp_path}", "train", DatasetOptions(skip_bad=True))
    xs = [src[i][0] for i in range(len(src))]
    assert len(src.bad) == 1 and src.bad[0].name == "bad.jpg" and int(xs[0].sum()) == 0


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        get_source(f"imagefolder:{tmp_path / 'empty'}", "train")
    (tmp_path / "classes" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        get_source(f"imagefolder:{tmp_path / 'classes'}", "train")


def test_one_class_folder_is_one_class(tmp_path):
    """Documented behaviour: a single class folder is a dataset with one class (fine for pretraining)."""
    for i in range(3):
        img(tmp_path / "only" / f"{i}.png", value=i)
    src = get_source(f"imagefolder:{tmp_path}", "train")
    assert src.classes == ["only"] and list(src.labels) == [0, 0, 0]


def test_data_list_shows_found_and_where(cli, tmp_path):
    make_imagenet(tmp_path / "imagenet", ["n01440764"], per_class=1)
    r = cli("data", "list", "--json", env={"CSSL_BENCH_DATA": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(NAMED) | {"embedded", "embedded-color", "embedded-shift", "imagefolder:PATH"} <= set(rows)
    assert rows["imagenet"]["found"] is True and str(tmp_path / "imagenet") in rows["imagenet"]["where"]
    assert rows["cub200"]["found"] is False and "CUB_200_2011" in rows["cub200"]["where"]
