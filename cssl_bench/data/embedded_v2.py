"""The embedded dataset, generator version 2: procedural objects with natural-category statistics.

Version 1 (``cssl_bench.data.embedded``) makes the class the shape alone and draws colour, texture and
background independently of it, on a per-image background level and tint that survive crops and colour
jitter, with i.i.d. pixel noise. The cheapest cue for telling two images apart then carries no class
information, and instance-discrimination methods learn it instead of the object. Version 2 follows
what makes ImageNet work for self-supervised learning:

- **category = shape family + correlated appearance.** Each of the 10 classes is one of the 10 base
  shapes of v1 (canonical upright orientation, so the rotation probe stays meaningful), deformed per
  instance (aspect, shear, vertex jitter, tilt within +-0.2 rad). Each class has 4 sub-categories
  ("species"); a sub-category fixes a distribution over the object's hue (a hue bin near the class's own,
  overlapping the neighbouring classes'), its saturation, its surface texture (one of the class's two
  preferred kinds) and the colour of the class's part (a spot, band, cap or base in object coordinates).
  Appearance therefore correlates with the class without identifying it.
- **context.** The background is one of 5 settings (sky, grass, sand, indoor, dusk) with low-frequency
  variation and 2-5 clutter strokes; each class has a preferred setting (probability 0.35, against 0.2 by chance), as birds go with
  sky, so context carries class information as it does in photographs.
- **no class-free fingerprint.** No per-image background tint; the background's level varies less than
  the brightness jitter of every recipe (+-12% against +-40%); no full-resolution i.i.d. pixel noise;
  the object is large (half-extent 0.34-0.46 of the side, a third of the image on average), so a crop of 20% or more of the image holds
  object pixels in most draws. Lighting is a smooth gradient over the whole image.
- **instance variation**: position, scale, deformation, tilt, lighting direction and strength, texture
  phase and frequency, clutter.

Derived tasks (the tables' stand-ins): ``label`` (10 classes; ImageNet-100), ``fine`` (the 40
sub-categories; the fine-grained sets), ``color`` (the object's hue bin, 12), the ``shift`` split in the
held-out ``outline`` style (ObjectNet-13), rotation (the canonical orientation), corruptions (applied to
these images). Detection scenes (``embedded_det``) place the same 10 base shapes.

Every image keeps its attributes (``ATTRIBUTES``) so learned features can be probed for each nuisance
(position, scale, tilt, lighting, background level and setting) as well as for the class.
Deterministic from the spec's seed; the world (class and sub-category definitions) is fixed.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cssl_bench.data.shapes import CLASSES, SHAPES, coverage

N_SUB = 4
N_HUES = 12
HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta", "pink")
TEXTURE_KINDS = ("flat", "stripes", "checker", "dots", "waves", "blotches")
PART_KINDS = ("spot", "band", "cap", "base")
# background settings: (name, RGB base colour)
CONTEXTS = (
    ("sky", (150, 180, 215)),
    ("grass", (95, 140, 75)),
    ("sand", (200, 180, 135)),
    ("indoor", (125, 120, 118)),
    ("dusk", (70, 62, 88)),
)
STYLES = ("filled", "outline")
FINE_CLASSES = tuple(f"{c}-{s}" for c in CLASSES for s in range(N_SUB))
ATTRIBUTES = (
    "label",
    "fine",
    "color",
    "texture",
    "context",
    "cx",
    "cy",
    "scale",
    "tilt",
    "light_angle",
    "light_gain",
    "bg_level",
    "style",
)
CONTEXT_P = 0.35  # probability that an image shows its class's preferred setting


@dataclass(frozen=True)
class SubCategory:
    hue_bin: int
    saturation: float
    texture: int
    texture_freq: float
    part_hue_bin: int


@dataclass(frozen=True)
class ClassDef:
    shape: str
    part: str
    part_at: tuple[float, float]  # the part's centre in object coordinates ([-1, 1], y down)
    context: int
    subs: tuple[SubCategory, ...]


def _world() -> tuple[ClassDef, ...]:
    """The fixed class definitions (independent of the dataset seed)."""
    rng = np.random.default_rng(20261207)
    defs = []
    for k, shape in enumerate(CLASSES):
        centre = int(round(k * N_HUES / len(CLASSES)))
        preferred = rng.choice(len(TEXTURE_KINDS), size=2, replace=False)
        subs = []
        for s, off in enumerate((-3, -1, 1, 3)):  # four hue bins around the class's own: neighbours overlap
            subs.append(
                SubCategory(
                    hue_bin=(centre + off) % N_HUES,
                    saturation=(0.5, 0.85)[s % 2],
                    texture=int(preferred[s // 2]),
                    texture_freq=(2.5, 4.0)[s % 2],
                    part_hue_bin=(centre + 6 + 2 * s) % N_HUES,
                )
            )
        part_at = (float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.2, 0.2)))
        defs.append(ClassDef(shape, PART_KINDS[k % len(PART_KINDS)], part_at, k % len(CONTEXTS), tuple(subs)))
    return tuple(defs)


WORLD = _world()


def _hsv(hue: float, sat: float, val: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(hue % 1.0, sat, val), np.float32) * 255.0


def _texture(
    kind: str, u: np.ndarray, v: np.ndarray, freq: float, angle: float, phase: float, rng: np.random.Generator
) -> np.ndarray:
    """A texture in [0, 1] evaluated at object coordinates ``u, v`` (so it moves with the object)."""
    a = np.cos(angle) * u + np.sin(angle) * v
    b = -np.sin(angle) * u + np.cos(angle) * v
    f = freq / 2.0  # cycles per object half-extent
    if kind == "flat":
        return np.full_like(u, 0.5)
    if kind == "stripes":
        return 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * f * a + phase))
    if kind == "checker":
        return 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * f * a + phase) * np.sin(2 * np.pi * f * b))
    if kind == "dots":
        ca = (f * a + phase / 6.283) % 1.0 - 0.5
        cb = (f * b) % 1.0 - 0.5
        return 1.0 / (1.0 + np.exp(np.clip((ca**2 + cb**2 - 0.08) * 60, -50, 50)))
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(2 * np.pi * f * a + 1.5 * np.sin(2 * np.pi * f * b) + phase)
    # blotches: smooth random field in object coordinates
    grid = rng.random((5, 5)).astype(np.float32)
    gi = np.clip((u + 1.2) / 2.4 * 4, 0, 3.999)
    gj = np.clip((v + 1.2) / 2.4 * 4, 0, 3.999)
    i0, j0 = gi.astype(int), gj.astype(int)
    ti, tj = gi - i0, gj - j0
    return (
        (1 - ti) * (1 - tj) * grid[j0, i0]
        + ti * (1 - tj) * grid[j0, i0 + 1]
        + (1 - ti) * tj * grid[j0 + 1, i0]
        + ti * tj * grid[j0 + 1, i0 + 1]
    )


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """A [size, size] low-frequency field in [-1, 1] (bilinear upsampling of a cells x cells grid)."""
    grid = Image.fromarray(rng.uniform(0, 255, (cells, cells)).astype(np.uint8), "L")
    return np.asarray(grid.resize((size, size), Image.BILINEAR), np.float32) / 127.5 - 1.0


def _part_alpha(kind: str, at: tuple[float, float], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft [0, 1] coverage of a class's part, in object coordinates (the object mask is applied later)."""
    x0, y0 = at
    if kind == "spot":
        d = np.sqrt((u - x0) ** 2 + (v - y0) ** 2) - 0.28
    elif kind == "band":
        d = np.abs(v - y0) - 0.16
    elif kind == "cap":
        d = v - (y0 - 0.35)
    else:  # base
        d = (y0 + 0.35) - v
    return 1.0 / (1.0 + np.exp(np.clip(d * 25, -50, 50)))


