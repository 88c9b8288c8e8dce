"""Numba kernels of the batched view stage (used by ``cssl_bench.data.batched`` when numba is installed).

Each reproduces the arithmetic of torchvision's uint8 kernels, so the views agree with the
torchvision path within a grey level per operation (float rounding order, fixed-point weights):

- ``resized_crop_batch``: crop + antialiased bilinear resize (``TF.resized_crop(..., antialias=True)``:
  PyTorch's separable triangle filter widened by the downscale factor, horizontal pass then
  vertical, each rounded to uint8), reading the decoded HWC bytes directly.
- ``color_jitter``: brightness / contrast / saturation / hue in each image's drawn order, then
  grayscale (``adjust_*``, ``_rgb_to_hsv``/``_hsv_to_rgb``, truncation to uint8 after each
  operation), one pass over the image per operation; with ``gray_first`` (MoCo v1) grayscale first.
- ``blur_batch``: separable Gaussian with reflect padding, rounded once (``TF.gaussian_blur``).

All are compiled with ``cache=True`` (the JIT cost is paid once per machine, ``NUMBA_CACHE_DIR``) and
``nogil=True`` (loader threads run them in parallel). Arrays are modified in place or written to ``out``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_R, _G, _B = np.float32(0.2989), np.float32(0.587), np.float32(0.114)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


# ----------------------------------------------------------------------------------------------
# crop + antialiased resize


@njit(nogil=True, cache=True)
def _aa_weights(in_size, out_size, offset):
    """PyTorch's antialiased bilinear weights from ``in_size`` pixels (starting at ``offset``) to ``out_size``:
    (first input index [out], number of taps [out], weights [out, taps])."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(np.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    count = np.zeros(out_size, np.int64)
    w = np.zeros((out_size, taps), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xsize = min(int(center + support + 0.5), in_size) - xmin
        total = 0.0
        for j in range(xsize):
            x = abs((j + xmin - center + 0.5) * invscale)
            v = 1.0 - x if x < 1.0 else 0.0
            w[i, j] = v
            total += v
        if total != 0.0:
            for j in range(xsize):
                w[i, j] /= total
        first[i] = xmin + offset
        count[i] = xsize
    return first, count, w


@njit(nogil=True, cache=True)
def _round_u8(v):
    v = np.floor(v + 0.5)
    if v < 0.0:
        return np.uint8(0)
    if v > 255.0:
        return np.uint8(255)
    return np.uint8(int(v))


@njit(nogil=True, cache=True)
def resized_crop_batch(buf, heights, widths, tops, lefts, crop_h, crop_w, out):
    """``out[j]`` (uint8 [3, S, S]) = item j's crop (top, left, crop_h, crop_w) resized to S x S.

    ``buf[j]`` holds item j as contiguous HWC bytes of size heights[j] x widths[j] x 3."""
    S = out.shape[2]
    for j in range(buf.shape[0]):
        W = widths[j]
        fx, nx, wx = _aa_weights(crop_w[j], S, lefts[j])
        fy, ny, wy = _aa_weights(crop_h[j], S, tops[j])
        tmp = np.empty((crop_h[j], S, 3), np.uint8)  # horizontal pass over the crop's rows, rounded as PyTorch does
        for y in range(crop_h[j]):
            row = (tops[j] + y) * W
            for x in range(S):
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                for t in range(nx[x]):
                    p = (row + fx[x] + t) * 3
                    wt = wx[x, t]
                    a0 += wt * buf[j, p]
                    a1 += wt * buf[j, p + 1]
                    a2 += wt * buf[j, p + 2]
                tmp[y, x, 0] = _round_u8(a0)
                tmp[y, x, 1] = _round_u8(a1)
                tmp[y, x, 2] = _round_u8(a2)
        for y in range(S):
            for x in range(S):
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                for t in range(ny[y]):
                    r = fy[y] - tops[j] + t
                    wt = wy[y, t]
                    a0 += wt * tmp[r, x, 0]
                    a1 += wt * tmp[r, x, 1]
                    a2 += wt * tmp[r, x, 2]
                out[j, 0, y, x] = _round_u8(a0)
                out[j, 1, y, x] = _round_u8(a1)
                out[j, 2, y, x] = _round_u8(a2)


# ----------------------------------------------------------------------------------------------
# colour jitter: one pass per operation (simple loops vectorise; a fused per-pixel pass was slower, docs/speed.md)


@njit(nogil=True, cache=True)
def _trunc_u8(v):
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
                img[c, y, x] = _trunc_u8(np.float32(img[c, y, x]) * f)


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
                img[c, y, x] = _trunc_u8(np.float32(img[c, y, x]) * f + rest)


@njit(nogil=True, cache=True)
def _saturation(img, f):
    _, H, W = img.shape
    for y in range(H):
        for x in range(W):
            g = np.float32(np.floor(_luma(img, y, x))) * (_ONE - f)
            for c in range(3):
                img[c, y, x] = _trunc_u8(np.float32(img[c, y, x]) * f + g)


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
def color_jitter(x, apply, order, bf, cf, sf, hf, gray, gray_first):
    """``ColorJitter.apply`` for every image of ``x`` in place: factors in each image's order, then grayscale
    (grayscale before the factors when ``gray_first``, as ``ColorJitter.gray_first``)."""
    for i in range(x.shape[0]):
        img = x[i]
        if gray[i] and gray_first:
            _grayscale(img)
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
        if gray[i] and not gray_first:
            _grayscale(img)


# ----------------------------------------------------------------------------------------------
# Gaussian blur


@njit(nogil=True, cache=True)
def _reflect(i, n):
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


@njit(nogil=True, cache=True)
def blur_batch(x, items, kernels):
    """Blur images ``items`` of ``x`` (uint8 [B, 3, H, W]) in place; ``kernels[k]`` is item k's 1-D Gaussian."""
    H, W = x.shape[2], x.shape[3]
    k = kernels.shape[1]
    r = k // 2
    pad = np.empty((H + 2 * r, W + 2 * r), np.float32)
    tmp = np.empty((H, W + 2 * r), np.float32)
    for n in range(len(items)):
        i = items[n]
        kern = kernels[n]
        for c in range(3):
            img = x[i, c]
            for y in range(H + 2 * r):  # reflect padding, as torch's F.pad(mode="reflect")
                sy = _reflect(y - r, H)
                for xx in range(W + 2 * r):
                    pad[y, xx] = np.float32(img[sy, _reflect(xx - r, W)])
            tmp[:, :] = 0
            for t in range(k):  # vertical pass, float
                wt = kern[t]
                for y in range(H):
                    for xx in range(W + 2 * r):
                        tmp[y, xx] += wt * pad[y + t, xx]
            for y in range(H):  # horizontal pass, then round once
                for xx in range(W):
                    a = np.float32(0.0)
                    for t in range(k):
                        a += kern[t] * tmp[y, xx + t]
                    img[y, xx] = _round_u8(a)


@njit(nogil=True, cache=True)
def lowpass_batch(x, items, kern, out):
    """``out[n]`` (float32 [3, H, W]) = Gaussian low-pass of ``x[items[n]]`` (uint8), separable, reflect padding,
    not rounded (the texture transfer's ``gaussian_blur(img.float(), ...)``)."""
    H, W = x.shape[2], x.shape[3]
    k = kern.shape[0]
    r = k // 2
    pad = np.empty((H + 2 * r, W + 2 * r), np.float32)
    tmp = np.empty((H, W + 2 * r), np.float32)
    for n in range(len(items)):
        for c in range(3):
            img = x[items[n], c]
            for y in range(H + 2 * r):
                sy = _reflect(y - r, H)
                for xx in range(W + 2 * r):
                    pad[y, xx] = np.float32(img[sy, _reflect(xx - r, W)])
            tmp[:, :] = 0
            for t in range(k):
                wt = kern[t]
                for y in range(H):
                    for xx in range(W + 2 * r):
                        tmp[y, xx] += wt * pad[y + t, xx]
            for y in range(H):
                for xx in range(W):
                    a = np.float32(0.0)
                    for t in range(k):
                        a += kern[t] * tmp[y, xx + t]
                    out[n, c, y, xx] = a
