import numpy as np
import pytest
from PIL import Image

from cssl_bench import UserError
from cssl_bench.data.datasets import get_source
from cssl_bench.data.sources import to_rgb


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "RGB"])
def test_every_pil_mode_becomes_rgb(tmp_path, mode):
    arr = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr).convert("L" if mode in ("I;16", "I", "F", "1") else "RGB")
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(
            (np.asarray(img).astype(np.uint16) * 200).astype(
                np.uint16 if mode == "I;16" else np.int32 if mode == "I" else np.float32
            )
        )
    else:
        img = img.convert(mode)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (24, 20)
    ext = "tiff" if mode in ("I;16", "I", "F", "CMYK") else "png"
    (tmp_path / "a").mkdir()
    img.save(tmp_path / "a" / f"x.{ext}")
    src = get_source(f"imagefolder:{tmp_path}", "train")
    x, y = src[0]
    assert x.shape == (3, 20, 24) and y == 0


def test_imagefolder_splits_and_classes(tmp_path):
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    tr = get_source(f"imagefolder:{tmp_path}", "train")
    te = get_source(f"imagefolder:{tmp_path}", "test")
    assert tr.classes == ["cat", "dog"] and len(tr) == 6 and len(te) == 6
    assert list(tr.labels) == [0, 0, 0, 1, 1, 1]


def test_label_free_folder(tmp_path):
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.jpg")
    src = get_source(f"imagefolder:{tmp_path}", "train")
    assert len(src) == 4 and src.classes == ["unlabelled"]


def test_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_source(f"imagefolder:{tmp_path / 'nope'}", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        get_source(f"imagefolder:{tmp_path / 'empty'}", "train")
    with pytest.raises(UserError, match="unknown dataset"):
        get_source("imagenet-5", "train")
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "x.jpg").write_bytes(b"not a jpeg")
    src = get_source(f"imagefolder:{tmp_path / 'bad'}", "train")
    with pytest.raises(UserError, match="unreadable image"):
        src[0]
