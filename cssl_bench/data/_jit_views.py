"""Numba kernels for the colour jitter of a batch (used by ``cssl_bench.data.batched`` when numba is installed).

One pass per operation per image, in the image's drawn order, with the arithmetic of torchvision's
uint8 kernels (``adjust_brightness/contrast/saturation/hue``, ``rgb_to_grayscale``): float32 maths,
truncation to uint8 after every operation, HSV as in ``_rgb_to_hsv``/``_hsv_to_rgb``. Results agree
with torchvision within 1 grey level (float summation order). Compiled with ``cache=True`` so the JIT
cost is paid once per machine (``NUMBA_CACHE_DIR``), and ``nogil=True`` so loader threads run in parallel.

Arrays: ``x`` uint8 [B, 3, H, W] (modified in place); per-item parameters are 1-D arrays of length B.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_R, _G, _B = np.float32(0.2989), np.float32(0.587), np.float32(0.114)
_ONE = np.float32(1.0)


@njit(nogil=True, cache=True)
def _to_u8(v):
    if v < 0:
        v = np.float32(0)
    elif v > 255:
        v = np.float32(255)
    return np.uint8(int(v))


@njit(nogil=True, cache=True)
def _brightness(img, f):
    _, H, W = img.shape
    for c in range(3):
        for y in range(H):
            for x in range(W):
                img[c, y, x] = _to_u8(np.float32(img[c, y, x]) * f)


@njit(nogil=True, cache=True)
def _luma(img, y, x):
    return np.float32(img[0, y, x]) * _R + np.float32(img[1, y, x]) * _G + np.float32(img[2, y, x]) * _B


@njit(nogil=True, cache=True)
def _contrast(img, f):
    _, H, W = img.shape
    total = 0.0
    for y in range(H):
        for x in range(W):
            total += np.floor(_luma(img, y, x))
    mean = np.float32(total / (H * W))
    rest = mean * (_ONE - f)
    for c in range(3):
        for y in range(H):
            for x in range(W):
                img[c, y, x] = _to_u8(np.float32(img[c, y, x]) * f + rest)


@njit(nogil=True, cache=True)
def _saturation(img, f):
    _, H, W = img.shape
    for y in range(H):
        for x in range(W):
            g = np.float32(np.floor(_luma(img, y, x))) * (_ONE - f)
            for c in range(3):
                img[c, y, x] = _to_u8(np.float32(img[c, y, x]) * f + g)


@njit(nogil=True, cache=True)
def _hue(img, shift):
    _, H, W = img.shape
    inv = np.float32(1.0 / 255.0)
    scale = np.float32(255.0 + 1.0 - 1e-3)
    sixth = np.float32(1.0 / 6.0)
    for y in range(H):
        for x in range(W):
            r = np.float32(img[0, y, x]) * inv
            g = np.float32(img[1, y, x]) * inv
            b = np.float32(img[2, y, x]) * inv
            maxc = max(r, max(g, b))
            minc = min(r, min(g, b))
            rng = maxc - minc
            if maxc == minc:
                s = np.float32(0.0)
                h = np.float32(0.0)
            else:
                s = rng / maxc
                rc = (maxc - r) / rng
                gc = (maxc - g) / rng
                bc = (maxc - b) / rng
                if maxc == r:
                    h = bc - gc
                elif maxc == g:
                    h = np.float32(2.0) + rc - bc
                else:
                    h = np.float32(4.0) + gc - rc
            h = (h * sixth + _ONE) % _ONE
            h = (h + shift) % _ONE
            v = maxc
            h6 = h * np.float32(6.0)
            i = np.floor(h6)
            fr = h6 - i
            k = int(i) % 6
            q = min(max((_ONE - s * fr) * v, np.float32(0.0)), _ONE)
            t = min(max((s * fr + (_ONE - s)) * v, np.float32(0.0)), _ONE)
            p = min(max((_ONE - s) * v, np.float32(0.0)), _ONE)
            if k == 0:
                r, g, b = v, t, p
            elif k == 1:
                r, g, b = q, v, p
            elif k == 2:
                r, g, b = p, v, t
            elif k == 3:
                r, g, b = p, q, v
            elif k == 4:
                r, g, b = t, p, v
            else:
                r, g, b = v, p, q
            img[0, y, x] = np.uint8(int(r * scale))
            img[1, y, x] = np.uint8(int(g * scale))
            img[2, y, x] = np.uint8(int(b * scale))


@njit(nogil=True, cache=True)
def _grayscale(img):
    _, H, W = img.shape
    for y in range(H):
        for x in range(W):
            v = np.uint8(int(_luma(img, y, x)))
            img[0, y, x] = v
            img[1, y, x] = v
            img[2, y, x] = v


@njit(nogil=True, cache=True)
def color_jitter(x, apply, order, bf, cf, sf, hf, gray):
    """``ColorJitter.apply`` for every image of ``x`` in place: factors in each image's order, then grayscale."""
    for i in range(x.shape[0]):
        img = x[i]
        if apply[i]:
            for t in range(4):
                o = order[i, t]
                if o == 0:
                    _brightness(img, bf[i])
                elif o == 1:
                    _contrast(img, cf[i])
                elif o == 2:
                    _saturation(img, sf[i])
                elif hf[i] != 0:
                    _hue(img, hf[i])
        if gray[i]:
            _grayscale(img)
