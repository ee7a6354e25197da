"""BLAS threads inside the exact search's own thread pool.

The exact search splits the queries over ``SearchConf.threads`` Python
threads; if OpenBLAS also started its own threads inside each matrix product,
the search would run more threads than asked for, slower on a loaded machine
and not comparable with Annoy's. OpenBLAS (>= 0.3.27, as bundled with NumPy)
can limit the threads of the calling thread alone, which leaves every other
caller of NumPy in the process untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools


@functools.lru_cache(maxsize=None)
def _set_local():
    try:
        with open("/proc/self/maps") as f:
            fields = [ln.split() for ln in f]
        paths = sorted({p[-1] for p in fields if p and p[-1].startswith("/") and "openblas" in p[-1].lower()})
    except OSError:
        return None
    for path in paths:
        try:
            fn = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
        except OSError:
            continue
        if fn is not None:
            fn.argtypes = [ctypes.c_int]
            fn.restype = ctypes.c_int
            return fn
    return None


@contextlib.contextmanager
def blas_threads(n: int):
    """Limits OpenBLAS to ``n`` threads for matrix products called from this
    thread (a no-op where that OpenBLAS call is not available)."""
    fn = _set_local()
    if fn is None:
        yield
        return
    previous = fn(int(n))
    try:
        yield
    finally:
        fn(previous)
