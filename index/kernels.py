"""Numba kernels of the exact search: plain arrays in, arrays updated in place."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def topk_update(sim, col0, best_s, best_i):
    """Merges one chunk of similarities into each row's running top k.

    sim (b, c) float32; best_s (b, k) float32 and best_i (b, k) int64 hold the
    k best so far (unordered, -inf / -1 when empty); column j of ``sim`` is
    database row ``col0 + j``. One pass, no temporaries: after the first chunk
    nearly every entry fails the first comparison, so this runs at memory speed
    where a partition per chunk would sort every entry."""
    b, c = sim.shape
    k = best_s.shape[1]
    for i in range(b):
        worst = 0
        for j in range(1, k):
            if best_s[i, j] < best_s[i, worst]:
                worst = j
        thr = best_s[i, worst]
        row = sim[i]
        for j in range(c):
            v = row[j]
            if v > thr:
                best_s[i, worst] = v
                best_i[i, worst] = col0 + j
                worst = 0
                for t in range(1, k):
                    if best_s[i, t] < best_s[i, worst]:
                        worst = t
                thr = best_s[i, worst]


def warm_up() -> None:
    """Compiles (or loads from cache) the kernels before timed work."""
    s = np.zeros((1, 2), np.float32)
    topk_update(s, 0, np.full((1, 1), -np.inf, np.float32), np.full((1, 1), -1, np.int64))
