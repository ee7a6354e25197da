"""The database's match graph: which indexed photos verify against each other.

Every photo searches the index once when it is indexed (itself left out), as a
query would; each verified result with at least ``MIN_INLIERS`` unique
inliers is kept as a directed row (photo, result, unique inliers, putative
correspondences, spread, the fitted model's scale change). Two photos are *one place* when a row between them,
in either direction, is a match under the pair model of the calibration
(version 3: ``Calibration.pair``). The confidence reads that relation
(``verify.confidence.graph_context``): a second photo of the same place that
also verifies supports a result, and only photos of other places count
against its margin.

Searching the index to make the rows is ``engine.graph_update``'s. The rows live beside the index in ``match-graph.npz``, written atomically,
with the id of the index build they belong to (an index rebuilt with
``--overwrite`` starts a new graph). Adding photos searches the new ones and
replaces every row that touches them; a removed photo never comes back as a
candidate, so its rows are inert until the photo's name is indexed again.
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np

GRAPH_FILE = "match-graph.npz"
FORMAT = "delf-match-graph"
# Version 2 added each row's scale change (what a version 4 pair model reads); a version 1 file is not read.
VERSION = 2
# Rows weaker than this cannot be a match under any pair model (min_inliers of the calibrations).
MIN_INLIERS = 5


def graph_path(index_dir) -> str:
    return os.path.join(os.fspath(index_dir), GRAPH_FILE)


def index_id(index_dir) -> str:
    """The id of the index build at ``index_dir`` (its manifest's; "" for an index made before ids)."""
    from index.store import read_manifest

    return str(read_manifest(os.fspath(index_dir)).get("id", ""))


class MatchGraph:
    """Rows of the match graph: ``searched`` photo names (each searched the
    index once), and per row the source, the result, its unique inliers,
    putative correspondences, spread and scale change (None: 0 for every row)."""

    def __init__(self, index_id: str = "", searched=(), src=(), dst=(), inliers=(), putative=(), spread=(),
                 scale=None):
        self.index_id = str(index_id)
        self.searched = set(searched)
        self.src = [str(s) for s in src]
        self.dst = [str(d) for d in dst]
        self.inliers = np.asarray(inliers, np.int64).reshape(-1)
        self.putative = np.asarray(putative, np.int64).reshape(-1)
        self.spread = np.asarray(spread, np.float64).reshape(-1)
        self.scale = (np.zeros(len(self.spread)) if scale is None else np.asarray(scale, np.float64).reshape(-1))
        if not (len(self.src) == len(self.dst) == len(self.inliers) == len(self.putative) == len(self.spread)
                == len(self.scale)):
            raise ValueError("match graph rows must have one source, result, inliers, putative, spread and "
                             "scale change each")
        self._links: dict = {}
        self._weights: dict = {}
        self._live: dict = {}  # live_weights' one cached state

    def __len__(self) -> int:
        return len(self.src)

    # ------------------------------------------------------------ reading
    def links(self, pair) -> dict:
        """{photo: set of photos it is one place with} under ``pair`` (a calibration that scores pairs on
        their own, version 1 or 4: a row is a link when its pair confidence reaches the pair model's
        threshold)."""
        key = _pair_key(pair)
        got = self._links.get(key)
        if got is None:
            got = {a: set(nb) for a, nb in self.weights(pair).items()}
            self._links = {key: got}
        return got

    def weights(self, pair) -> dict:
        """{photo: {linked photo: the most unique inliers of a row between them that ``pair`` calls a
        match}} (diffusion's links, engine.diffusion)."""
        key = _pair_key(pair)
        got = self._weights.get(key)
        if got is None:
            got = {}
            if len(self):
                conf = pair.confidence(self.inliers, self.putative, self.spread, scale_change=self.scale)
                for i in np.flatnonzero(conf >= pair.threshold):
                    a, b, w = self.src[i], self.dst[i], int(self.inliers[i])
                    if a != b:
                        for x, y in ((a, b), (b, a)):
                            row = got.setdefault(x, {})
                            row[y] = max(row.get(y, 0), w)
            self._weights = {key: got}
        return got

    def bound(self, pair) -> "BoundGraph":
        """The graph as ``verify.rerank.rerank`` reads it, under the pair model ``pair``."""
        return BoundGraph(self.links(pair))

    # ------------------------------------------------------------ changing
    def replace(self, rows: dict) -> "MatchGraph":
        """A graph where the photos in ``rows`` ({name: [(result, inliers, putative, spread, scale change),
        ...]}) were searched again: every old row that touches one of them is dropped."""
        new = set(rows)
        keep = [i for i in range(len(self)) if self.src[i] not in new and self.dst[i] not in new]
        src = [self.src[i] for i in keep]
        dst = [self.dst[i] for i in keep]
        inl, put, spr = list(self.inliers[keep]), list(self.putative[keep]), list(self.spread[keep])
        sca = list(self.scale[keep])
        for name in sorted(rows):
            for r, u, p, s, c in rows[name]:
                src.append(name)
                dst.append(r)
                inl.append(int(u))
                put.append(int(p))
                spr.append(float(s))
                sca.append(float(c))
        return MatchGraph(self.index_id, (self.searched - new) | new, src, dst, inl, put, spr, sca)

    # ------------------------------------------------------------ files
    def save(self, index_dir) -> None:
        from common.files import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, format=FORMAT, version=VERSION, index_id=self.index_id,
                 searched=np.asarray(sorted(self.searched), str), src=np.asarray(self.src, str),
                 dst=np.asarray(self.dst, str), inliers=self.inliers, putative=self.putative, spread=self.spread,
                 scale=self.scale)
        atomic_write_bytes(graph_path(index_dir), buf.getvalue())

    @classmethod
    def load(cls, index_dir) -> "MatchGraph | None":
        """The index's graph; None when there is none, it is of another build of the index or an older
        version, or unreadable."""
        path = graph_path(index_dir)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path) as z:
                if str(z["format"]) != FORMAT or int(z["version"]) != VERSION:
                    return None
                g = cls(str(z["index_id"]), z["searched"].tolist(), z["src"].tolist(), z["dst"].tolist(),
                        z["inliers"], z["putative"], z["spread"], z["scale"])
        except (OSError, KeyError, ValueError, EOFError):
            return None
        return g if g.index_id == index_id(index_dir) else None


