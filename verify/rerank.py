"""Geometric re-ranking of a query's candidates, with a calibrated confidence.

Input is what a search returns (``index.Candidates`` or any object with the
same arrays: names, votes, scores, image_sizes, offsets, query_xy, db_xy,
distances); nothing here imports the index.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from .confidence import Calibration, context, distortion, graph_context, scale_change
from .estimate import RansacConf, Verification, ransac_many


@dataclass(frozen=True)
class RerankConf:
    """verify_top: candidates verified (the rest keep their vote order after them).
    ransac: the verification settings (DELF's: affine, 20 px).
    seed: one seed for the whole query; candidate i uses ``pair_seed(seed, i)``.
    border: correspondences whose two points both lie within this many pixels
    of their photo's edge are left out of verification (0: keep all). Keypoints
    on the edge come from feature-map cells whose receptive field is mostly the
    CNN's zero padding: their descriptors describe "an image edge" and match
    the edge of any other photo at the same place, so two unrelated photos of
    one size verified an identity transform with 40 such "inliers". README,
    `delf calibrate`, has the measurements on non-Oxford photos."""

    verify_top: int = 100
    ransac: RansacConf = field(default_factory=RansacConf)
    seed: int = 0
    border: float = 16.0

    def __post_init__(self):
        if isinstance(self.verify_top, bool) or not isinstance(self.verify_top, int) or self.verify_top < 0:
            raise ValueError(f"verify_top must be a non-negative integer, got {self.verify_top!r}")
        if not (isinstance(self.border, (int, float)) and not isinstance(self.border, bool)
                and np.isfinite(self.border) and self.border >= 0):
            raise ValueError(f"border must be a finite number of pixels >= 0, got {self.border!r}")


@dataclass
class Result:
    """One database photo in a query's answer."""

    name: str
    votes: int
    score: float  # summed vote weight (the search's ranking key)
    vote_rank: int  # 0-based rank before verification
    putative: int  # putative correspondences verified (RerankConf.border leaves some out)
    inliers: int  # -1: not verified (beyond verify_top)
    spread: float
    unique_inliers: int  # inliers counted once per distinct query and database location (what the confidence uses)
    confidence: float
    other_place: int = 0  # unique inliers of the strongest other result of another place (verify.confidence.context)
    same_place: int = 0  # unique inliers of the strongest other result of the same place
    distortion: float = 0.0  # of the fitted model (verify.confidence.distortion)
    scale_change: float = 0.0  # of the fitted model (verify.confidence.scale_change)
    verification: Verification | None = None
    label: str | None = None
    query_xy: np.ndarray | None = field(default=None, repr=False)  # putative correspondences (for drawing)
    db_xy: np.ndarray | None = field(default=None, repr=False)
    via: str | None = None  # ranked by diffusion over the match graph from this result (engine.diffusion)

    @property
    def verified(self) -> bool:
        return self.inliers >= 0

    def to_dict(self) -> dict:
        d = {
            "name": self.name, "inliers": int(self.inliers), "votes": int(self.votes),
            "score": round(float(self.score), 4), "confidence": round(float(self.confidence), 4),
            "unique_inliers": int(self.unique_inliers), "spread": round(float(self.spread), 4),
            "putative": int(self.putative),
            "vote_rank": int(self.vote_rank),
        }
        if self.verified:
            d.update(other_place=int(self.other_place), same_place=int(self.same_place),
                     distortion=round(float(self.distortion), 4), scale_change=round(float(self.scale_change), 4))
        if self.label is not None:
            d["label"] = self.label
        if self.via is not None:
            d["via"] = self.via
        if self.verification is not None and self.verification.model is not None:
            d["model"] = np.round(self.verification.model, 6).tolist()
        return d


@dataclass
class Answer:
    """A query's ranked results and its match / no-match decision."""

    query: str
    results: list  # of Result, best first
    threshold: float
    verify_ms: float = 0.0
    search_ms: float = 0.0
    n_query: int = 0
    expanded_from: list = field(default_factory=list)  # confident results whose features searched again

    @property
    def best(self) -> Result | None:
        return self.results[0] if self.results else None

    @property
    def match(self) -> bool:
        b = self.best
        return b is not None and b.confidence >= self.threshold

    @property
    def confidence(self) -> float:
        return float(self.best.confidence) if self.results else 0.0

    @property
    def label(self) -> str | None:
        """Landmark recognition: the best result's label when the answer is a match, else None."""
        return self.best.label if self.match else None

    def matches(self) -> list:
        """Every result at or above the threshold (best first)."""
        return [r for r in self.results if r.confidence >= self.threshold]

    def to_dict(self, top: int | None = None, labelled: bool = False) -> dict:
        """The answer as JSON (``delf search --json``, ``POST /search``); ``labelled``: with the landmark
        recognition fields ``predicted_label`` (``.label``) and ``label_confidence``."""
        res = self.results if top is None else self.results[:top]
        d = {
            "query": self.query, "decision": "match" if self.match else "no match",
            "confidence": round(self.confidence, 4), "threshold": self.threshold,
            "n_query_features": int(self.n_query),
            "timing_ms": {"search": round(self.search_ms, 3), "verify": round(self.verify_ms, 3)},
            "results": [r.to_dict() for r in res],
        }
        if self.expanded_from:
            d["expanded_from"] = list(self.expanded_from)
        if labelled:
            d["predicted_label"], d["label_confidence"] = self.label, round(self.confidence, 4)
        return d


def unique_inliers(query_xy, db_xy, inliers) -> int:
    """Inliers counted once per distinct location on each side (the smaller
    count): several query keypoints (other pyramid levels, neighbouring cells)
    matched to one database keypoint are one piece of evidence, not many."""
    m = np.asarray(inliers, bool)
    if not m.any():
        return 0
    q = np.unique(np.round(np.asarray(query_xy)[m]), axis=0)
    d = np.unique(np.round(np.asarray(db_xy)[m]), axis=0)
    return int(min(len(q), len(d)))


def near_border(xy, sizes, margin: float) -> np.ndarray:
    """bool (N,): points (N, 2) within ``margin`` pixels of the edge of their
    photo; ``sizes`` is one (width, height) or one per point (N, 2)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    wh = np.broadcast_to(np.asarray(sizes, np.float64).reshape(-1, 2), xy.shape)
    return ((xy[:, 0] < margin) | (xy[:, 1] < margin)
            | (xy[:, 0] > wh[:, 0] - 1 - margin) | (xy[:, 1] > wh[:, 1] - 1 - margin))


def border_pairs(query_xy, query_size, db_xy, db_sizes, margin: float) -> np.ndarray:
    """bool (N,): correspondences whose query point and database point both lie
    within ``margin`` pixels of their photo's edge (see ``RerankConf.border``).
    A photo size of None counts as unknown: nothing is near its edge."""
    n = len(np.asarray(query_xy).reshape(-1, 2))
    if margin <= 0 or query_size is None or db_sizes is None or n == 0:
        return np.zeros(n, bool)
    return near_border(query_xy, query_size, margin) & near_border(db_xy, db_sizes, margin)


def with_left_out(v: Verification, keep: np.ndarray) -> Verification:
    """``v`` (verified on the correspondences where ``keep`` is True) with its
    inlier mask over all of them: the left-out ones are outliers."""
    keep = np.asarray(keep, bool)
    if keep.all():
        return v
    mask = np.zeros(len(keep), bool)
    mask[keep] = v.inliers
    return dataclasses.replace(v, inliers=mask)


def rank_key(inliers: np.ndarray, votes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Order (best first) by inliers, then votes, then vote weight, then the
    given order (stable): unverified candidates carry inliers -1 and so come
    after every verified one, in their vote order."""
    return np.lexsort((np.arange(len(inliers)), -np.asarray(scores, np.float64),
                       -np.asarray(votes, np.int64), -np.asarray(inliers, np.int64)))


def rerank(cands, query_size=None, conf: RerankConf | None = None, calibration: Calibration | None = None,
           threshold: float | None = None, query: str = "", graph=None) -> Answer:
    """Verify the first ``conf.verify_top`` candidates in parallel, rank all of
    them by (inliers, votes), and give each a confidence. ``graph``: the
    database's match graph (anything with ``same_place(names)`` -> (N, N)
    bool), which a version 3 calibration reads "same place" from; without it
    no two candidates count as one place (every other one is another place)."""
    conf = conf or RerankConf()
    calibration = calibration or Calibration.load()
    threshold = calibration.threshold if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    m = len(cands.votes)
    n_ver = min(conf.verify_top, m)
    offsets = np.asarray(cands.offsets, np.int64)
    putative = np.diff(offsets).astype(np.int64)
    t0 = time.perf_counter()
    ver: list = []
    if n_ver:
        end = int(offsets[n_ver])
        q_xy = np.asarray(cands.query_xy[:end])
        d_xy = np.asarray(cands.db_xy[:end])
        sizes = np.asarray(cands.image_sizes)[:n_ver]
        owner = np.repeat(np.arange(n_ver), putative[:n_ver])
        keep = ~border_pairs(q_xy, query_size, d_xy, sizes[owner], conf.border)
        used = np.bincount(owner[keep], minlength=n_ver).astype(np.int64)
        offs = np.zeros(n_ver + 1, np.int64)
        np.cumsum(used, out=offs[1:])
        # Best matches first for PROSAC: a smaller descriptor distance is a better match.
        quality = -np.asarray(cands.distances[:end], np.float64)[keep]
        ver = ransac_many(q_xy[keep], d_xy[keep], offs, seed=conf.seed, quality=quality, src_size=query_size,
                          dst_size=[tuple(s) for s in sizes], conf=conf.ransac)
        ver = [with_left_out(v, keep[offsets[i]:offsets[i + 1]]) for i, v in enumerate(ver)]
        putative[:n_ver] = used
    verify_ms = (time.perf_counter() - t0) * 1000
    inliers = np.full(m, -1, np.int64)
    spread = np.zeros(m)
    inliers[:n_ver] = [v.num_inliers for v in ver]
    spread[:n_ver] = [v.spread for v in ver]
    uniq = np.zeros(m, np.int64)
    for i, v in enumerate(ver):
        s = slice(int(offsets[i]), int(offsets[i + 1]))
        uniq[i] = unique_inliers(cands.query_xy[s], cands.db_xy[s], v.inliers)
    # The context of each verified candidate: the strongest other candidates of another place and of its own.
    other = np.zeros(m, np.int64)
    same = np.zeros(m, np.int64)
    dist = np.zeros(m)
    scale = np.zeros(m)
    if n_ver:
        if calibration.uses_graph:
            names = list(cands.names[:n_ver])
            linked = graph.same_place(names) if graph is not None else np.zeros((n_ver, n_ver), bool)
            o, sp = graph_context(uniq[:n_ver], linked, calibration.support_min)
        else:
            qpts = [np.asarray(cands.query_xy[offsets[i]:offsets[i + 1]])[v.inliers] for i, v in enumerate(ver)]
            o, sp = context(uniq[:n_ver], qpts)
        other[:n_ver], same[:n_ver] = o, sp
        dist[:n_ver] = [distortion(v.model) for v in ver]
        scale[:n_ver] = [scale_change(v.model) for v in ver]
    conf_v = np.zeros(m)
    if n_ver:
        conf_v[:n_ver] = calibration.confidence(uniq[:n_ver], putative[:n_ver], spread[:n_ver], other[:n_ver],
                                                same[:n_ver], dist[:n_ver], scale[:n_ver])
    order = rank_key(inliers, cands.votes, cands.scores)
    if n_ver and calibration.uses_context:
        # No result is more confident than the answer's best: a lower photo above the threshold while the
        # best is below it would make a "no match" answer list a match (a version 1 model scores each
        # candidate on its own, as it always did).
        conf_v = np.minimum(conf_v, conf_v[order[0]])
    results = [
        Result(name=cands.names[i], votes=int(cands.votes[i]), score=float(cands.scores[i]), vote_rank=int(i),
               putative=int(putative[i]), inliers=int(inliers[i]), spread=float(spread[i]),
               unique_inliers=int(uniq[i]), other_place=int(other[i]), same_place=int(same[i]),
               distortion=float(dist[i]), scale_change=float(scale[i]), confidence=float(conf_v[i]), verification=ver[i] if i < n_ver else None,
               query_xy=cands.query_xy[offsets[i]:offsets[i + 1]], db_xy=cands.db_xy[offsets[i]:offsets[i + 1]])
        for i in order
    ]
    return Answer(query=query, results=results, threshold=threshold, verify_ms=verify_ms,
                  n_query=int(getattr(cands, "n_query", 0)))


__all__ = ["Answer", "RerankConf", "Result", "border_pairs", "near_border", "rank_key", "rerank", "unique_inliers",
           "with_left_out"]
