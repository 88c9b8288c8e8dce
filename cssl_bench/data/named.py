"""Named real datasets, read in their published layouts (nothing is downloaded).

Every dataset is a ``DatasetInfo`` of ``DATASETS`` (``cssl_bench.data.datasets.REGISTRY`` holds them) with ``where()``
(the folder it reads and how that was chosen) and ``found()``, shown by ``cssl-bench data list``.
A missing root gives one line saying what is expected where.

Roots: ``$CSSL_BENCH_DATA`` (default ``~/datasets``) holds one folder per dataset; a per-dataset
variable overrides it:

==================  =======================  ==============================================================
name                variable                 default folder and layout
==================  =======================  ==============================================================
imagenet            CSSL_BENCH_IMAGENET      ``imagenet/``: ``train/WNID/*.JPEG``, ``val/WNID/*.JPEG``
imagenet100         CSSL_BENCH_IMAGENET100   ``imagenet100/`` in the ImageNet layout if it exists, else the
                                             ImageNet root; either way only the 100 classes of CMC's list
                                             (``imagenet100.txt``, Tian et al., ECCV 2020); test = val
flowers102          CSSL_BENCH_FLOWERS102    ``flowers-102/``: ``jpg/image_NNNNN.jpg``, ``imagelabels.mat``,
                                             ``setid.mat`` (Nilsback & Zisserman 2008); splits train / val /
                                             test = ``trnid`` / ``valid`` / ``tstid``
cub200              CSSL_BENCH_CUB200        ``CUB_200_2011/``: ``images.txt``, ``image_class_labels.txt``,
                                             ``train_test_split.txt``, ``classes.txt``, ``images/``
inat2019            CSSL_BENCH_INAT2019      ``inat2019/``: ``train2019.json``, ``val2019.json`` (COCO-style)
                                             with image paths relative to the folder; test = val2019
objectnet13         CSSL_BENCH_OBJECTNET     ``objectnet-1.0/``: ``images/FOLDER/*`` (test split only); the 13
                                             ObjectNet classes of docs/protocols.md, section 2, labelled by their IN-100
                                             WordNet ids (class folders named by ObjectNet's folder name,
                                             e.g. ``bottle_cap``, or by the WordNet id)
imagenet-c-100      CSSL_BENCH_IMAGENET_C    ``imagenet-c/``: ``CORRUPTION/SEVERITY/WNID/*.JPEG`` (Hendrycks &
                                             Dietterich 2019) restricted to IN-100; split ``CORRUPTION/SEVERITY``
==================  =======================  ==============================================================

Class names are WordNet ids where the dataset has them, so probes match classes across datasets by
name (IN-100 <-> ObjectNet-13 <-> ImageNet-C-100). Unreadable image files raise a ``UserError`` naming
the file unless ``data.skip_bad`` (``pretrain --skip-bad``; see ``FolderSource``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from cssl_bench import UserError
from cssl_bench.data.sources import IMAGE_EXTENSIONS, DatasetInfo, DatasetOptions, FolderSource, ImageSource

# The 13 ObjectNet classes that map into IN-100 (docs/protocols.md, section 2): WordNet id -> ImageNet name.
ON13: dict[str, str] = {
    "n03891251": "park bench",
    "n02877765": "bottlecap",
    "n04099969": "rocking chair",
    "n03379051": "football helmet",
    "n03584829": "iron",
    "n03594734": "jean",
    "n03085013": "computer keyboard",
    "n03637318": "lampshade",
    "n03642806": "laptop",
    "n03775546": "mixing bowl",
    "n04127249": "safety pin",
    "n04517823": "vacuum cleaner",
    "n02974003": "car wheel",
}
# ObjectNet's own names for those classes (its folder names and labels), normalised by ``_norm``.
_ON13_ALIASES: dict[str, tuple[str, ...]] = {
    "n03891251": ("bench", "parkbench"),
    "n02877765": ("bottlecap",),
    "n04099969": ("chair", "rockingchair"),
    "n03379051": ("helmet", "footballhelmet"),
    "n03584829": ("iron", "ironforclothes"),
    "n03594734": ("jeans", "jean"),
    "n03085013": ("keyboard", "computerkeyboard"),
    "n03637318": ("lampshade",),
    "n03642806": ("laptop", "laptopopen"),
    "n03775546": ("mixingbowl", "mixingsaladbowl", "saladbowl"),
    "n04127249": ("safetypin",),
    "n04517823": ("vacuumcleaner", "vacuum"),
    "n02974003": ("wheel", "carwheel"),
}


def imagenet100_wnids() -> list[str]:
    """The 100 WordNet ids of CMC's ``imagenet100.txt`` (shipped in the package), in the file's order."""
    text = resources.files("cssl_bench.data").joinpath("imagenet100.txt").read_text()
    return [w.strip() for w in text.split() if w.strip()]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# ----------------------------------------------------------------------------------------------
# roots


def data_root() -> Path:
    return Path(os.path.expanduser(os.environ.get("CSSL_BENCH_DATA", "~/datasets")))


def _root(var: str, folder: str) -> tuple[Path, str]:
    """(root, how it was chosen) for a dataset: ``$var`` if set, else ``$CSSL_BENCH_DATA/folder``."""
    if os.environ.get(var):
        return Path(os.path.expanduser(os.environ[var])), f"${var}"
    return data_root() / folder, "$CSSL_BENCH_DATA/" + folder


def _missing(name: str, root: Path, how: str, expects: str, var: str) -> UserError:
    return UserError(f"{name}: not found at {root} ({how}); expected {expects}; set {var} or CSSL_BENCH_DATA")


class FileListSource(FolderSource):
    """Images given as a file list with labels (the published index files of CUB, iNat, Flowers)."""

    def __init__(
        self, name: str, files: list[Path], labels, classes: list[str], skip_bad: bool = False, root: Path | None = None
    ):
        self.name, self.root, self.skip_bad = name, root, skip_bad
        self.files, self.classes = list(files), list(classes)
        self.labels = np.asarray(labels, np.int64)
        self.bad: list[Path] = []
        if not self.files:
            raise UserError(f"{name}: no images listed")


def _class_files(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
            files.append(f)
            labels.append(ci)
    return files, labels


def _wnid_folders(root: Path) -> list[str]:
    return (
        sorted(d.name for d in root.iterdir() if d.is_dir() and re.fullmatch(r"n\d{8}", d.name))
        if root.is_dir()
        else []
    )


# ----------------------------------------------------------------------------------------------
# ImageNet and ImageNet-100


IMAGENET_EXPECTS = "train/ and val/ with one folder of images per WordNet id (val/ reorganised into class folders)"


def _imagenet_root() -> tuple[Path, str]:
    return _root("CSSL_BENCH_IMAGENET", "imagenet")


def _imagenet_split(name: str, root: Path, how: str, var: str, split: str) -> Path:
    if not (root / "train").is_dir():
        raise _missing(name, root, how, IMAGENET_EXPECTS, var)
    if split == "train":
        return root / "train"
    if split in ("test", "val"):
        if (root / "val").is_dir():
            return root / "val"
        raise UserError(f"{name}: {root / 'val'} is missing; expected {IMAGENET_EXPECTS}")
    raise UserError(f"{name}: unknown split {split!r}; choose train or test (= val)", exit_code=2)


def _build_imagenet(split: str, o: DatasetOptions) -> ImageSource:
    root, how = _imagenet_root()
    folder = _imagenet_split("imagenet", root, how, "CSSL_BENCH_IMAGENET", split)
    classes = _wnid_folders(folder)
    if not classes:
        raise UserError(f"imagenet: {folder} has no WordNet-id folders (n01440764/ ...); expected {IMAGENET_EXPECTS}")
    files, labels = _class_files(folder, classes)
    return FileListSource(f"imagenet/{split}", files, labels, classes, o.skip_bad, folder)


def _imagenet100_root() -> tuple[Path, str, str]:
    """(root, how, variable): a dedicated IN-100 folder if there is one, else the ImageNet root."""
    root, how = _root("CSSL_BENCH_IMAGENET100", "imagenet100")
    if os.environ.get("CSSL_BENCH_IMAGENET100") or (root / "train").is_dir():
        return root, how, "CSSL_BENCH_IMAGENET100"
    r, h = _imagenet_root()
    return r, h, "CSSL_BENCH_IMAGENET100 or CSSL_BENCH_IMAGENET"


def _build_imagenet100(split: str, o: DatasetOptions) -> ImageSource:
    root, how, var = _imagenet100_root()
    folder = _imagenet_split("imagenet100", root, how, var, split)
    classes = sorted(imagenet100_wnids())
    missing = [c for c in classes if not (folder / c).is_dir()]
    if missing:
        raise UserError(
            f"imagenet100: {len(missing)} of the 100 classes are missing in {folder} (e.g. {', '.join(missing[:3])})"
        )
    files, labels = _class_files(folder, classes)
    return FileListSource(f"imagenet100/{split}", files, labels, classes, o.skip_bad, folder)


# ----------------------------------------------------------------------------------------------
# Flowers-102, CUB-200-2011, iNaturalist 2019


def _flowers_root() -> tuple[Path, str]:
    return _root("CSSL_BENCH_FLOWERS102", "flowers-102")


FLOWERS_EXPECTS = "jpg/image_NNNNN.jpg, imagelabels.mat and setid.mat (the Oxford Flowers-102 release)"


def _build_flowers(split: str, o: DatasetOptions) -> ImageSource:
    from scipy.io import loadmat

    root, how = _flowers_root()
    if not ((root / "imagelabels.mat").is_file() and (root / "setid.mat").is_file() and (root / "jpg").is_dir()):
        raise _missing("flowers102", root, how, FLOWERS_EXPECTS, "CSSL_BENCH_FLOWERS102")
    key = {"train": "trnid", "val": "valid", "test": "tstid"}.get(split)
    if key is None:
        raise UserError(f"flowers102: unknown split {split!r}; choose train, val or test", exit_code=2)
    labels_all = np.asarray(loadmat(root / "imagelabels.mat")["labels"]).reshape(-1).astype(np.int64)  # 1-based classes
    ids = np.asarray(loadmat(root / "setid.mat")[key]).reshape(-1).astype(np.int64)  # 1-based image ids
    ids.sort()
    files = [root / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    n_cls = int(labels_all.max())
    return FileListSource(
        f"flowers102/{split}",
        files,
        labels_all[ids - 1] - 1,
        [f"{c:03d}" for c in range(1, n_cls + 1)],
        o.skip_bad,
        root,
    )


def _cub_root() -> tuple[Path, str]:
    return _root("CSSL_BENCH_CUB200", "CUB_200_2011")


CUB_EXPECTS = (
    "images.txt, image_class_labels.txt, train_test_split.txt, classes.txt and images/ (the CUB-200-2011 release)"
)


def _read_pairs(path: Path) -> dict[int, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            k, v = line.split(maxsplit=1)
            out[int(k)] = v.strip()
    return out


def _build_cub(split: str, o: DatasetOptions) -> ImageSource:
    root, how = _cub_root()
    needed = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]
    if not all((root / f).is_file() for f in needed):
        raise _missing("cub200", root, how, CUB_EXPECTS, "CSSL_BENCH_CUB200")
    if split not in ("train", "test"):
        raise UserError(f"cub200: unknown split {split!r}; choose train or test", exit_code=2)
    images, labels = _read_pairs(root / "images.txt"), _read_pairs(root / "image_class_labels.txt")
    is_train, classes = _read_pairs(root / "train_test_split.txt"), _read_pairs(root / "classes.txt")
    class_ids = sorted(classes)
    index = {c: i for i, c in enumerate(class_ids)}
    want = "1" if split == "train" else "0"
    ids = sorted(i for i in images if is_train[i] == want)
    return FileListSource(
        f"cub200/{split}",
        [root / "images" / images[i] for i in ids],
        [index[int(labels[i])] for i in ids],
        [classes[c] for c in class_ids],
        o.skip_bad,
        root,
    )


def _inat_root() -> tuple[Path, str]:
    return _root("CSSL_BENCH_INAT2019", "inat2019")


INAT_EXPECTS = (
    "train2019.json and val2019.json (COCO-style: images, annotations, categories) with image paths relative to it"
)


def _build_inat(split: str, o: DatasetOptions) -> ImageSource:
    root, how = _inat_root()
    if not ((root / "train2019.json").is_file() and (root / "val2019.json").is_file()):
        raise _missing("inat2019", root, how, INAT_EXPECTS, "CSSL_BENCH_INAT2019")
    if split not in ("train", "test", "val"):
        raise UserError(f"inat2019: unknown split {split!r}; choose train or test (= val2019)", exit_code=2)
    # categories come from the training file so both splits share one label space
    train = json.loads((root / "train2019.json").read_text())
    data = train if split == "train" else json.loads((root / "val2019.json").read_text())
    cats = train.get("categories") or [{"id": c} for c in sorted({a["category_id"] for a in train["annotations"]})]
    cat_ids = sorted(int(c["id"]) for c in cats)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    index = {c: i for i, c in enumerate(cat_ids)}
    label_of = {int(a["image_id"]): int(a["category_id"]) for a in data["annotations"]}
    imgs = sorted(data["images"], key=lambda im: int(im["id"]))
    files = [root / im["file_name"] for im in imgs]
    try:
        labels = [index[label_of[int(im["id"])]] for im in imgs]
    except KeyError as e:
        raise UserError(
            f"inat2019: image or category {e} of {split} has no annotation or is not a training category"
        ) from None
    return FileListSource(f"inat2019/{split}", files, labels, [names[c] for c in cat_ids], o.skip_bad, root)


# ----------------------------------------------------------------------------------------------
# ObjectNet-13 and ImageNet-C-100


def _objectnet_root() -> tuple[Path, str]:
    return _root("CSSL_BENCH_OBJECTNET", "objectnet-1.0")


def _objectnet_images(root: Path) -> Path:
    return root / "images" if (root / "images").is_dir() else root


def objectnet13_folders(images: Path, mapping: Path | None = None) -> dict[str, Path]:
    """WordNet id -> the ObjectNet class folder holding it, for those of the 13 found under ``images``.

    A folder matches by its name, by its ObjectNet label in ``mappings/folder_to_objectnet_label.json``
    when that file exists, or by being named with the WordNet id itself."""
    labels: dict[str, str] = {}
    if mapping is not None and mapping.is_file():
        labels = json.loads(mapping.read_text())
    out: dict[str, Path] = {}
    for d in sorted(p for p in images.iterdir() if p.is_dir()):
        cands = {_norm(d.name), _norm(labels.get(d.name, ""))}
        for wnid, aliases in _ON13_ALIASES.items():
            if d.name == wnid or cands & set(aliases) or _norm(ON13[wnid]) in cands:
                out.setdefault(wnid, d)
    return out


def _build_objectnet13(split: str, o: DatasetOptions) -> ImageSource:
    root, how = _objectnet_root()
    if split != "test":
        raise UserError(f"objectnet13: ObjectNet has only a test split (asked for {split!r})", exit_code=2)
    images = _objectnet_images(root)
    if not images.is_dir():
        raise _missing(
            "objectnet13", root, how, "images/CLASS_FOLDER/* (the ObjectNet 1.0 release)", "CSSL_BENCH_OBJECTNET"
        )
    folders = objectnet13_folders(images, root / "mappings" / "folder_to_objectnet_label.json")
    if not folders:
        raise UserError(
            f"objectnet13: none of the 13 classes ({', '.join(sorted(ON13.values()))}) has a folder under {images}"
        )
    classes = [w for w in ON13 if w in folders]
    files, labels = [], []
    for ci, w in enumerate(classes):
        fs = sorted(p for p in folders[w].rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        files += fs
        labels += [ci] * len(fs)
    return FileListSource("objectnet13/test", files, labels, classes, o.skip_bad, images)


def _imagenet_c_root() -> tuple[Path, str]:
    return _root("CSSL_BENCH_IMAGENET_C", "imagenet-c")


def _build_imagenet_c_100(split: str, o: DatasetOptions) -> ImageSource:
    root, how = _imagenet_c_root()
    if not root.is_dir():
        raise _missing(
            "imagenet-c-100",
            root,
            how,
            "CORRUPTION/SEVERITY/WNID/*.JPEG (the ImageNet-C release)",
            "CSSL_BENCH_IMAGENET_C",
        )
    parts = split.split("/")
    if len(parts) != 2 or not parts[1].isdigit():
        have = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise UserError(
            f"imagenet-c-100: split must be CORRUPTION/SEVERITY (e.g. gaussian_noise/3; corruptions here: "
            f"{', '.join(have[:5]) or 'none'}{', ...' if len(have) > 5 else ''}), not {split!r}",
            exit_code=2,
        )
    folder = root / parts[0] / parts[1]
    if not folder.is_dir():
        raise UserError(f"imagenet-c-100: {folder} does not exist (layout CORRUPTION/SEVERITY/WNID/)")
    classes = [w for w in sorted(imagenet100_wnids()) if (folder / w).is_dir()]
    if not classes:
        raise UserError(f"imagenet-c-100: {folder} has none of the IN-100 class folders")
    files, labels = _class_files(folder, classes)
    return FileListSource(f"imagenet-c-100/{split}", files, labels, classes, o.skip_bad, folder)


# ----------------------------------------------------------------------------------------------
# registration


def _where(fn: Callable[[], tuple], what: str) -> Callable[[], str]:
    def where() -> str:
        r = fn()
        return f"{r[0]} ({r[1]}): {what}"

    return where


def _found(fn: Callable[[], bool]) -> Callable[[], bool]:
    def found() -> bool:
        try:
            return bool(fn())
        except OSError:
            return False

    return found


# the named datasets, in the order ``cssl_bench.data.datasets.REGISTRY`` lists them after the embedded ones
DATASETS: tuple[DatasetInfo, ...] = (
    DatasetInfo(
        "imagenet",
        "ImageNet-1k (ILSVRC 2012), 1000 classes",
        _build_imagenet,
        _where(_imagenet_root, IMAGENET_EXPECTS),
        _found(lambda: (_imagenet_root()[0] / "train").is_dir()),
    ),
    DatasetInfo(
        "imagenet100",
        "ImageNet-100: the 100 classes of CMC's list (imagenet100.txt); test = val",
        _build_imagenet100,
        _where(_imagenet100_root, "the ImageNet layout; only the 100 listed classes are read"),
        _found(lambda: (_imagenet100_root()[0] / "train").is_dir()),
    ),
    DatasetInfo(
        "flowers102",
        "Oxford Flowers-102 (few-shot transfer), 102 classes",
        _build_flowers,
        _where(_flowers_root, FLOWERS_EXPECTS),
        _found(lambda: (_flowers_root()[0] / "setid.mat").is_file()),
        splits=("train", "val", "test"),
    ),
    DatasetInfo(
        "cub200",
        "CUB-200-2011 birds (fine-grained), 200 classes",
        _build_cub,
        _where(_cub_root, CUB_EXPECTS),
        _found(lambda: (_cub_root()[0] / "images.txt").is_file()),
    ),
    DatasetInfo(
        "inat2019",
        "iNaturalist 2019 (fine-grained, 1010 classes); test = val2019",
        _build_inat,
        _where(_inat_root, INAT_EXPECTS),
        _found(lambda: (_inat_root()[0] / "train2019.json").is_file()),
    ),
    DatasetInfo(
        "objectnet13",
        "ObjectNet images of the 13 classes that map into IN-100 (labels: WordNet ids)",
        _build_objectnet13,
        _where(_objectnet_root, "images/CLASS_FOLDER/* of ObjectNet 1.0"),
        _found(lambda: _objectnet_images(_objectnet_root()[0]).is_dir()),
        splits=("test",),
    ),
    DatasetInfo(
        "imagenet-c-100",
        "ImageNet-C restricted to IN-100: 15 corruptions x 5 severities; split CORRUPTION/SEVERITY",
        _build_imagenet_c_100,
        _where(_imagenet_c_root, "CORRUPTION/SEVERITY/WNID/*.JPEG"),
        _found(lambda: _imagenet_c_root()[0].is_dir()),
        splits=("CORRUPTION/SEVERITY",),
    ),
)
