"""``embedded-det``: multi-object scenes from the embedded generator, with boxes and instance masks.

The small-scale stand-in for VOC and COCO (SimSiam Table 5). Each scene is a ``size`` x ``size``
image holding 1..``max_objects`` objects drawn from the embedded dataset's vocabulary
(``cssl_bench.data.embedded``: 10 shape classes, palette colours, procedural textures) on the same
kind of low-contrast noisy background. Objects are placed so that their boxes overlap little (box
IoU below 0.2), then painted back to front; an object's mask is what stays visible of it, its box
the tight box of that mask. The scenes are written once into a cache folder in both layouts:

- VOC: ``VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}`` and
  ``VOCdevkit/VOC2012/...`` (``trainval`` only), the 07 / 07+12 protocols' layout (images are PNG);
- COCO: ``annotations/instances_train.json`` (VOC2007 trainval + VOC2012 trainval scenes) and
  ``annotations/instances_test.json`` (the VOC2007 test scenes), masks as RLE, ``file_name``
  relative to the dataset root.

Generation is deterministic from the spec (seed included); the folder name carries the spec and
the generator version, and the folder appears atomically (built under a temporary name, renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cssl_bench.data.embedded import CLASSES, COLORS, PALETTE, SHAPES, cache_dir
from cssl_bench.data.textures import TEXTURES, pattern, sample_texture_params

GENERATOR_VERSION = 1
MAX_BOX_IOU = 0.2  # placements overlapping more are redrawn, so every object stays recognisable


@dataclass(frozen=True)
class EmbeddedDetSpec:
    """Scene size in pixels and the number of scenes per split (07 trainval, 12 trainval, 07 test)."""

    size: int = 64
    n_train07: int = 200
    n_train12: int = 200
    n_test: int = 100
    max_objects: int = 3
    seed: int = 0

    def key(self) -> str:
        return (
            f"embedded-det-v{GENERATOR_VERSION}-s{self.size}-{self.n_train07}-{self.n_train12}-{self.n_test}"
            f"-m{self.max_objects}-seed{self.seed}"
        )


@dataclass
class SceneObject:
    label: int  # index into CLASSES
    color: int
    texture: int
    mask: np.ndarray  # bool [H, W], visible part
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive (continuous box coordinates)


def _box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _alpha(label: int, cx: float, cy: float, scale: float, tilt: float, size: int) -> np.ndarray:
    """Anti-aliased coverage [size, size] in [0, 1] of one filled shape (4x supersampled, as ``embedded.render``)."""
    ss = 4
    big = size * ss
    c, s = np.cos(tilt), np.sin(tilt)
    pts = [
        ((cx + scale * (c * x - s * y)) * big, (cy + scale * (s * x + c * y)) * big) for x, y in SHAPES[CLASSES[label]]
    ]
    img = Image.new("L", (big, big), 0)
    ImageDraw.Draw(img).polygon(pts, fill=255)
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def render_scene(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, list[SceneObject]]:
    """One scene: uint8 image [size, size, 3] and its objects (visible masks and tight boxes), back to front."""
    n = int(rng.integers(1, max_objects + 1))
    bg_level = rng.uniform(60, 160)
    img = bg_level + rng.uniform(-12, 12, size=3) + rng.normal(0, 10, size=(size, size, 1))
    placed: list[tuple[float, float, float, float]] = []
    drawn: list[tuple[int, int, int, np.ndarray]] = []
    for _ in range(n):
        for _attempt in range(30):
            scale = float(
                rng.uniform(0.12, 0.26)
            )  # half-extent as a fraction of the side: objects of 24-52% of the image
            cx = float(rng.uniform(scale + 0.02, 1 - scale - 0.02))
            cy = float(rng.uniform(scale + 0.02, 1 - scale - 0.02))
            box = (cx - scale, cy - scale, cx + scale, cy + scale)
            if all(_box_iou(box, p) < MAX_BOX_IOU for p in placed):
                break
        else:
            continue  # no room left in this scene
        placed.append(box)
        label, color, texture = (
            int(rng.integers(len(CLASSES))),
            int(rng.integers(len(COLORS))),
            int(rng.integers(len(TEXTURES))),
        )
        alpha = _alpha(label, cx, cy, scale, float(rng.uniform(-0.2, 0.2)), size)[..., None]
        tex = pattern(TEXTURES[texture], sample_texture_params(rng), size, size)[..., None]
        fg = np.asarray(PALETTE[COLORS[color]], np.float32) * (0.55 + 0.45 * tex)
        img = img * (1 - alpha) + fg * alpha
        drawn.append((label, color, texture, alpha[..., 0] >= 0.5))
    objects: list[SceneObject] = []
    covered = np.zeros((size, size), bool)
    for label, color, texture, mask in reversed(drawn):  # front to back: later objects hide earlier ones
        visible = mask & ~covered
        covered |= mask
        ys, xs = np.nonzero(visible)
        if len(xs) == 0:
            continue
        objects.append(
            SceneObject(
                label, color, texture, visible, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            )
        )
    objects.reverse()
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(f"embedded-det/{seed}/{split}".encode()).hexdigest()[:8], 16))


def voc_xml(image_name: str, size: int, objects: list[SceneObject]) -> bytes:
    """A VOC annotation: 1-based inclusive pixel boxes (``xmin = x0 + 1``, ``xmax = x1``), as VOC writes them."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC"
    ET.SubElement(root, "filename").text = image_name
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for o in objects:
        ob = ET.SubElement(root, "object")
        ET.SubElement(ob, "name").text = CLASSES[o.label]
        ET.SubElement(ob, "pose").text = "Unspecified"
        ET.SubElement(ob, "truncated").text = "0"
        ET.SubElement(ob, "difficult").text = "0"
        bb = ET.SubElement(ob, "bndbox")
        x0, y0, x1, y1 = o.box
        for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bb, tag).text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def _coco_annotation(ann_id: int, image_id: int, o: SceneObject) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(o.mask.astype(np.uint8)))
    x0, y0, x1, y1 = o.box
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": o.label + 1,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(o.mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
    }


