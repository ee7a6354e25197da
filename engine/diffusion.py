"""Diffusion over the database's match graph: a query's verified results
lend their standing to the database photos they are linked to.

A hard positive (the far side of a building, night, a crop) often shares too
little with the query to be found or verified, but it verified against
another photo of its place when it was indexed (engine.graph). Each verified
result with at least ``min_source`` unique inliers is a source; every photo
linked to a source (a graph row the pair model calls a match) is ranked by
the strongest path to it, min(source's inliers, link's unique inliers), the
max-min path of graph traversal, when that is above its own inliers. Photos
reached this way that were not among the candidates join the ranking (not
verified against the query: confidence 0, ``Result.via`` names the source).
A path is never stronger than its source, so nothing passes the best result
and the answer's match / no match decision does not change. Photos left out
of the search (``exclude``) and their rows are not walked.
"""

from __future__ import annotations

import dataclasses

from verify.rerank import Answer, Result

# The unique inliers a result needs to lend its standing (EngineConf.diffuse; an affine fit takes 3 points).
MIN_SOURCE = 3


def diffuse(answer: Answer, weights: dict, exclude=(), min_source: int = MIN_SOURCE) -> Answer:
    """``answer`` re-ranked by one step of diffusion over ``weights``
    ({photo: {linked photo: link's unique inliers}}, ``MatchGraph.weights``)."""
    if not answer.results or not weights:
        return answer
    skip = set(exclude)
    key = {r.name: r.inliers for r in answer.results}
    via: dict = {}
    for r in answer.results:
        if not r.verified or r.unique_inliers < min_source or r.name in skip:
            continue
        for d, w in weights.get(r.name, {}).items():
            if d in skip:
                continue
            p = min(r.inliers, w)
            if p > key.get(d, -1):
                key[d] = p
                via[d] = r.name
    if not via:
        return answer
    have = {r.name for r in answer.results}
    results = [dataclasses.replace(r, via=via[r.name]) if r.name in via else r for r in answer.results]
    results += [Result(name=d, votes=0, score=0.0, vote_rank=-1, putative=0, inliers=-1, spread=0.0,
                       unique_inliers=0, confidence=0.0, via=via[d]) for d in sorted(via) if d not in have]
    # Stable: ties keep the old order, and a photo already in the answer before one the graph brought.
    order = sorted(range(len(results)), key=lambda i: (-key[results[i].name], i))
    return dataclasses.replace(answer, results=[results[i] for i in order])


__all__ = ["MIN_SOURCE", "diffuse"]
