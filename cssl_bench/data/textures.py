"""Procedural textures, shared by the embedded dataset (object surfaces) and LooC's texture augmentation.

Every pattern is a deterministic function of its parameters: ``pattern(kind, params, h, w)`` returns a
float32 array in [0, 1] of shape [h, w]. Parameters are plain floats so they can be recorded.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("flat", "stripes", "checker", "dots", "noise", "waves")


def sample_texture_params(rng: np.random.Generator) -> dict:
    """Draw the continuous parameters every texture kind understands (frequency, angle, phase, seed)."""
    return {
        "freq": float(rng.uniform(2.0, 5.0)),
        "angle": float(rng.uniform(0.0, np.pi)),
        "phase": float(rng.uniform(0.0, 2 * np.pi)),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def pattern(kind: str, params: dict, h: int, w: int) -> np.ndarray:
    """A [h, w] float32 texture in [0, 1]; ``freq`` is in cycles per image side."""
    if kind not in TEXTURES:
        raise ValueError(f"unknown texture {kind!r}; choose from {', '.join(TEXTURES)}")
    yy, xx = np.meshgrid(np.linspace(0, 1, h, dtype=np.float32), np.linspace(0, 1, w, dtype=np.float32), indexing="ij")
    f, a, ph = params["freq"], params["angle"], params["phase"]
    u = np.cos(a) * xx + np.sin(a) * yy
    v = -np.sin(a) * xx + np.cos(a) * yy
    if kind == "flat":
        out = np.full((h, w), 0.5, np.float32)
    elif kind == "stripes":
        out = (np.sin(2 * np.pi * f * u + ph) > 0).astype(np.float32)
    elif kind == "checker":
        out = ((np.floor(f * u + ph / 6.283) + np.floor(f * v)) % 2).astype(np.float32)
    elif kind == "dots":
        cu = (f * u + ph / 6.283) % 1.0 - 0.5
        cv = (f * v) % 1.0 - 0.5
        out = (cu**2 + cv**2 < 0.09).astype(np.float32)
    elif kind == "noise":
        rng = np.random.default_rng(params["seed"])
        out = rng.random((h, w), dtype=np.float32)
    else:  # waves
        out = 0.5 + 0.5 * np.sin(2 * np.pi * f * u + 1.5 * np.sin(2 * np.pi * f * v) + ph)
    return out.astype(np.float32)
