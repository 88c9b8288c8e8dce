"""The 10 base shapes of the embedded datasets and their anti-aliased rendering, shared by every generator
(``embedded`` v1, ``embedded_v2``, the detection scenes of ``embedded_det``).

``SHAPES``: name -> polygon in a [-1, 1] box, image coordinates (y points down), each upright and not
90-degree symmetric, so a 4-way rotation is predictable from content; ``CLASSES``: the names in class order.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, n: int = 12) -> list[tuple[float, float]]:
    return [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(a0, a1, n)]


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [(float(a) / 17.0, float(-b) / 17.0 + 0.1) for a, b in zip(x, y)]


# Polygons in a [-1, 1] box, image coordinates (y points down); all upright and not 90-degree symmetric.
SHAPES: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0, -0.95), (0.9, 0.8), (-0.9, 0.8)],
    "arrow": [(0, -1), (0.8, -0.1), (0.28, -0.1), (0.28, 1), (-0.28, 1), (-0.28, -0.1), (-0.8, -0.1)],
    "tee": [
        (-0.9, -0.9),
        (0.9, -0.9),
        (0.9, -0.45),
        (0.25, -0.45),
        (0.25, 0.95),
        (-0.25, 0.95),
        (-0.25, -0.45),
        (-0.9, -0.45),
    ],
    "ell": [(-0.7, -0.95), (-0.2, -0.95), (-0.2, 0.45), (0.8, 0.45), (0.8, 0.95), (-0.7, 0.95)],
    "house": [(0, -0.95), (0.95, -0.15), (0.7, -0.15), (0.7, 0.95), (-0.7, 0.95), (-0.7, -0.15), (-0.95, -0.15)],
    "mushroom": _arc(0, 0.05, 0.95, np.pi, 2 * np.pi) + [(0.25, 0.05), (0.25, 0.95), (-0.25, 0.95), (-0.25, 0.05)],
    "eff": [
        (-0.6, -0.95),
        (0.8, -0.95),
        (0.8, -0.55),
        (-0.15, -0.55),
        (-0.15, -0.15),
        (0.5, -0.15),
        (0.5, 0.25),
        (-0.15, 0.25),
        (-0.15, 0.95),
        (-0.6, 0.95),
    ],
    "trapezoid": [(-0.3, -0.9), (0.3, -0.9), (0.95, 0.9), (-0.95, 0.9)],
    "heart": _heart(),
    "cup": [(-0.9, -0.9), (-0.5, -0.9), (-0.5, 0.45), (0.5, 0.45), (0.5, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)],
}
CLASSES = tuple(SHAPES)


def coverage(pts: list[tuple[float, float]], style: str, size: int, ss: int = 4) -> np.ndarray:
    """Anti-aliased coverage [size, size, 1] in [0, 1] of the polygon ``pts`` (vertices in the pixel coordinates
    of the ``ss``-times supersampled image): filled, or its outline (``style`` "outline", 9% of the side wide)."""
    big = size * ss
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if style == "filled":
        draw.polygon(pts, fill=255)
    else:
        draw.line(pts + [pts[0]], fill=255, width=max(2, int(0.09 * big)), joint="curve")
    return np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32)[..., None] / 255.0