def _pair_key(pair) -> tuple:
    return (pair.coef, pair.intercept, pair.mean, pair.scale, pair.threshold, pair.min_inliers)


class BoundGraph:
    """``same_place(names)``: (N, N) bool, True where two photos are linked."""

    def __init__(self, links: dict):
        self._links = links

    def same_place(self, names) -> np.ndarray:
        names = list(names)
        pos = {n: i for i, n in enumerate(names)}
        out = np.zeros((len(names), len(names)), bool)
        for i, n in enumerate(names):
            for m in self._links.get(n, ()):
                j = pos.get(m)
                if j is not None:
                    out[i, j] = out[j, i] = True
        return out


def stale(index_dir) -> bool:
    """Whether the index has a match-graph file that cannot be read as its current graph (an older version
    of the file, another build of the index, or damaged): adding photos must not start a partial graph
    over it; ``delf index build`` makes a new one."""
    return os.path.isfile(graph_path(index_dir)) and MatchGraph.load(index_dir) is None


def missing(index_dir, photos) -> list:
    """The photos of ``photos`` that have not searched the index's graph (all of them when there is none)."""
    g = MatchGraph.load(index_dir)
    done = g.searched if g is not None else set()
    return [p for p in photos if p not in done]


_CACHE: dict = {}
_LOCK = threading.Lock()


def graph_for(index, calibration):
    """The bound graph of an open index for ``calibration`` (None when it
    does not read a graph, or the index has none); cached while the file is
    unchanged."""
    if calibration is None or not calibration.uses_graph:
        return None
    g = rows_for(index)
    return g.bound(calibration.pair) if g is not None else None


def live_weights(index, pair) -> dict:
    """``MatchGraph.weights`` of an open index's graph under ``pair``, keeping only the photos the index
    holds now (a removed photo's rows stay in the file until it is indexed again); {} without a graph.
    Cached per index state."""
    g = rows_for(index)
    if g is None:
        return {}
    key = (id(g), int(getattr(index, "generation", 0))) + _pair_key(pair)
    got = g._live.get(key)
    if got is None:
        held = set(index.photos())
        got = {a: {b: w for b, w in nb.items() if b in held} for a, nb in g.weights(pair).items() if a in held}
        g._live = {key: got}
    return got


def rows_for(index) -> "MatchGraph | None":
    """The match graph of an open index (None: it has none); cached while the file is unchanged."""
    path = getattr(index, "path", None)
    if path is None:
        return None
    key = os.path.abspath(path)
    try:
        st = os.stat(graph_path(path))
        stamp = (st.st_mtime_ns, st.st_size, int(getattr(index, "generation", 0)))
    except OSError:
        return None
    with _LOCK:
        got = _CACHE.get(key)
        if got is None or got[0] != stamp:
            got = (stamp, MatchGraph.load(path))
            _CACHE[key] = got
    return got[1]


__all__ = ["GRAPH_FILE", "BoundGraph", "MatchGraph", "graph_for", "graph_path", "index_id", "live_weights", "missing",
           "rows_for", "stale"]
