"""The embedded dataset: procedurally rendered shapes, generated in the package, no files shipped.

Each image shows one object whose *class is its shape* (10 shapes, each with a canonical upright
orientation, so a 4-way rotation is predictable from content). The object's colour comes from a
palette of 10, its surface carries one of 6 procedural textures, it sits at a random position and
scale on a low-contrast noisy background. Every image keeps its attributes (class, colour, texture,
position, scale, style), from which derived tasks are built:

- ``embedded``        shape classification (the ImageNet-100 stand-in);
- ``embedded-color``  colour classification on the same images (fine-grained stand-in);
- ``embedded-shift``  train on the normal ``filled`` style, test on a held-out ``outline`` style
                      (the ObjectNet stand-in: same classes, shifted rendering).

Generation is deterministic from ``seed`` and cached as one ``.npz`` per (size, counts, seed, version)
in the cache directory (``$CSSL_BENCH_CACHE`` or ``~/.cache/cssl_bench``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cssl_bench.data.shapes import CLASSES, SHAPES, coverage
from cssl_bench.data.textures import TEXTURES, pattern, sample_texture_params

# generator versions: 1 is this module's renderer, 2 (the default dataset) lives in ``embedded_v2``
LATEST_VERSION = 2
VERSIONS = (1, 2)


PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 140, 30),
    "purple": (120, 50, 170),
    "white": (235, 235, 235),
    "brown": (130, 80, 40),
}
COLORS = tuple(PALETTE)
STYLES = ("filled", "outline")
ATTRIBUTES = ("label", "color", "texture", "cx", "cy", "scale", "style")


@dataclass(frozen=True)
class EmbeddedSpec:
    """What to generate. ``texture_contrast``: how strongly the surface texture modulates the object's
    brightness (colour x (1 - t + t * texture)); ``class_color``: the probability that an image's colour is
    its class's own (class k -> palette colour k) instead of uniform, as colour goes with class in natural
    images; ``background_jitter``: the scale of the per-image background level (110 +- 50) and tint (+-12),
    0 for one grey background. The defaults (0.45, 0, 1) are the dataset every committed result used; other
    values change the cache key."""

    size: int = 32
    n_train: int = 10000
    n_test: int = 2000
    seed: int = 0
    texture_contrast: float = 0.45
    class_color: float = 0.0
    background_jitter: float = 1.0
    version: int = LATEST_VERSION

    def __post_init__(self):
        if self.version not in VERSIONS:
            raise ValueError(f"unknown embedded generator version {self.version}; choose from {VERSIONS}")
        if self.version != 1 and self.variant_tag():
            raise ValueError(
                "texture_contrast, class_color and background_jitter are variants of generator version 1 only"
            )

    def variant_tag(self) -> str:
        return "".join(
            f"-{tag}{getattr(self, name):g}"
            for name, tag in (("texture_contrast", "tc"), ("class_color", "cc"), ("background_jitter", "bj"))
            if getattr(self, name) != getattr(_V1_DEFAULTS, name)
        )

    def key(self) -> str:
        return f"embedded-v{self.version}-s{self.size}-{self.n_train}-{self.n_test}-seed{self.seed}{self.variant_tag()}"

    @property
    def attributes(self) -> tuple[str, ...]:
        """The per-image attributes this version stores (besides ``images``)."""
        if self.version == 1:
            return ATTRIBUTES
        from cssl_bench.data import embedded_v2

        return embedded_v2.ATTRIBUTES

    def classes(self, task: str) -> tuple[str, ...]:
        """Class names of a derived task: ``label`` (shape class), ``color``, ``fine`` (v2: sub-categories)."""
        if task == "label":
            return CLASSES
        if self.version == 1:
            if task == "color":
                return COLORS
        else:
            from cssl_bench.data import embedded_v2

            if task == "color":
                return embedded_v2.HUE_NAMES
            if task == "fine":
                return embedded_v2.FINE_CLASSES
        raise ValueError(f"embedded generator version {self.version} has no task {task!r}")


_V1_DEFAULTS = EmbeddedSpec(version=1)


def cache_dir() -> Path:
    return Path(os.environ.get("CSSL_BENCH_CACHE", Path.home() / ".cache" / "cssl_bench"))


def render(
    label: int,
    color: int,
    texture: int,
    cx: float,
    cy: float,
    scale: float,
    style: str,
    size: int,
    rng: np.random.Generator,
    texture_contrast: float = EmbeddedSpec.texture_contrast,
    background_jitter: float = EmbeddedSpec.background_jitter,
) -> np.ndarray:
    """Render one [size, size, 3] uint8 image; ``rng`` draws only the nuisance details (tilt, texture phase, background)."""
    ss = 4  # supersampling factor for anti-aliased edges
    big = size * ss
    tilt = rng.uniform(-0.2, 0.2)  # small tilt keeps the canonical orientation
    c, s = np.cos(tilt), np.sin(tilt)
    pts = [
        ((cx + scale * (c * x - s * y)) * big, (cy + scale * (s * x + c * y)) * big) for x, y in SHAPES[CLASSES[label]]
    ]
    alpha = coverage(pts, style, size, ss)

    tex = pattern(TEXTURES[texture], sample_texture_params(rng), size, size)[..., None]
    fg = np.asarray(PALETTE[COLORS[color]], np.float32) * ((1 - texture_contrast) + texture_contrast * tex)
    bg_level = 110 + background_jitter * (rng.uniform(60, 160) - 110)
    bg = bg_level + background_jitter * rng.uniform(-12, 12, size=3) + rng.normal(0, 10, size=(size, size, 1))
    img = bg * (1 - alpha) + fg * alpha
    return np.clip(img, 0, 255).astype(np.uint8)


def _generate_split(spec: EmbeddedSpec, n: int, split: str, style: str) -> dict[str, np.ndarray]:
    size = spec.size
    digest = int(hashlib.sha256(f"{spec.seed}/{split}/{style}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(digest)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    colors = rng.integers(0, len(COLORS), n)
    textures = rng.integers(0, len(TEXTURES), n)
    scales = rng.uniform(0.22, 0.4, n)
    cxs = rng.uniform(scales + 0.03, 1 - scales - 0.03)
    cys = rng.uniform(scales + 0.03, 1 - scales - 0.03)
    if spec.class_color:  # drawn after the default attributes, so the default dataset stays bit-identical
        own = np.random.default_rng([digest, 1]).random(n) < spec.class_color
        colors = np.where(own, labels % len(COLORS), colors)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        images[i] = render(
            int(labels[i]),
            int(colors[i]),
            int(textures[i]),
            cxs[i],
            cys[i],
            scales[i],
            style,
            size,
            rng,
            spec.texture_contrast,
            spec.background_jitter,
        )
    return {
        "images": images,
        "label": labels.astype(np.int64),
        "color": colors.astype(np.int64),
        "texture": textures.astype(np.int64),
        "cx": cxs.astype(np.float32),
        "cy": cys.astype(np.float32),
        "scale": scales.astype(np.float32),
        "style": np.full(n, STYLES.index(style), np.int64),
    }


def generate(spec: EmbeddedSpec) -> dict[str, dict[str, np.ndarray]]:
    """Generate the three splits (``train``, ``test``, ``shift`` = test in the held-out style)."""
    if spec.version == 2:
        from cssl_bench.data import embedded_v2

        return embedded_v2.generate(spec.size, spec.n_train, spec.n_test, spec.seed)
    return {
        "train": _generate_split(spec, spec.n_train, "train", "filled"),
        "test": _generate_split(spec, spec.n_test, "test", "filled"),
        "shift": _generate_split(spec, spec.n_test, "shift", "outline"),
    }


def load(spec: EmbeddedSpec = EmbeddedSpec()) -> dict[str, dict[str, np.ndarray]]:
    """Load the embedded dataset from the cache, generating (and atomically caching) it the first time."""
    path = cache_dir() / f"{spec.key()}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                out: dict[str, dict[str, np.ndarray]] = {}
                for k in z.files:
                    split, field = k.split("/", 1)
                    out.setdefault(split, {})[field] = z[k]
                return out
        except Exception:
            pass  # a damaged cache file is regenerated below
    data = generate(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **{f"{s}/{k}": v for s, d in data.items() for k, v in d.items()})
    os.replace(tmp, path)
    return data


def export_imagefolder(spec: EmbeddedSpec, out: Path, task: str = "label") -> int:
    """Write the dataset as ``out/{train,test}/{class}/{index}.png``; returns the number of images written."""
    data = load(spec)
    names = spec.classes(task)
    count = 0
    for split in ("train", "test"):
        d = data[split]
        for name in names:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, y) in enumerate(zip(d["images"], d[task])):
            Image.fromarray(img).save(out / split / names[int(y)] / f"{i:06d}.png")
            count += 1
    return count