def _write(spec: EmbeddedDetSpec, root: Path) -> None:
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)]
    coco = {
        s: {
            "info": {"description": f"embedded-det {spec.key()}"},
            "images": [],
            "annotations": [],
            "categories": categories,
        }
        for s in ("train", "test")
    }
    image_id = ann_id = 0
    for year, split, n, coco_split in (
        ("2007", "trainval", spec.n_train07, "train"),
        ("2012", "trainval", spec.n_train12, "train"),
        ("2007", "test", spec.n_test, "test"),
    ):
        voc = root / "VOCdevkit" / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True, exist_ok=True)
        rng = _split_rng(spec.seed, f"{year}/{split}")
        ids = []
        for i in range(n):
            # VOC2007 numbers its images 000001..; VOC2012 prefixes the year. Test ids follow trainval's.
            stem = (
                f"{(i + 1 + (spec.n_train07 if split == 'test' else 0)):06d}" if year == "2007" else f"2012_{i + 1:06d}"
            )
            img, objects = render_scene(rng, spec.size, spec.max_objects)
            Image.fromarray(img).save(voc / "JPEGImages" / f"{stem}.png")
            (voc / "Annotations" / f"{stem}.xml").write_bytes(voc_xml(f"{stem}.png", spec.size, objects))
            ids.append(stem)
            image_id += 1
            coco[coco_split]["images"].append(
                {
                    "id": image_id,
                    "file_name": f"VOCdevkit/VOC{year}/JPEGImages/{stem}.png",
                    "width": spec.size,
                    "height": spec.size,
                }
            )
            for o in objects:
                ann_id += 1
                coco[coco_split]["annotations"].append(_coco_annotation(ann_id, image_id, o))
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in ids))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for s, d in coco.items():
        (root / "annotations" / f"instances_{s}.json").write_text(json.dumps(d))


def ensure(spec: EmbeddedDetSpec = EmbeddedDetSpec()) -> Path:
    """The dataset folder for ``spec`` (in ``$CSSL_BENCH_CACHE``), generating it the first time."""
    root = cache_dir() / spec.key()
    if (root / "annotations" / "instances_test.json").exists():
        return root
    tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(spec, tmp)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "annotations" / "instances_test.json").exists():  # not a concurrent writer's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
