"""Detection datasets: readers for the VOC XML layout and COCO JSON, and the named detection datasets.

Both readers give a ``DetectionSet``: per image a ``DetRecord`` with boxes [N, 4] (``x0, y0, x1, y1``
in pixels, continuous coordinates), labels [N] in 1..K (0 is the background of torchvision's
detectors), ``ignore`` [N] (VOC ``difficult`` / COCO ``iscrowd``: neither a hit nor a miss in the
evaluation) and, for COCO, the raw segmentations. ``DetectionSet.coco_gt()`` is the pycocotools
ground truth the evaluation compares against.

VOC conventions follow detectron2's ``pascal_voc`` loader: VOC boxes are 1-based inclusive pixel
indices, so ``x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax``; ``difficult`` objects are kept
for training and ignored in the evaluation. COCO ``iscrowd`` regions are left out of training (as
detectron2 does) and ignored in the evaluation; images with no object to learn from are skipped in
training (detectron2's ``FILTER_EMPTY_ANNOTATIONS``).
"""

from __future__ import annotations

import contextlib
import io
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.data.sources import IMAGE_EXTENSIONS, read_image

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass
class DetRecord:
    image_id: int
    file: Path
    width: int
    height: int
    boxes: np.ndarray  # float32 [N, 4] x0, y0, x1, y1
    labels: np.ndarray  # int64 [N] in 1..K
    ignore: np.ndarray  # bool [N]: difficult (VOC) or crowd (COCO)
    train_keep: np.ndarray  # bool [N]: used as a training target
    segmentations: list | None = None  # COCO polygons or RLE per object


@dataclass
class DetectionSet(torch.utils.data.Dataset):
    """A detection split: ``self[i]`` -> (uint8 image [3, H, W], target dict for torchvision's detectors)."""

    name: str
    classes: list[str]
    records: list[DetRecord]
    category_ids: list[int] = field(default_factory=list)  # COCO category id of label k (index k - 1)
    has_masks: bool = False

    def __post_init__(self):
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.classes) + 1))

    def __len__(self) -> int:
        return len(self.records)

    def masks(self, r: DetRecord) -> torch.Tensor:
        """uint8 [N, H, W] instance masks decoded from the COCO segmentations."""
        from pycocotools import mask as mask_utils

        out = np.zeros((len(r.labels), r.height, r.width), np.uint8)
        for k, seg in enumerate(r.segmentations or []):
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, r.height, r.width))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, r.height, r.width)
            else:
                rle = {
                    "size": seg["size"],
                    "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"],
                }
            out[k] = mask_utils.decode(rle)
        return torch.from_numpy(out)

    def image(self, i: int) -> torch.Tensor:
        """uint8 [3, H, W] of record ``i``, checked against the annotated size."""
        r = self.records[i]
        img = read_image(r.file)
        if img.shape[1:] != (r.height, r.width):
            raise UserError(
                f"{r.file}: image is {img.shape[2]}x{img.shape[1]} but its annotation says {r.width}x{r.height}"
            )
        return img

    def __getitem__(self, i: int):
        r = self.records[i]
        img = self.image(i)
        keep = torch.from_numpy(r.train_keep)
        target = {
            "boxes": torch.from_numpy(r.boxes)[keep],
            "labels": torch.from_numpy(r.labels)[keep],
            "image_id": r.image_id,
        }
        if self.has_masks:
            target["masks"] = self.masks(r)[keep]
        return img, target

    def trainable(self) -> DetectionSet:
        """The images with at least one training target."""
        return DetectionSet(
            self.name, self.classes, [r for r in self.records if r.train_keep.any()], self.category_ids, self.has_masks
        )

    def subset(self, n: int | None) -> DetectionSet:
        return (
            self
            if n is None or n >= len(self.records)
            else DetectionSet(self.name, self.classes, self.records[:n], self.category_ids, self.has_masks)
        )

    def coco_gt(self):
        """pycocotools ground truth of this split (ignored objects become crowd regions, which COCOeval ignores).

        ``area`` is the box area: it only selects COCO's small/medium/large ranges, and the reported
        AP, AP50 and AP75 use the full range."""
        from pycocotools.coco import COCO

        images, anns = [], []
        for r in self.records:
            images.append({"id": r.image_id, "width": r.width, "height": r.height, "file_name": str(r.file)})
            for k in range(len(r.labels)):
                x0, y0, x1, y1 = (float(v) for v in r.boxes[k])
                ann = {
                    "id": len(anns) + 1,
                    "image_id": r.image_id,
                    "category_id": self.category_ids[int(r.labels[k]) - 1],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": int(r.ignore[k]),
                    "area": (x1 - x0) * (y1 - y0),
                }
                if self.has_masks and r.segmentations is not None:
                    ann["segmentation"] = r.segmentations[k]  # COCOeval reads polygons and RLE (str counts) alike
                anns.append(ann)
        cats = [{"id": cid, "name": c} for cid, c in zip(self.category_ids, self.classes)]
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt


def _find_image(folder: Path, stem: str) -> Path:
    p = folder / f"{stem}.jpg"
    if p.exists():
        return p
    for ext in IMAGE_EXTENSIONS:
        q = folder / f"{stem}{ext}"
        if q.exists():
            return q
    raise UserError(f"no image for {stem} in {folder}")


