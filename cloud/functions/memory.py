"""glibc's malloc: freed memory kept for the next request, and the load's leftovers handed back once.

glibc's malloc told to keep freed memory for the next request, as a model server wants, instead of
returning it to the kernel and faulting it back in, zeroed, on every frame.

Measured in the local stack's detection worker on one-face 640x480 frames: 7,300 minor page faults per frame
(about 29 MB of fresh pages each request) with glibc's defaults, 0.2 with these settings; the worker's CPU per
frame fell from 92 to 75 ms, and recognition's from 70 to 63 ms. Lambda's images run glibc too. Where the C
library is not glibc (macOS, musl), nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Allocations up to this size come from the heap and are reused (MTCNN's pyramid and activations are a few MB
# each); 32 MiB is the most glibc accepts on 64-bit. Setting it also turns off glibc's adaptive threshold.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Freed heap is returned to the kernel only beyond this much at the top: well under a worker's memory size
# (2048 MB and more), and the memory was in use at the peak anyway.
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Apply both settings to this process; True when the C library took them."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def return_freed_memory() -> bool:
    """Hand the heap's free memory back to the kernel now (malloc_trim(0)), whatever the trim threshold; True
    when the C library did. For once, after loading a model: optimising an ONNX graph copies every weight (the
    file's and the re-laid-out ones), and glibc keeps the freed copies mapped, so InceptionResnetV1's session
    held 274 MB resident after loading and 149 MB after this."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return bool(trim(0)) if trim is not None else False