def render(label: int, sub: int, inst: dict, style: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One [size, size, 3] uint8 image of class ``label``, sub-category ``sub``, with instance parameters
    ``inst`` (cx, cy, scale, tilt, sx, sy, shear, hue, sat, val, context, bg_level, light_angle,
    light_gain); ``rng`` draws the remaining details (vertex jitter, texture phase, clutter, background field)."""
    cdef = WORLD[label]
    sc = cdef.subs[sub]
    ss = 4
    big = size * ss
    cx, cy, scale, tilt = inst["cx"], inst["cy"], inst["scale"], inst["tilt"]
    sx, sy, shear = inst["sx"], inst["sy"], inst["shear"]
    c, s = np.cos(tilt), np.sin(tilt)
    # object coordinates -> image: deform (aspect, shear), rotate by the tilt, scale, translate
    m = np.array([[c, -s], [s, c]]) @ np.array([[sx, shear], [0.0, sy]]) * scale

    # background: the setting's colour, a low-frequency field, clutter strokes
    ctx_rgb = np.asarray(CONTEXTS[inst["context"]][1], np.float32)
    field = _smooth_field(rng, size)[..., None]
    bg = ctx_rgb * inst["bg_level"] * (1.0 + 0.18 * field)
    clutter = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(2, 6))):
        col = tuple(int(x) for x in _hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))) + (
            int(rng.uniform(90, 170)),
        )
        x0, y0 = rng.uniform(0, big, 2)
        if rng.random() < 0.5:
            x1, y1 = rng.uniform(0, big, 2)
            draw.line([(x0, y0), (x1, y1)], fill=col, width=int(rng.integers(ss, 3 * ss)))
        else:
            r = rng.uniform(1.5, 4) * ss
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=col)
    cl = np.asarray(clutter.resize((size, size), Image.BOX), np.float32)
    ca = cl[..., 3:4] / 255.0
    bg = bg * (1 - ca) + cl[..., :3] * ca

    # object mask (4x supersampled; vertices jittered per instance) and object coordinates of every pixel centre
    base = np.asarray(SHAPES[cdef.shape], np.float64)
    base = base + rng.uniform(-0.05, 0.05, base.shape)
    alpha = coverage([tuple(p) for p in (base @ m.T + np.array([cx, cy])) * big], style, size, ss)
    yy, xx = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size, indexing="ij")
    inv = np.linalg.inv(m)
    u = inv[0, 0] * (xx - cx) + inv[0, 1] * (yy - cy)
    v = inv[1, 0] * (xx - cx) + inv[1, 1] * (yy - cy)

    colour = _hsv(inst["hue"], inst["sat"], inst["val"])
    if style == "filled":
        tex = _texture(
            TEXTURE_KINDS[sc.texture],
            u,
            v,
            sc.texture_freq * inst["freq_scale"],
            rng.uniform(0, np.pi),
            rng.uniform(0, 2 * np.pi),
            rng,
        )[..., None]
        fg = colour * (0.6 + 0.4 * tex)
        part_rgb = _hsv(sc.part_hue_bin / N_HUES + rng.normal(0, 0.02), 0.7, inst["val"])
        pa = _part_alpha(cdef.part, cdef.part_at, u, v)[..., None]
        fg = fg * (1 - pa) + part_rgb * pa
        # a soft shading from the object's centre outwards (volume)
        fg = fg * (1.0 - 0.15 * np.clip(u**2 + v**2, 0, 1))[..., None]
    else:
        fg = np.broadcast_to(colour, (size, size, 3))
    img = bg * (1 - alpha) + fg * alpha
    # lighting: a smooth gradient over the whole image
    la = inst["light_angle"]
    light = 1.0 + inst["light_gain"] * ((np.cos(la) * (xx - 0.5) + np.sin(la) * (yy - 0.5)) * 2)
    img = img * light[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def draw_instances(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The per-image attributes of ``labels`` (one row each): sub-category, pose, appearance, setting, lighting."""
    n = len(labels)
    sub = rng.integers(0, N_SUB, n)
    scale = rng.uniform(0.34, 0.46, n)
    cx = rng.uniform(scale * 0.85, 1 - scale * 0.85)
    cy = rng.uniform(scale * 0.85, 1 - scale * 0.85)
    hue_bin = np.array([WORLD[k].subs[s].hue_bin for k, s in zip(labels, sub)])
    sat0 = np.array([WORLD[k].subs[s].saturation for k, s in zip(labels, sub)])
    own = rng.random(n) < CONTEXT_P
    context = np.where(own, np.array([WORLD[k].context for k in labels]), rng.integers(0, len(CONTEXTS), n))
    return {
        "sub": sub,
        "cx": cx,
        "cy": cy,
        "scale": scale,
        "tilt": rng.uniform(-0.2, 0.2, n),
        "sx": rng.uniform(0.85, 1.15, n),
        "sy": rng.uniform(0.85, 1.15, n),
        "shear": rng.uniform(-0.15, 0.15, n),
        "hue_bin": hue_bin,
        "hue": (hue_bin + rng.uniform(-0.45, 0.45, n)) / N_HUES,
        "sat": np.clip(sat0 + rng.uniform(-0.12, 0.12, n), 0.2, 1.0),
        "val": rng.uniform(0.6, 0.95, n),
        "freq_scale": rng.uniform(0.8, 1.25, n),
        "context": context,
        "bg_level": rng.uniform(0.88, 1.12, n),
        "light_angle": rng.uniform(0, 2 * np.pi, n),
        "light_gain": rng.uniform(0.0, 0.3, n),
    }


def generate_split(size: int, n: int, seed: int, split: str, style: str) -> dict[str, np.ndarray]:
    """``n`` images of one split with their attributes; labels balanced (``i % 10``, shuffled)."""
    digest = int(hashlib.sha256(f"v2/{seed}/{split}/{style}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(digest)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    a = draw_instances(rng, labels)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        inst = {k: (float(v[i]) if v.dtype.kind == "f" else int(v[i])) for k, v in a.items()}
        images[i] = render(int(labels[i]), inst["sub"], inst, style, size, rng)
    sub = a["sub"].astype(np.int64)
    return {
        "images": images,
        "label": labels.astype(np.int64),
        "fine": (labels * N_SUB + sub).astype(np.int64),
        "color": a["hue_bin"].astype(np.int64),
        "texture": np.array([WORLD[k].subs[s].texture for k, s in zip(labels, sub)], np.int64),
        "context": a["context"].astype(np.int64),
        "cx": a["cx"].astype(np.float32),
        "cy": a["cy"].astype(np.float32),
        "scale": a["scale"].astype(np.float32),
        "tilt": a["tilt"].astype(np.float32),
        "light_angle": a["light_angle"].astype(np.float32),
        "light_gain": a["light_gain"].astype(np.float32),
        "bg_level": a["bg_level"].astype(np.float32),
        "style": np.full(n, STYLES.index(style), np.int64),
    }


def generate(size: int, n_train: int, n_test: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The three splits: ``train``, ``test`` (filled style) and ``shift`` (the test classes, outline style)."""
    return {
        "train": generate_split(size, n_train, seed, "train", "filled"),
        "test": generate_split(size, n_test, seed, "test", "filled"),
        "shift": generate_split(size, n_test, seed, "shift", "outline"),
    }