def voc_year_dir(root: Path, year: str) -> Path:
    """``root/VOCdevkit/VOC{year}``, ``root/VOC{year}`` or ``root`` itself when it is that folder."""
    root = Path(os.path.expanduser(str(root)))
    for cand in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (cand / "Annotations").is_dir() and (cand / "ImageSets" / "Main").is_dir():
            return cand
    raise UserError(f"no VOC{year} found under {root} (expected VOCdevkit/VOC{year}/Annotations and ImageSets/Main)")


def _xml_int(node, tag: str, where: str) -> float:
    el = node.find(tag)
    if el is None or el.text is None:
        raise UserError(f"{where}: missing <{tag}>")
    try:
        return float(el.text)
    except ValueError:
        raise UserError(f"{where}: <{tag}> is not a number ({el.text!r})") from None


def read_voc(
    root: Path, year: str, split: str, classes: tuple[str, ...] | list[str] = VOC_CLASSES, first_id: int = 1
) -> DetectionSet:
    """One VOC split (``VOC{year}/ImageSets/Main/{split}.txt``) with its XML annotations."""
    d = voc_year_dir(root, year)
    ids_file = d / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.exists():
        raise UserError(f"{ids_file} does not exist (VOC splits: train, val, trainval, test)")
    index = {c: i + 1 for i, c in enumerate(classes)}
    records = []
    for n, stem in enumerate(s.strip() for s in ids_file.read_text().splitlines() if s.strip()):
        xml_path = d / "Annotations" / f"{stem}.xml"
        try:
            tree = ET.parse(xml_path).getroot()
        except (OSError, ET.ParseError) as e:
            raise UserError(f"unreadable VOC annotation {xml_path} ({type(e).__name__})") from None
        size = tree.find("size")
        if size is None:
            raise UserError(f"{xml_path}: missing <size>")
        w, h = int(_xml_int(size, "width", str(xml_path))), int(_xml_int(size, "height", str(xml_path)))
        boxes, labels, difficult = [], [], []
        for obj in tree.findall("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise UserError(f"{xml_path}: unknown class {name!r} (expected one of {', '.join(classes)})")
            bb = obj.find("bndbox")
            if bb is None:
                raise UserError(f"{xml_path}: object without <bndbox>")
            # 1-based inclusive pixel indices -> continuous coordinates (detectron2's convention)
            boxes.append(
                [
                    _xml_int(bb, "xmin", str(xml_path)) - 1,
                    _xml_int(bb, "ymin", str(xml_path)) - 1,
                    _xml_int(bb, "xmax", str(xml_path)),
                    _xml_int(bb, "ymax", str(xml_path)),
                ]
            )
            labels.append(index[name])
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
        ign = np.asarray(difficult, bool)
        records.append(
            DetRecord(
                first_id + n,
                _find_image(d / "JPEGImages", stem),
                w,
                h,
                np.asarray(boxes, np.float32).reshape(-1, 4),
                np.asarray(labels, np.int64),
                ign,
                np.ones(len(labels), bool),
            )
        )
    return DetectionSet(f"voc{year}/{split}", list(classes), records)


def concat(name: str, parts: list[DetectionSet]) -> DetectionSet:
    """Several splits as one (image ids renumbered so that they stay unique)."""
    records, next_id = [], 1
    for p in parts:
        if p.classes != parts[0].classes:
            raise UserError("cannot join detection splits with different classes")
        for r in p.records:
            records.append(
                DetRecord(
                    next_id, r.file, r.width, r.height, r.boxes, r.labels, r.ignore, r.train_keep, r.segmentations
                )
            )
            next_id += 1
    return DetectionSet(name, parts[0].classes, records, parts[0].category_ids, parts[0].has_masks)


def read_coco(ann_file: Path, image_root: Path, name: str | None = None, masks: bool = True) -> DetectionSet:
    """A COCO-format split: ``ann_file`` (instances JSON) with images under ``image_root``."""
    from pycocotools.coco import COCO

    ann_file, image_root = Path(os.path.expanduser(str(ann_file))), Path(os.path.expanduser(str(image_root)))
    if not ann_file.exists():
        raise UserError(f"COCO annotation file {ann_file} does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{ann_file} is not a COCO instances file ({type(e).__name__}: {e})") from None
    cat_ids = sorted(coco.getCatIds())
    classes = [coco.loadCats(c)[0]["name"] for c in cat_ids]
    label_of = {c: i + 1 for i, c in enumerate(cat_ids)}
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        anns = [
            a
            for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            if a.get("bbox") and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        boxes = np.asarray(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            np.float32,
        ).reshape(-1, 4)
        crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)
        segs = [a.get("segmentation") for a in anns] if masks else None
        if masks and any(s is None for s in segs):
            raise UserError(f"{ann_file}: image {img_id} has annotations without a segmentation; use --task box")
        records.append(
            DetRecord(
                int(img_id),
                image_root / info["file_name"],
                int(info["width"]),
                int(info["height"]),
                boxes,
                np.asarray([label_of[a["category_id"]] for a in anns], np.int64),
                crowd,
                ~crowd,
                segs,
            )
        )
    return DetectionSet(name or ann_file.stem, classes, records, cat_ids, masks)
