"""The compact index: an inverted file of product-quantised residuals.

The design of the DELF paper's index (section 4.3), with Annoy at its heart:

- a **coarse quantiser**: ``nlist`` centroids (k-means on the database's
  descriptors); Annoy searches them, so a query descriptor visits only the
  inverted lists of its nearest cells;
- **product-quantised residuals**: each descriptor is stored as its cell and
  ``pq_m`` one-byte codes, one per group of dimensions, of its residual to the
  cell's centroid (256 centroids per group, k-means again);
- a **Numba scan** of the visited lists computes each code's distance to the
  query with one table look-up per group (asymmetric distance: the exact
  distance between the query and the code's reconstruction).

Everything here is deterministic: k-means starts from a seeded sample, every
matrix product runs on one BLAS thread in blocks of fixed size (so the number of
threads only changes which thread computes a block, never the result), sums are
sequential, ties go to the lower index, and the coarse Annoy is built on one
thread with a fixed seed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from .blas import blas_threads

CODEBOOK_VERSION = 1
KSUB = 256  # centroids per product-quantiser group: one byte per code
_BLOCK = 4096  # rows per matrix-product block (fixed: results must not depend on threads)

ROTATION_FILE = "rotation.npy"
PQ_FILE = "pq.npy"
BOUNDS_FILE = "pq_bounds.npy"
COARSE_ANN = "coarse.ann"  # the coarse centroids live only here (Annoy keeps the exact float32 vectors)
CODEBOOK_FILES = (ROTATION_FILE, PQ_FILE, BOUNDS_FILE, COARSE_ANN)
MAX_SEGMENT_ROWS = 1 << 24  # rows are stored in 3 bytes


def auto_nlist(n: int) -> int:
    """Cells for ``n`` training descriptors: the power of two nearest 4 sqrt(n)
    (FAISS's rule of thumb), at least 16, and at most n / 32 so that k-means
    has points to place every centroid."""
    if n < 64:
        return 1
    want = 4.0 * math.sqrt(n)
    k = 2 ** int(round(math.log2(want)))
    return int(max(1, min(max(16, k), n // 32, 65536)))


def group_bounds(dim: int, m: int) -> np.ndarray:
    """Dimension boundaries of ``m`` groups as even as possible (the first ones one wider)."""
    if not 1 <= m <= dim:
        raise ValueError(f"pq_m must be between 1 and the descriptor dimension {dim}, got {m}")
    sizes = np.full(m, dim // m, np.int64)
    sizes[: dim % m] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)


# ---------------------------------------------------------------- k-means


def _nearest_block(x: np.ndarray, c: np.ndarray, c_sq: np.ndarray):
    with blas_threads(1):
        s = x @ c.T
    s *= -2.0
    s += c_sq[None, :]
    idx = np.argmin(s, axis=1)
    d = s[np.arange(len(x)), idx] + np.einsum("ij,ij->i", x, x)
    return idx.astype(np.int32), np.maximum(d, 0.0).astype(np.float32)


def nearest(x: np.ndarray, c: np.ndarray, threads: int = 1):
    """Index (int32) and squared distance (float32) of each row's nearest centroid;
    ties go to the lower index. The same result for any number of threads."""
    x = np.ascontiguousarray(x, np.float32)
    c = np.ascontiguousarray(c, np.float32)
    c_sq = np.einsum("ij,ij->i", c, c).astype(np.float32)
    idx = np.empty(len(x), np.int32)
    dist = np.empty(len(x), np.float32)
    starts = range(0, len(x), _BLOCK)

    def run(a):
        idx[a:a + _BLOCK], dist[a:a + _BLOCK] = _nearest_block(x[a:a + _BLOCK], c, c_sq)

    if threads > 1 and len(x) > _BLOCK:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))
    else:
        for a in starts:
            run(a)
    return idx, dist


def kmeans(x: np.ndarray, k: int, iters: int, seed: int, threads: int = 1) -> np.ndarray:
    """Lloyd's k-means from ``k`` distinct seeded sample rows. An emptied cluster
    is re-seeded with the point farthest from its centroid (deterministic)."""
    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    k = int(min(k, n))
    rng = np.random.default_rng(seed)
    c = x[np.sort(rng.choice(n, k, replace=False))].astype(np.float32)
    for _ in range(int(iters)):
        assign, dist = nearest(x, c, threads)
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, weights=x[:, j], minlength=k) for j in range(x.shape[1])], 1)
        nonempty = counts > 0
        c[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        empty = np.flatnonzero(~nonempty)
        if len(empty):
            far = np.argsort(-dist, kind="stable")[: len(empty)]
            c[empty] = x[far]
    return c


# ---------------------------------------------------------------- codebook


def random_rotation(dim: int, seed: int) -> np.ndarray:
    """A seeded random orthogonal matrix (D, D). Rotating first spreads the
    variance of the PCA-ordered descriptors evenly over the quantiser's groups
    (on 202k non-Oxford descriptors, 16 codes: top-100 agreement with exact
    search 0.948 without, 0.955 with)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


@dataclass
class Codebook:
    """A rotation (D, D), coarse centroids (nlist, D) and product-quantiser
    centroids (m, 256, max group width; zero-padded) with the group boundaries
    (m + 1,); centroids live in the rotated space, the methods take and return
    unrotated descriptors."""

    rotation: np.ndarray
    coarse: np.ndarray
    pq: np.ndarray
    bounds: np.ndarray
    ann: object = None  # AnnoyIndex over ``coarse`` (euclidean); set by open/build
    _cell_tables: np.ndarray | None = None

    @property
    def nlist(self) -> int:
        return int(len(self.coarse))

    @property
    def m(self) -> int:
        return int(len(self.bounds) - 1)

    @property
    def dim(self) -> int:
        return int(self.coarse.shape[1])

    def rotate(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.dim), np.float32)
        with blas_threads(1):
            for a in range(0, len(x), 1 << 16):
                out[a:a + (1 << 16)] = np.asarray(x[a:a + (1 << 16)], np.float32) @ self.rotation
        return out

    def encode(self, x: np.ndarray, threads: int = 1):
        """(cells int32 (N,), codes uint8 (N, m)) of unit descriptors."""
        x = self.rotate(x)
        cells, _ = nearest(x, self.coarse, threads)
        codes = np.empty((len(x), self.m), np.uint8)
        for a in range(0, len(x), 1 << 16):
            r = x[a:a + (1 << 16)] - self.coarse[cells[a:a + (1 << 16)]]
            for j in range(self.m):
                lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
                codes[a:a + len(r), j] = nearest(r[:, lo:hi], self.pq[j, :, : hi - lo], threads)[0]
        return cells, codes

    def decode(self, cells: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Reconstructions (float32 (N, D)): centroid plus decoded residual, rotated back."""
        out = self.coarse[np.asarray(cells, np.int64)].astype(np.float32)
        for j in range(self.m):
            lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
            out[:, lo:hi] += self.pq[j, np.asarray(codes[:, j], np.int64), : hi - lo]
        with blas_threads(1):
            return out @ self.rotation.T

    def cell_tables(self) -> np.ndarray:
        """(nlist, m * 256) float32: 2 <c_j, r_jt> + |r_jt|^2 for every cell c and
        code t of group j (flattened by group), so that |q - c - r|^2 = |q - c|^2 +
        T[c] - 2 <q_j, r_jt>. Computed once per opened codebook (nlist x m x 1 KB)."""
        if self._cell_tables is None:
            t = np.empty((self.nlist, self.m, KSUB), np.float32)
            for j in range(self.m):
                lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
                r = self.pq[j, :, : hi - lo]
                with blas_threads(1):
                    t[:, j, :] = 2.0 * (self.coarse[:, lo:hi] @ r.T) + np.einsum("ij,ij->i", r, r)[None, :]
            self._cell_tables = t.reshape(self.nlist, self.m * KSUB)
        return self._cell_tables


def _train_groups(y: np.ndarray, bounds: np.ndarray, iters: int, seed: int, threads: int) -> np.ndarray:
    """Product-quantiser centroids (m, 256, w) of rows ``y`` (k-means per group of dimensions)."""
    width = int(np.max(np.diff(bounds)))
    pq = np.zeros((len(bounds) - 1, KSUB, width), np.float32)
    for j in range(len(bounds) - 1):
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        c = kmeans(np.ascontiguousarray(y[:, lo:hi]), KSUB, iters, seed + 1 + j, threads)
        pq[j, : len(c), : hi - lo] = c
        if len(c) < KSUB:  # fewer training points than codes: the rest repeat the first
            pq[j, len(c):, : hi - lo] = c[0]
    return pq


def train_codebook(x: np.ndarray, nlist: int, m: int, seed: int, iters: int = 10, train_max: int = 0,
                   threads: int = 1) -> Codebook:
    """k-means of the coarse quantiser, then of each group of the randomly
    rotated residuals, on (a seeded sample of) the unit descriptors ``x``. (An
    optimised rotation, OPQ's Procrustes rounds, measured no better than the
    random one on non-Oxford descriptors: top-100 agreement 0.949 against 0.951
    at 16 cells, and doubled the build time.)"""
    x = np.ascontiguousarray(x, np.float32)
    n, dim = x.shape
    if n == 0:
        raise ValueError("no descriptors to train the codebook on")
    nlist = int(nlist) or auto_nlist(n)
    bounds = group_bounds(dim, int(m))
    rng = np.random.default_rng(seed)
    limit = int(train_max) or max(64 * nlist, 65536)
    sample = x[np.sort(rng.choice(n, limit, replace=False))] if n > limit else x
    coarse = kmeans(sample, min(nlist, len(sample)), iters, seed, threads)
    cells, _ = nearest(sample, coarse, threads)
    resid = sample - coarse[cells]
    rotation = random_rotation(dim, seed)
    with blas_threads(1):
        resid = resid @ rotation
        coarse = coarse @ rotation
    pq = _train_groups(resid, bounds, iters + 10, seed, threads)
    return Codebook(rotation=rotation, coarse=np.ascontiguousarray(coarse, np.float32), pq=pq, bounds=bounds)


def build_coarse_annoy(coarse: np.ndarray, n_trees: int, seed: int):
    from annoy import AnnoyIndex

    ann = AnnoyIndex(coarse.shape[1], "euclidean")
    ann.set_seed(int(seed))
    for i, row in enumerate(coarse.tolist()):
        ann.add_item(i, row)
    ann.build(int(n_trees), n_jobs=1)  # one thread: the same trees every time
    return ann


def write_codebook_files(folder: str, cb: Codebook, n_trees: int, seed: int) -> None:
    """The codebook's files, each fsynced (the caller renames the folder into place)."""
    from common.files import fsync_file

    for fname, arr in ((ROTATION_FILE, cb.rotation), (PQ_FILE, cb.pq), (BOUNDS_FILE, cb.bounds)):
        p = os.path.join(folder, fname)
        with open(p, "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    ann = build_coarse_annoy(cb.coarse, n_trees, seed)
    p = os.path.join(folder, COARSE_ANN)
    if not ann.save(p):
        raise OSError(f"{p}: Annoy could not save the coarse quantiser")
    ann.unload()
    fsync_file(p)


def read_codebook(folder: str, dim: int, conf: dict, error) -> Codebook:
    """Opens a codebook folder; ``error(path, why)`` builds the exception to raise."""
    from annoy import AnnoyIndex

    arrays = {}
    for fname in (ROTATION_FILE, PQ_FILE, BOUNDS_FILE):
        p = os.path.join(folder, fname)
        try:
            arrays[fname] = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise error(p, f"corrupt codebook file ({exc})") from None
    rotation, pq, bounds = arrays[ROTATION_FILE], arrays[PQ_FILE], arrays[BOUNDS_FILE]
    if rotation.dtype != np.float32 or rotation.shape != (dim, dim):
        raise error(os.path.join(folder, ROTATION_FILE), f"corrupt codebook ({rotation.dtype}{rotation.shape})")
    m = int(conf.get("pq_m", -1))
    if bounds.dtype != np.int32 or bounds.shape != (m + 1,) or bounds[0] != 0 or bounds[-1] != dim:
        raise error(os.path.join(folder, BOUNDS_FILE), "corrupt codebook (group boundaries)")
    if pq.dtype != np.float32 or pq.shape != (m, KSUB, int(np.max(np.diff(bounds)))):
        raise error(os.path.join(folder, PQ_FILE), f"corrupt codebook ({pq.dtype}{pq.shape})")
    p = os.path.join(folder, COARSE_ANN)
    ann = AnnoyIndex(dim, "euclidean")
    try:
        ann.load(p, prefault=False)
    except OSError as exc:
        raise error(p, f"corrupt Annoy index ({exc})") from None
    nlist = int(conf.get("nlist", -1))
    if ann.get_n_items() != nlist:
        raise error(p, f"corrupt Annoy index ({ann.get_n_items()} items for {nlist} centroids)")
    coarse = np.array([ann.get_item_vector(i) for i in range(nlist)], np.float32).reshape(nlist, dim)
    return Codebook(rotation=rotation, coarse=coarse, pq=pq, bounds=bounds, ann=ann)


def codebook_conf_json(conf: dict) -> str:
    return json.dumps(conf, sort_keys=True)


# ---------------------------------------------------------------- locations


def pack_xy(xy: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(x, y) in pixels as 12-bit fractions of the photo's (width, height) in 3
    bytes (N, 3) uint8: within size / 8190 of a pixel (0.13 px for a 1024 px
    photo, whose keypoints lie on a 16 px grid of the feature map)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    sizes = np.maximum(np.asarray(sizes, np.float64).reshape(-1, 2), 1.0)
    v = np.rint(np.clip(xy / sizes, 0.0, 1.0) * 4095.0).astype(np.uint32)
    x, y = v[:, 0], v[:, 1]
    return np.stack([x & 0xFF, (x >> 8) | ((y & 0xF) << 4), y >> 4], 1).astype(np.uint8)


def unpack_xy(packed: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    b = np.asarray(packed, np.uint32).reshape(-1, 3)
    x = b[:, 0] | ((b[:, 1] & 0xF) << 8)
    y = (b[:, 1] >> 4) | (b[:, 2] << 4)
    sizes = np.maximum(np.asarray(sizes, np.float64).reshape(-1, 2), 1.0)
    return (np.stack([x, y], 1) / 4095.0 * sizes).astype(np.float32)


def pack_rows(rows: np.ndarray) -> np.ndarray:
    """Rows below 2^24 as 3 little-endian bytes (N, 3) uint8."""
    r = np.asarray(rows, np.uint32)
    return np.stack([r & 0xFF, (r >> 8) & 0xFF, r >> 16], 1).astype(np.uint8)


def unpack_rows(packed: np.ndarray) -> np.ndarray:
    b = np.asarray(packed, np.int64).reshape(-1, 3)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)


# ---------------------------------------------------------------- kernels


def query_tables(q: np.ndarray, pq: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(Q, m * 256) float32: -2 <q_j, r_jt> for every query row (rotated), group j
    and code t, flattened by group (one matrix product per group)."""
    m, ksub = pq.shape[0], pq.shape[1]
    out = np.empty((len(q), m, ksub), np.float32)
    with blas_threads(1):
        for j in range(m):
            lo, hi = int(bounds[j]), int(bounds[j + 1])
            np.matmul(q[:, lo:hi], pq[j, :, : hi - lo].T, out=out[:, j, :])
    out *= -2.0
    return out.reshape(len(q), m * ksub)


@numba.njit(nogil=True, cache=True)
def _worst(best):
    """Position and value of the largest entry (the first of equals)."""
    worst = 0
    thr = best[0]
    for t in range(1, best.shape[0]):
        if best[t] > thr:
            worst = t
            thr = best[t]
    return worst, thr


def code_words(codes: np.ndarray) -> np.ndarray:
    """The codes (N, m) uint8 read eight at a time, (N, m / 8) uint64, when m is
    a multiple of 8 (the scan then takes one load per eight codes) on a
    little-endian machine (the scan takes byte j of a word as code j); else an
    empty array and the scan reads bytes."""
    if codes.ndim == 2 and codes.shape[1] % 8 == 0 and codes.shape[1] and codes.flags.c_contiguous \
            and sys.byteorder == "little":
        return codes.view(np.uint64)
    return np.zeros((0, 0), np.uint64)


@numba.njit(nogil=True, cache=True, inline="always")
def _word_sum(table, x, o):
    """Sum of the eight table entries that one uint64 of codes (little-endian
    bytes, groups o / 256 ...) selects, in a fixed order."""
    return ((table[o + (x & 255)] + table[o + 256 + ((x >> 8) & 255)])
            + (table[o + 512 + ((x >> 16) & 255)] + table[o + 768 + ((x >> 24) & 255)])) \
        + ((table[o + 1024 + ((x >> 32) & 255)] + table[o + 1280 + ((x >> 40) & 255)])
           + (table[o + 1536 + ((x >> 48) & 255)] + table[o + 1792 + (x >> 56)]))


@numba.njit(nogil=True, cache=True)
def ivf_scan(qt, probes, probe_d, cell_tables, list_offsets, codes, words, list_rows, dead, best_d, best_r,
             max_scan=0):
    """k nearest codes of each query row among its probed cells.

    qt (Q, m * 256) from ``query_tables``; probes (Q, P) int64 cells, -1 = none;
    probe_d (Q, P) float32 |q - c|^2 of each probed cell; cell_tables (nlist,
    m * 256) (``Codebook.cell_tables``); list_offsets (nlist + 1,) int64; codes
    (N, m) uint8 and list_rows (N, 3) uint8 (``pack_rows``) in list order;
    words: ``code_words(codes)`` (empty: read the bytes); dead (N,) bool by row,
    or empty when none is removed; best_d (Q, k) float32 (+inf) and best_r
    (Q, k) int64 (-1) receive the k smallest squared distances and their rows,
    unordered. Ties keep the code scanned first. max_scan > 0: a row opens no
    further list once it has scanned that many codes (probes in ascending
    distance, the first always scanned), which bounds the work per row whatever
    the size of the lists."""
    nq, n_probe = probes.shape
    m = codes.shape[1]
    n_dead = dead.shape[0]
    n_words = words.shape[1] if words.shape[0] == codes.shape[0] else 0
    width = qt.shape[1]
    table = np.empty(width, np.float32)
    for i in range(nq):
        worst, thr = _worst(best_d[i])
        scanned = 0
        for p in range(n_probe):
            c = probes[i, p]
            if c < 0:
                continue
            a = list_offsets[c]
            b = list_offsets[c + 1]
            if a == b:
                continue
            if max_scan > 0 and scanned >= max_scan:
                break
            scanned += b - a
            base = probe_d[i, p]
            for t in range(width):
                table[t] = cell_tables[c, t] + qt[i, t]
            for pos in range(a, b):
                s = base
                if n_words:
                    for w in range(n_words):
                        s += _word_sum(table, words[pos, w], w * 2048)
                else:
                    for j in range(m):
                        s += table[j * 256 + np.int64(codes[pos, j])]
                if s < thr:
                    r = np.int64(list_rows[pos, 0]) | (np.int64(list_rows[pos, 1]) << 8) \
                        | (np.int64(list_rows[pos, 2]) << 16)
                    if n_dead and dead[r]:
                        continue
                    best_d[i, worst] = s
                    best_r[i, worst] = r
                    worst, thr = _worst(best_d[i])


def warm_up() -> None:
    """Compiles (or loads from cache) the kernels before timed work."""
    for m in (1, 8):
        qt = np.zeros((1, m * KSUB), np.float32)
        codes = np.zeros((1, m), np.uint8)
        ivf_scan(qt, np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32), np.zeros((1, m * KSUB), np.float32),
                 np.array([0, 1], np.int64), codes, code_words(codes), np.zeros((1, 3), np.uint8), np.zeros(1, bool),
                 np.full((1, 1), np.inf, np.float32), np.full((1, 1), -1, np.int64))
