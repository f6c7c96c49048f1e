"""Keep freed memory for reuse in the processes that parse and predict (glibc only).

glibc serves every allocation over 128 KB (or over its adaptive threshold) with a fresh
mmap and returns it to the kernel when freed, so each of the parser's and the forward
pass's temporaries (a few hundred KB to a few MB, dozens per 256 KB of CSV) costs page
faults and zeroed pages again: parse_rows ran at 170-450 MB/s that way and at 800 MB/s
with the memory kept (`python bench/bench_csvparse.py`; bench_predict's stages). Raising
the mmap and trim thresholds keeps such blocks in the heap for the next piece. What a
process keeps is bounded by one chunk's temporaries, so memory stays flat with job size.
"""
import ctypes
import ctypes.util

MMAP_THRESHOLD = 64 << 20  # allocations up to this come from the heap
TRIM_THRESHOLD = 256 << 20  # freed heap memory up to this is kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_done = {"ok": None}


def keep_freed_memory():
    """Raise glibc's mmap and trim thresholds for this process (once) -> True if applied;
    False where the C library has no mallopt (musl, macOS), which changes nothing else."""
    if _done["ok"] is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            _done["ok"] = False
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _done["ok"] = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done["ok"]
