"""Spatially verified query expansion (Chum et al., "Total Recall", ICCV 2007).

A first search finds the photos that share the query's view; the hard
positives (the far side, night, a crop) share little with the query itself
but much with those photos. So the results the engine is already sure of
(confidence at or above the threshold) lend the query their features: each
such photo's keypoints are mapped into the query's frame by the inverse of
its verified model, and those that land inside the query photo (as many in
all as the query has keypoints) search again. Their new candidates are
verified against them, so every correspondence still lies in the query's
frame. A query whose best result is below the threshold is never
expanded, and neither is one whose best result is below it while a lower one
is above: a photo of a place the database does not hold stays "no match".

The final ranking keeps the first round's confident results first, in their
order, then every other photo by its better round (inliers, then votes). The
second round leaves the expanding photos out, so its candidates are new ones.
"""

from __future__ import annotations

import numpy as np

from delf.features import Features
from verify.rerank import Answer, rank_key


def expansion_sources(answer: Answer, top: int) -> list:
    """The confident results (at or above the answer's threshold, with a model) that may expand it;
    none unless the answer is a match. Results are ranked by inliers, and a lower-ranked one can be
    more confident than the best: expanding from it would put it first and turn a "no match" into a
    match (measured: one of the 202 not-a-match queries against Oxford)."""
    if top <= 0 or not answer.match:
        return []
    return [r for r in answer.results
            if r.verification is not None and r.verification.model is not None
            and r.confidence >= answer.threshold][:top]


def expanded_features(index, feats: Features, sources: list, budget: int | None = None) -> Features:
    """The expansion of a query: for each source result, its photo's keypoints
    that its verified model (query -> photo) maps back inside the query photo,
    located there. At most ``budget`` of them (default: as many as the query
    has), shared equally by the sources in the order the photo stores them
    (the extractor's, best first), so that the second search costs about what
    the first did. The query's own features are not repeated: they searched
    already."""
    w, h = feats.image_size
    budget = len(feats) if budget is None else int(budget)
    share = budget // max(len(sources), 1)
    locs, descs = [], []
    for r in sources:
        xy, desc = index.photo_features(r.name)
        try:
            back = np.linalg.inv(np.asarray(r.verification.model, np.float64))
        except np.linalg.LinAlgError:
            continue
        p = np.c_[xy.astype(np.float64), np.ones(len(xy))] @ back.T
        with np.errstate(divide="ignore", invalid="ignore"):
            q = p[:, :2] / p[:, 2:3]
        inside = np.isfinite(q).all(axis=1) & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) \
            & (q[:, 1] <= h - 1)
        keep = np.flatnonzero(inside)[:share]
        locs.append(q[keep].astype(np.float32))
        descs.append(desc[keep])
    n = sum(len(x) for x in locs)
    dim = feats.descriptors.shape[1]
    return Features(np.concatenate(locs) if locs else np.zeros((0, 2), np.float32),
                    np.concatenate(descs) if descs else np.zeros((0, dim), np.float32),
                    np.ones(n, np.float32), np.ones(n, np.float32), (w, h))


def merge(first: Answer, second: Answer, sources: list) -> Answer:
    """One answer from both rounds (see the module's doc)."""
    confident = [r for r in first.results if r.confidence >= first.threshold]
    head = {r.name for r in confident}
    best = {}
    for r in list(first.results) + list(second.results):
        if r.name in head:
            continue
        old = best.get(r.name)
        if old is None or (r.inliers, r.votes) > (old.inliers, old.votes):
            best[r.name] = r
    rest = list(best.values())
    order = rank_key(np.array([r.inliers for r in rest], np.int64), np.array([r.votes for r in rest], np.int64),
                     np.array([r.score for r in rest], np.float64)) if rest else []
    return Answer(query=first.query, results=confident + [rest[i] for i in order], threshold=first.threshold,
                  verify_ms=first.verify_ms + second.verify_ms, search_ms=first.search_ms + second.search_ms,
                  n_query=first.n_query, expanded_from=[r.name for r in sources])


def expand(index, feats: Features, answer: Answer, search, top: int) -> tuple[Answer, Features | None]:
    """(the expanded answer, the expanded query's features), or (``answer``, None)
    when no result is confident enough. ``search(features, exclude) -> Answer``
    runs the second round with the first round's settings; the sources are
    left out of it (they are verified already, and would fill its candidates
    with themselves), so that its candidates are new photos."""
    sources = expansion_sources(answer, top)
    if not sources:
        return answer, None
    ef = expanded_features(index, feats, sources)
    if not len(ef):
        return answer, None
    return merge(answer, search(ef, [r.name for r in sources]), sources), ef


__all__ = ["expand", "expanded_features", "expansion_sources", "merge"]
