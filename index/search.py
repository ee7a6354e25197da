"""Reading an index: k nearest neighbours across segments, votes, candidates."""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from common.conf import DictConf
from delf.conf import describe_mismatch

from . import store
from .candidates import Candidates
from .store import IndexFileError

log = logging.getLogger("index")

MODES = ("auto", "annoy", "exact")
WEIGHTINGS = ("adaptive", "count")
_CUTOFF_RAMP = 0.1


@dataclass(frozen=True)
class SearchConf(DictConf):
    """How a query is searched; nothing here is stored in the index."""

    k: int = 20  # nearest database descriptors per query descriptor
    # Annoy nodes inspected per query descriptor and segment (Annoy's search_k).
    # Annoy's own default (n_trees * k) is far too shallow for 40-D local
    # descriptors. 1000: verification re-ranks the top 100 anyway; on the 268
    # non-Oxford calibration photos (leave-one-out, 269k descriptors) search_k
    # 2000 / 1000 / 700 gave the same top-1 accuracy (0.896 / 0.896 / 0.899) at
    # 396 / 257 / 219 ms per query (docs/results.md, "Search").
    search_k: int = 1000
    top_n: int = 100  # candidate photos returned (at most; photos without a counted match never are)
    # "auto": exact for segments below exact_below live descriptors, Annoy above.
    mode: str = "auto"
    exact_below: int = 200_000  # measured crossover on 1M Oxford descriptors: about 230k (README)
    threads: int = 0  # 0: one per core
    # pq indexes: coarse cells visited per query descriptor (their inverted lists are scanned) ...
    nprobe: int = 16
    # ... and more in a segment too small for that many lists to hold min_scan codes.
    min_scan: int = 4096
    # pq: a query descriptor opens no further cell once it has scanned this many
    # codes (0: no limit), so that the scan's cost stops growing with the
    # database once its lists are long. 16 cells of about 4 sqrt(N) hold fewer
    # codes than this up to a few million descriptors, so it binds only above.
    # Chosen on a 10M set of non-Oxford descriptors (docs/results.md, "Compact
    # index"): no limit / 10000 / 8000 / 6000 gave 102 / 94 / 89 / 70 ms per
    # 1000 query descriptors on 2 cores, the exact nearest among the 20 taken
    # for 0.876 / 0.872 / 0.861 / 0.841 of them.
    max_scan: int = 8000
    # pq: Annoy nodes inspected over the coarse centroids per query descriptor.
    pq_search_k: int = 500
    # pq segments below this many live descriptors are searched exhaustively (every code).
    pq_exact_below: int = 20_000
    # How a neighbour counts for its photo. "adaptive": 1 - d^2 / d_k^2, with
    # d_k the query keypoint's k-th neighbour distance, so the k-th neighbour
    # weighs nothing and no vote hangs on the exact edge of the k nearest;
    # "count": 1 per neighbour.
    weighting: str = "adaptive"
    # Neighbours farther than this (unit-vector distance) do not count; the
    # weight ramps down linearly over cutoff +- 0.05. Those far neighbours are
    # the ones an approximate search most often swaps for others, and with the
    # default extractor they are noise (the median nearest neighbour of a query
    # keypoint lies at 0.6). None: no cutoff.
    cutoff: float | None = 0.65

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.cutoff is not None and not float(self.cutoff) > 0:
            raise ValueError(f"cutoff must be > 0 or None, got {self.cutoff}")
        for name in ("k", "search_k", "top_n", "nprobe", "pq_search_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.exact_below) < 0 or int(self.threads) < 0 or int(self.min_scan) < 0 \
                or int(self.pq_exact_below) < 0 or int(self.max_scan) < 0:
            raise ValueError("exact_below, pq_exact_below, min_scan, max_scan and threads must be >= 0")


    @property
    def n_threads(self) -> int:
        return int(self.threads) or (os.cpu_count() or 1)


# Query rows per task: small enough to balance threads, large enough that the
# exact mode's matrix products stay efficient.
_ANNOY_BLOCK = 64
_EXACT_BLOCK = 256
_EXACT_CHUNK = 32768
_IVF_BLOCK = 128


class _Snapshot:
    """One complete state of the index: a manifest and its opened segments."""

    def __init__(self, manifest: dict, segments: list, stamp):
        self.manifest = manifest
        self.generation = manifest["generation"]
        self.stamp = stamp
        self.segments = segments
        self.offsets = np.cumsum([0] + [s.n for s in segments]).astype(np.int64)
        n_ids = int(manifest["next_photo_id"])
        self.dead = np.zeros(n_ids + 1, bool)
        tomb = np.asarray(manifest["tombstones"], np.int64)
        self.dead[tomb[(tomb >= 0) & (tomb < n_ids)]] = True
        self.dead_rows = []
        self.live = []
        for s in segments:
            if len(tomb):
                rows = self.dead[np.asarray(s.arrays["desc_photo"])]
                self.dead_rows.append(rows if rows.any() else None)
            else:
                self.dead_rows.append(None)
            self.live.append(s.n - (int(self.dead_rows[-1].sum()) if self.dead_rows[-1] is not None else 0))
        ids = np.concatenate([np.asarray(s.arrays["photo_ids"], np.int64) for s in segments]) \
            if segments else np.zeros(0, np.int64)
        self.photo_order = np.argsort(ids, kind="stable")
        self.photo_sorted = ids[self.photo_order]
        self.photo_names = [n for s in segments for n in s.names]
        self.photo_sizes = np.concatenate([np.asarray(s.arrays["photo_sizes"]) for s in segments]) \
            if segments else np.zeros((0, 2), np.int32)
        self.photo_counts = np.concatenate([np.asarray(s.arrays["photo_counts"]) for s in segments]) \
            if segments else np.zeros(0, np.int32)
        self.photo_dead = self.dead[ids] if len(ids) else np.zeros(0, bool)
        self._where = None  # built on the first without()
        self.excluded: tuple = ()  # names searched as if not indexed (without())

    @property
    def n_descriptors(self) -> int:
        return int(sum(self.live))

    def _locate(self) -> None:
        """name -> (segment, position in segment, position in the concatenated photo table);
        built whole before it is published, as searches may run in threads."""
        if self._where is not None:
            return
        where, starts, g = {}, [], 0
        for si, seg in enumerate(self.segments):
            counts = np.asarray(seg.arrays["photo_counts"], np.int64)
            starts.append(np.concatenate([[0], np.cumsum(counts)]))
            for i, n in enumerate(seg.names):
                where[n] = (si, i, g + i)
            g += len(counts)
        self._starts, self._where = starts, where

    def photo_arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(locations (N, 2), descriptors (N, D)) of a live photo's keypoints, as indexed."""
        self._locate()
        hit = self._where.get(name)
        if hit is None or self.photo_dead[hit[2]]:
            raise KeyError(f"no photo named {name!r} in the index")
        si, i, _ = hit
        a, b = int(self._starts[si][i]), int(self._starts[si][i + 1])
        seg = self.segments[si]
        return (np.asarray(seg.arrays["desc_xy"][a:b], np.float32),
                np.asarray(seg.arrays["descriptors"][a:b], np.float32))

    def without(self, names) -> "_Snapshot":
        """This state with the named photos treated as removed (names not in
        the index are ignored): their descriptors are nobody's neighbours. A
        photo's descriptors are one run of rows in its segment, so only those
        runs are marked; the state itself is not changed."""
        self._locate()
        hits = [self._where[n] for n in set(names) if n in self._where]
        hits = [h for h in hits if not self.photo_dead[h[2]]]
        if not hits:
            return self
        snap = copy.copy(self)
        snap.excluded = tuple(sorted(set(self.excluded) | {n for n in names if n in self._where}))
        snap.dead, snap.photo_dead = self.dead.copy(), self.photo_dead.copy()
        snap.dead_rows, snap.live = list(self.dead_rows), list(self.live)
        copied = set()
        for si, i, g in hits:
            seg = self.segments[si]
            if si not in copied:
                old = snap.dead_rows[si]
                snap.dead_rows[si] = np.zeros(seg.n, bool) if old is None else old.copy()
                copied.add(si)
            a, b = self._starts[si][i], self._starts[si][i + 1]
            snap.dead_rows[si][a:b] = True
            snap.live[si] -= int(b - a)
            snap.dead[int(seg.arrays["photo_ids"][i])] = True
            snap.photo_dead[g] = True
        return snap

    def photo_rows(self, photo_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.photo_sorted, photo_ids)
        return self.photo_order[pos]

    def gather(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Sidecar values for global descriptor rows (segment offset + row)."""
        seg_of = np.searchsorted(self.offsets, rows, side="right") - 1
        first = self.segments[0].arrays[key] if self.segments else np.zeros(0, np.float32)
        out = np.empty((len(rows),) + first.shape[1:], first.dtype)
        for s in np.unique(seg_of):
            m = seg_of == s
            out[m] = self.segments[s].arrays[key][rows[m] - self.offsets[s]]
        return out


class Index:
    """A read-only view of an index directory; any number may be open at once.

    Every search works on one complete state (manifest generation). Before each
    search the manifest is checked (one stat call) and, when a writer has
    committed since, the new state is loaded; segments already open are reused
    because segments never change once written.
    """

    def __init__(self, path: str | os.PathLike, check: str = "size", auto_refresh: bool = True, client=None):
        if check not in ("size", "full"):
            raise ValueError(f"check must be 'size' or 'full', got {check!r}")
        self.path = os.fspath(path)
        self.client = client  # a distributed.Client: segments are searched on its workers
        self.check = check
        self.auto_refresh = auto_refresh
        self._segments: dict = {}
        self._codebook = None  # (name, Codebook) of the loaded state
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._snap = self._load()

    # ------------------------------------------------------------ state

    def _load(self) -> _Snapshot:
        last_exc = None
        # A compaction may delete the segments of the manifest just read; the
        # next read then names the new ones.
        for _ in range(20):
            stamp = store.manifest_stamp(self.path)
            manifest = store.read_manifest(self.path)
            try:
                cb_entry = manifest.get("codebook")
                codebook = None
                if cb_entry:
                    if self._codebook is not None and self._codebook[0] == cb_entry["name"]:
                        codebook = self._codebook[1]
                    else:
                        codebook = store.open_codebook(self.path, cb_entry, manifest["dim"], self.check)
                segs = []
                for entry in manifest["segments"]:
                    seg = self._segments.get(entry["name"])
                    if seg is None:
                        seg = store.open_segment(self.path, entry, manifest["dim"], codebook, check=self.check)
                    segs.append(seg)
            except IndexFileError as exc:
                last_exc = exc
                if store.manifest_stamp(self.path) != stamp:
                    continue
                raise
            self._segments = {s.name: s for s in segs}
            self._codebook = (cb_entry["name"], codebook) if cb_entry else None
            return _Snapshot(manifest, segs, stamp)
        raise last_exc

    def refresh(self) -> bool:
        """Loads the latest committed state if it changed; returns whether it did.
        A damaged new state is reported and the last good one kept."""
        with self._lock:
            if store.manifest_stamp(self.path) == self._snap.stamp:
                return False
            try:
                self._snap = self._load()
            except (IndexFileError, FileNotFoundError) as exc:
                log.warning("%s: keeping index state %d: %s", self.path, self._snap.generation, exc)
                return False
            return True

    def snapshot(self) -> _Snapshot:
        if self.auto_refresh:
            self.refresh()
        return self._snap

    @property
    def generation(self) -> int:
        return self._snap.generation

    @property
    def dim(self) -> int:
        return int(self._snap.manifest["dim"])

    @property
    def extractor_conf(self) -> dict:
        return self._snap.manifest["extractor_conf"]

    @property
    def n_descriptors(self) -> int:
        return self._snap.n_descriptors

    def photos(self) -> list[str]:
        """Names of the photos a search can return, in photo-id order."""
        snap = self.snapshot()
        return [snap.photo_names[i] for i in snap.photo_order if not snap.photo_dead[i]]

    def __len__(self) -> int:
        return len(self.photos())

    def photo_features(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(locations, descriptors) of an indexed photo's keypoints (float32; KeyError when absent)."""
        return self.snapshot().photo_arrays(name)

    def check_query_conf(self, query_conf) -> None:
        """Refuses a query extracted with another conf, naming what differs."""
        if query_conf is None:
            return
        if hasattr(query_conf, "to_dict"):
            query_conf = query_conf.to_dict()
        diff = describe_mismatch(self.extractor_conf, dict(query_conf))
        if diff:
            raise ValueError(
                f"the query was extracted with a different extractor conf than the index {self.path} "
                f"({diff}); extract it with the index's conf"
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _executor(self, n: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pool_size != n:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(n, thread_name_prefix="index-search")
                self._pool_size = n
            return self._pool

    # ------------------------------------------------------------ search

    def knn(self, descriptors: np.ndarray, conf: SearchConf | None = None, snap: _Snapshot | None = None):
        """k nearest live database descriptors of each query row.

        Returns ``(rows, distances, modes, snapshot)``: ``rows`` int64 (Q, k) are
        global rows of that snapshot (-1 where fewer than k were found),
        ``distances`` float32 (Q, k) ascending, ``modes`` the mode per segment.
        With a Dask client (``Index(path, client=...)``) each segment (shard)
        is searched on a worker; the merge is the same."""
        conf = conf or SearchConf()
        snap = snap or self.snapshot()
        q = np.ascontiguousarray(descriptors, np.float32)
        if q.ndim != 2 or (len(q) and q.shape[1] != self.dim):
            raise ValueError(f"query descriptors must be (N, {self.dim}), got shape {q.shape}")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        if self.client is not None:
            rows, dist, modes = sharded_knn(self, q, conf, snap)
        else:
            rows, dist, modes = self.segment_knn(q, conf, snap)
        return (*merge_segments(rows, dist, int(conf.k)), modes, snap)

    def segment_knn(self, q: np.ndarray, conf: SearchConf, snap: _Snapshot, only=None):
        """Per-segment k nearest neighbours of unit query rows: rows int64 and
        distances float32 (Q, segments, k) (global rows), and the mode per
        segment. ``only``: the segment positions to search (others stay empty)."""
        k = int(conf.k)
        n_seg = len(snap.segments)
        rows = np.full((len(q), max(n_seg, 1), k), -1, np.int64)
        dist = np.full((len(q), max(n_seg, 1), k), np.inf, np.float32)
        modes = []
        tasks = []
        q_list = None
        for s, seg in enumerate(snap.segments):
            if snap.live[s] == 0 or (only is not None and s not in only):
                modes.append("empty")
                continue
            pq_seg = seg.kind == "pq"
            below = conf.pq_exact_below if pq_seg else conf.exact_below
            exact = conf.mode == "exact" or (conf.mode == "auto" and snap.live[s] < below)
            modes.append("exact" if exact else ("ivf" if pq_seg else "annoy"))
            if exact:
                fn = _exact_block_pq if pq_seg else _exact_block
                for a in range(0, len(q), _EXACT_BLOCK):
                    tasks.append((fn, seg, snap.dead_rows[s], q[a:a + _EXACT_BLOCK], a, s))
            elif pq_seg:
                n_probe = min(seg.codebook.nlist, max(int(conf.nprobe), int(math.ceil(
                    conf.min_scan * seg.codebook.nlist / max(snap.live[s], 1)))))
                for a in range(0, len(q), _IVF_BLOCK):
                    tasks.append((_ivf_block, seg, snap.dead_rows[s], (q[a:a + _IVF_BLOCK], n_probe,
                                                                     conf.pq_search_k, conf.max_scan), a, s))
            else:
                if q_list is None:
                    # Annoy reads a list far faster than a NumPy row.
                    q_list = q.tolist()
                dead_frac = 1.0 - snap.live[s] / seg.n
                fetch = min(seg.n, k if dead_frac == 0 else int(math.ceil(k / max(1 - dead_frac, 0.05))) + k)
                for a in range(0, len(q), _ANNOY_BLOCK):
                    tasks.append((_annoy_block, seg, snap.dead_rows[s], (q_list[a:a + _ANNOY_BLOCK], fetch,
                                                                           conf.search_k), a, s))

        def run(task):
            fn, seg, dead, arg, a, s = task
            r, d = fn(seg, dead, arg, k)
            rows[a:a + len(r), s, :] = np.where(r >= 0, r + snap.offsets[s], -1)
            dist[a:a + len(r), s, :] = d

        n_threads = conf.n_threads
        if n_threads <= 1 or len(tasks) <= 1:
            for t in tasks:
                run(t)
        else:
            list(self._executor(n_threads).map(run, tasks))
        return rows, dist, modes

    def search(self, query, conf: SearchConf | None = None, query_conf=None,
               keep_knn: bool = False, exclude=()) -> Candidates:
        """The top-N photos for a query's ``Features`` (or bare descriptors), with
        putative correspondences. ``query_conf`` (the resolved extractor conf of
        the query) is checked against the index's when given. ``keep_knn`` puts
        the raw neighbours in ``extra`` ("knn_rows", "knn_distances").
        ``exclude`` names photos searched as if they were not in the index (a
        photo that is itself the query, or a whole place left out): their
        descriptors take none of the k nearest-neighbour slots, unlike dropping
        them from the candidates afterwards."""
        conf = conf or SearchConf()
        self.check_query_conf(query_conf)
        if hasattr(query, "descriptors"):
            desc, q_xy = query.descriptors, query.locations
        else:
            desc = np.asarray(query, np.float32)
            q_xy = np.zeros((len(desc), 2), np.float32)
        if len(desc) and desc.shape[1] != self.dim:
            raise ValueError(
                f"the query has {desc.shape[1]}-D descriptors, the index {self.path} holds {self.dim}-D; "
                f"extract the query with the index's conf"
            )
        snap = self.snapshot()
        if exclude:
            snap = snap.without(exclude)
        rows, dist, modes, snap = self.knn(desc, conf, snap)
        cands = vote(snap, rows, dist, np.asarray(q_xy, np.float32), conf, modes)
        if keep_knn:
            cands.extra.update(knn_rows=rows, knn_distances=dist)
        return cands


def merge_segments(rows: np.ndarray, dist: np.ndarray, k: int):
    """(Q, segments, k) per-segment neighbours -> the k nearest (Q, k); ties go
    to the earlier segment, so every way of computing the parts merges alike."""
    n_q = rows.shape[0]
    rows = rows.reshape(n_q, rows.shape[1] * rows.shape[2])
    dist = dist.reshape(n_q, dist.shape[1] * dist.shape[2])
    if rows.shape[1] > k:
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        rows = np.take_along_axis(rows, order, 1)
        dist = np.take_along_axis(dist, order, 1)
    return rows, dist


def _annoy_block(seg, dead, arg, k):
    vectors, fetch, search_k = arg
    rows = np.full((len(vectors), k), -1, np.int64)
    dist = np.full((len(vectors), k), np.inf, np.float32)
    ann = seg.annoy
    for i, v in enumerate(vectors):
        n_fetch = fetch
        while True:
            ids, ds = ann.get_nns_by_vector(v, n_fetch, search_k, True)
            if dead is None or not ids:
                break
            keep = [j for j, r in enumerate(ids) if not dead[r]][:k]
            if len(keep) < k and len(ids) == n_fetch < seg.n:
                # Unlucky: this neighbourhood is mostly removed photos.
                n_fetch = min(seg.n, 4 * n_fetch)
                continue
            ids = [ids[j] for j in keep]
            ds = [ds[j] for j in keep]
            break
        n = min(len(ids), k)
        rows[i, :n] = ids[:n]
        dist[i, :n] = ds[:n]
    return rows, dist


def _exact_block(seg, dead, q, k):
    """Brute force: float32 matrix products over chunks of the segment, keeping
    a running top k by cosine similarity."""
    desc = seg.descriptors
    n = len(desc)
    from .blas import blas_threads
    from .kernels import topk_update

    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    # The search's own threads are the parallelism: one BLAS thread each.
    with blas_threads(1):
        for c0 in range(0, n, _EXACT_CHUNK):
            sim = q @ np.asarray(desc[c0:c0 + _EXACT_CHUNK]).T
            if dead is not None:
                sim[:, dead[c0:c0 + _EXACT_CHUNK]] = -np.inf
            topk_update(sim, c0, best_s, best_i)
    order = np.argsort(-best_s, axis=1, kind="stable")
    best_s = np.take_along_axis(best_s, order, 1)
    best_i = np.take_along_axis(best_i, order, 1)
    found = np.isfinite(best_s)
    dist = np.where(found, np.sqrt(np.maximum(2.0 - 2.0 * best_s, 0.0)), np.inf).astype(np.float32)
    return np.where(found, best_i, -1), dist


def _exact_block_pq(seg, dead, q, k):
    """Every code of a pq segment: matrix products with the reconstructions,
    ranked by |q - r|^2 = 1 - 2 (q.r - |r|^2 / 2) (the same distance the
    inverted-file scan computes)."""
    desc, half_sq = seg.decoded()
    from .blas import blas_threads
    from .kernels import topk_update

    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    with blas_threads(1):
        for c0 in range(0, len(desc), _EXACT_CHUNK):
            sim = q @ desc[c0:c0 + _EXACT_CHUNK].T
            sim -= half_sq[None, c0:c0 + _EXACT_CHUNK]
            if dead is not None:
                sim[:, dead[c0:c0 + _EXACT_CHUNK]] = -np.inf
            topk_update(sim, c0, best_s, best_i)
    return _sorted_result(np.where(np.isfinite(best_s), 1.0 - 2.0 * best_s, np.inf), best_i)


def _sorted_result(sq_dist, rows):
    """Rows ascending by (squared distance, row), as distances; -1 / inf where none."""
    sq_dist = np.asarray(sq_dist, np.float64)
    order = np.lexsort((rows, sq_dist), axis=-1) if sq_dist.size else np.zeros(sq_dist.shape, np.int64)
    sq_dist = np.take_along_axis(sq_dist, order, 1)
    rows = np.take_along_axis(rows, order, 1)
    found = np.isfinite(sq_dist) & (rows >= 0)
    dist = np.where(found, np.sqrt(np.maximum(sq_dist, 0.0)), np.inf).astype(np.float32)
    return np.where(found, rows, -1), dist


def _ivf_block(seg, dead, arg, k):
    """The inverted-file search of a pq segment: Annoy finds each query row's
    nearest coarse cells, the Numba kernel scans their lists."""
    from . import pq

    q, n_probe, search_k, max_scan = arg
    cb = seg.codebook
    q = cb.rotate(q)
    probes = np.full((len(q), n_probe), -1, np.int64)
    if n_probe >= cb.nlist:
        probes[:] = np.arange(cb.nlist)
    else:
        search_k = max(int(search_k), n_probe * cb.ann.get_n_trees())
        for i, v in enumerate(q.tolist()):
            ids = cb.ann.get_nns_by_vector(v, n_probe, search_k)
            probes[i, :len(ids)] = ids
    cent = cb.coarse[np.maximum(probes, 0)]
    probe_d = np.einsum("ipd,ipd->ip", q[:, None, :] - cent, q[:, None, :] - cent).astype(np.float32)
    qt = pq.query_tables(q, cb.pq, cb.bounds)
    best_d = np.full((len(q), k), np.inf, np.float32)
    best_r = np.full((len(q), k), -1, np.int64)
    codes = np.asarray(seg.arrays["codes"])
    pq.ivf_scan(qt, probes, probe_d, cb.cell_tables(), seg.list_offsets, codes, pq.code_words(codes),
                np.asarray(seg.arrays["list_rows"]), _NONE_DEAD if dead is None else dead, best_d, best_r,
                int(max_scan))
    return _sorted_result(best_d, best_r)


_NONE_DEAD = np.zeros(0, bool)  # no removed rows: the scan checks none


def match_weights(dist: np.ndarray, conf: SearchConf) -> np.ndarray:
    """Weight of each neighbour (rows: query keypoints, columns: ascending
    distances, inf where missing) under ``conf.weighting`` and ``conf.cutoff``."""
    d = dist.astype(np.float64)
    finite = np.isfinite(d)
    if conf.weighting == "adaptive":
        dk = np.where(finite, d, -np.inf).max(axis=1, keepdims=True)
        w = np.where(finite, 1.0 - d ** 2 / np.maximum(dk, 1e-12) ** 2, 0.0)
        w = np.maximum(w, 0.0)
    else:
        w = finite.astype(np.float64)
    if conf.cutoff is not None:
        w *= np.clip((conf.cutoff + _CUTOFF_RAMP / 2 - np.where(finite, d, np.inf)) / _CUTOFF_RAMP, 0.0, 1.0)
    return w


def vote(snap: _Snapshot, rows, dist, q_xy, conf: SearchConf, modes=()) -> Candidates:
    """Candidates from k-NN results (``Index.knn``'s rows and distances of that
    snapshot): one correspondence per query keypoint and photo (its nearest
    neighbour there, if it counts), photos ranked by their summed weights."""
    n_q, k = rows.shape
    weight = match_weights(dist, conf)
    valid = (rows >= 0) & (weight > 0)
    qi = np.broadcast_to(np.arange(n_q, dtype=np.int64)[:, None], rows.shape)[valid]
    r = rows[valid]
    d = dist[valid]
    w = weight[valid]
    photo = snap.gather("desc_photo", r).astype(np.int64) if len(r) else np.zeros(0, np.int64)
    # One correspondence per (query keypoint, photo): its nearest hit there.
    order = np.lexsort((d, qi, photo))
    photo, qi, r, d, w = photo[order], qi[order], r[order], d[order], w[order]
    first = np.ones(len(photo), bool)
    first[1:] = (photo[1:] != photo[:-1]) | (qi[1:] != qi[:-1])
    photo, qi, r, d, w = photo[first], qi[first], r[first], d[first], w[first]
    uniq, start, votes = np.unique(photo, return_index=True, return_counts=True)
    scores = np.add.reduceat(w, start) if len(start) else np.zeros(0)
    rank = np.lexsort((uniq, -votes, -scores))[: conf.top_n]
    cand_ids = uniq[rank]
    offsets = np.zeros(len(rank) + 1, np.int64)
    offsets[1:] = np.cumsum(votes[rank])
    sel = np.concatenate([np.arange(start[i], start[i] + votes[i]) for i in rank]) if len(rank) else \
        np.zeros(0, np.int64)
    sel_rows = r[sel]
    prow = snap.photo_rows(cand_ids)
    used = {m for m in modes if m != "empty"}
    return Candidates(
        names=[snap.photo_names[i] for i in prow],
        photo_ids=cand_ids.astype(np.int64),
        votes=votes[rank].astype(np.int32),
        scores=scores[rank].astype(np.float32),
        image_sizes=snap.photo_sizes[prow].astype(np.int32).reshape(-1, 2),
        offsets=offsets,
        candidate=np.repeat(np.arange(len(rank), dtype=np.int32), votes[rank]),
        query_idx=qi[sel].astype(np.int32),
        db_idx=snap.gather("desc_keypoint", sel_rows).astype(np.int32) if len(sel) else np.zeros(0, np.int32),
        distances=d[sel].astype(np.float32),
        query_xy=q_xy[qi[sel]].reshape(-1, 2) if len(sel) else np.zeros((0, 2), np.float32),
        db_xy=snap.gather("desc_xy", sel_rows).reshape(-1, 2) if len(sel) else np.zeros((0, 2), np.float32),
        n_query=n_q,
        generation=snap.generation,
        mode=used.pop() if len(used) == 1 else ("mixed" if used else ""),
    )


def open_index(path: str | os.PathLike, check: str = "size", client=None) -> Index:
    return Index(path, check=check, client=client)


# ---------------------------------------------------------------- shards on a Dask cluster
#
# Each worker opens the index once (its segments are memory-mapped, so workers on
# one machine share the pages) and searches only the shards given to it: shard
# ``s`` always goes to the same worker (``s`` modulo the workers, in address
# order), so each worker maps only its own. The client merges the per-shard
# neighbours exactly as one process does (``search.merge_segments``), then votes
# and verification run as always: the same answers as without the cluster.

_OPEN: dict = {}
_LOCK = threading.Lock()


def _worker_index(path: str):
    with _LOCK:
        idx = _OPEN.get(path)
        if idx is None:
            idx = _OPEN[path] = Index(path)
        return idx


def search_shards(path: str, generation: int, shards: list[int], q: np.ndarray, conf: dict, excluded: tuple):
    """Runs on a worker: the neighbours in ``shards`` (segment positions) of the
    index state ``generation``; (rows, distances, modes) as ``Index.segment_knn``."""
    idx = _worker_index(path)
    snap = idx.snapshot()
    if snap.generation != generation:
        raise ValueError(
            f"{path}: the index changed during the search (state {snap.generation} on a worker, "
            f"{generation} on the client); search again"
        )
    if excluded:
        snap = snap.without(excluded)
    conf = SearchConf.from_dict(conf).replace(threads=1)
    rows, dist, modes = idx.segment_knn(q, conf, snap, only=set(shards))
    return rows[:, shards], dist[:, shards], [modes[s] for s in shards]


def sharded_knn(index, q: np.ndarray, conf, snap):
    """``Index.segment_knn`` with the segments spread over ``index.client``'s workers."""
    client = index.client
    n_seg = len(snap.segments)
    k = int(conf.k)
    rows = np.full((len(q), max(n_seg, 1), k), -1, np.int64)
    dist = np.full((len(q), max(n_seg, 1), k), np.inf, np.float32)
    if n_seg == 0:
        return rows, dist, []
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise ValueError("the Dask cluster has no workers")
    plan: dict[str, list[int]] = {}
    for s in range(n_seg):
        plan.setdefault(workers[s % len(workers)], []).append(s)
    q_future = client.scatter(q, broadcast=True)
    futures = {w: client.submit(search_shards, index.path, snap.generation, shards, q_future, conf.to_dict(),
                                snap.excluded, workers=[w], allow_other_workers=False, pure=False)
               for w, shards in plan.items()}
    modes = [""] * n_seg
    for w, fut in futures.items():
        r, d, m = fut.result()
        shards = plan[w]
        rows[:, shards] = r
        dist[:, shards] = d
        for s, mode in zip(shards, m):
            modes[s] = mode
    return rows, dist, modes
