"""Numba kernel that decodes a batch of ``.beton`` images with libffcv's libjpeg-turbo ``imdecode``.

The library is loaded by path (found without importing the ffcv package) and its ``imdecode``
symbol bound as an external function, so the kernel holds no process-specific pointers and can be
cached on disk (``cache=True``, ``NUMBA_CACHE_DIR``): the JIT cost is paid once per machine.
``nogil=True`` lets several loader threads decode at once.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import llvmlite.binding as llvm
from numba import njit, types


def _libffcv_path() -> str:
    spec = importlib.util.find_spec("ffcv")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ffcv is not installed")
    found = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_libffcv*.so"))
    if not found:
        raise ImportError("ffcv is installed without its compiled _libffcv extension")
    return found[0]


llvm.load_library_permanently(_libffcv_path())

# int imdecode(src, src_size, src_h, src_w, dst, crop_h, crop_w, off_x, off_y, scale_num, scale_denom, enable_crop, hflip)
_imdecode = types.ExternalFunction(
    "imdecode",
    types.int32(
        types.voidptr,
        types.uint64,
        types.uint32,
        types.uint32,
        types.voidptr,
        types.uint32,
        types.uint32,
        types.uint32,
        types.uint32,
        types.uint32,
        types.uint32,
        types.boolean,
        types.boolean,
    ),
)

JPG = 0  # FFCV's image modes: 0 = JPEG, 1 = raw HWC pixels


@njit(nogil=True, cache=True)
def decode_batch(data, ptrs, sizes, heights, widths, modes, out):
    """Decode items into the rows of ``out`` (uint8 [B, >= H*W*3]) as contiguous HWC pixels.

    ``data``: the whole file (uint8 memmap); ``ptrs``/``sizes``: each item's bytes; returns 0, or
    1 + the position of the first item that failed to decode."""
    for j in range(len(ptrs)):
        p, s, h, w = ptrs[j], sizes[j], heights[j], widths[j]
        if modes[j] == JPG:
            rc = _imdecode(data[p : p + s].ctypes.data, s, h, w, out[j].ctypes.data, h, w, 0, 0, 1, 1, False, False)
            if rc != 0:
                return j + 1
        else:
            n = h * w * 3
            if n > s:
                return j + 1
            out[j, :n] = data[p : p + n]
    return 0
