"""The engine's main job, shared by `delf search`, `delf evaluate`, `delf
calibrate`, `delf demo` and `delf collection`: a query's features -> index
candidates -> parallel verification -> ranked results with a confidence ->
match / no match (and a landmark label when the database photos carry one).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from index import SearchConf
from verify.confidence import Calibration
from verify.rerank import Answer, RerankConf, rerank


def default_search_conf(verify_top: int = 100) -> SearchConf:
    """The index search of a re-ranked query: the top ``verify_top`` photos (search_k: SearchConf's default)."""
    return SearchConf(top_n=max(int(verify_top), 1))


@dataclass
class SearchSettings:
    """search: index.SearchConf (None: default_search_conf(verify_top)).
    rerank: verification settings (verify_top candidates, RANSAC, seed).
    calibration: the confidence model (None: the shipped one).
    threshold: decision threshold (None: the calibration's default)."""

    search: object = None
    rerank: RerankConf = field(default_factory=RerankConf)
    calibration: Calibration | None = None
    threshold: float | None = None

    def resolved(self) -> "SearchSettings":
        cal = self.calibration or Calibration.load()
        search = self.search or default_search_conf(self.rerank.verify_top)
        return SearchSettings(search, self.rerank, cal, cal.threshold if self.threshold is None else self.threshold)


def answer_query(index, feats, name: str = "", settings: SearchSettings | None = None, exclude=(),
                 labels: dict | None = None, query_conf=None, expand: int = 0, diffuse: int = 0) -> Answer:
    """Search ``index`` with one query's Features, verify and rank its
    candidates. Photos named in ``exclude`` (e.g. the query itself when it is
    in the index) are searched as if they were not in the index. ``expand``:
    up to this many confident results expand the query for a second search
    (engine.expansion). ``diffuse``: results with at least this many unique
    inliers lend their standing to the photos linked to them in the index's
    match graph (engine.diffusion; 0 or no graph: off)."""
    return search_query(index, feats, name, settings, exclude, labels, query_conf, expand, diffuse)[0]


def search_query(index, feats, name: str = "", settings: SearchSettings | None = None, exclude=(),
                 labels: dict | None = None, query_conf=None, expand: int = 0, diffuse: int = 0):
    """``answer_query``, also returning the features that searched last (the
    expanded query when the answer was expanded, else ``feats``)."""
    from .expansion import expand as expand_answer

    s = settings or SearchSettings()
    if s.search is None or s.calibration is None or s.threshold is None:
        s = s.resolved()
    if not (np.isfinite(feats.descriptors).all() and np.isfinite(feats.locations).all()):
        raise ValueError(f"{name or 'query'}: its features hold NaN or infinite values; re-extract the photo")

    from .graph import graph_for

    graph = graph_for(index, s.calibration)  # a version 3 calibration reads "same place" from it

    def once(f, qconf, also_exclude=()):
        t0 = time.perf_counter()
        cands = index.search(f, s.search, query_conf=qconf, exclude=list(exclude) + list(also_exclude))
        search_ms = (time.perf_counter() - t0) * 1000
        ans = rerank(cands, query_size=tuple(f.image_size), conf=s.rerank, calibration=s.calibration,
                     threshold=s.threshold, query=name, graph=graph)
        ans.search_ms = search_ms
        return ans

    ans = once(feats, query_conf)
    last = feats
    if expand:
        ans, ef = expand_answer(index, feats, ans, lambda f, sources: once(f, None, sources), expand)
        last = ef if ef is not None else feats
    if diffuse:
        from .diffusion import diffuse as diffuse_answer
        from .graph import live_weights

        ans = diffuse_answer(ans, live_weights(index, s.calibration.pair_model), exclude, int(diffuse))
    if labels:
        for r in ans.results:
            r.label = labels.get(r.name)
    return ans, last


def draw_result(query_image, db_image, query: str, result):
    """Picture (RGB uint8) of a verified result's inliers: the query (a path or
    an RGB array) left, the database photo right, the inliers joined; None
    when the result was not verified or has no model."""
    from verify.draw import draw_matches

    v = result.verification
    if v is None or v.model is None:
        return None
    return draw_matches(query_image, db_image, result.query_xy, result.db_xy, inliers=v.inliers,
                        title=f"{query} -> {result.name}: {result.inliers} inliers, confidence {result.confidence:.3f}")


def conf_from_resolved(d: dict):
    """The ExtractorConf behind a resolved conf (as an index or features file records it)."""
    import dataclasses

    from delf.conf import ExtractorConf

    known = {f.name for f in dataclasses.fields(ExtractorConf)}
    return ExtractorConf.from_dict({k: v for k, v in dict(d).items() if k in known})


def query_items(inputs, extractor_factory):
    """(name, Features or None, error) per query: photos are extracted with
    the extractor that ``extractor_factory()`` returns (made on first need);
    .h5/.hdf5 files give every photo they hold. A bad photo yields its error
    instead of stopping the batch."""
    from delf.featio import FeatureFile
    from delf.image import ImageError, list_images, problem_of

    extractor = None
    for item in inputs:
        item = os.fspath(item)
        if item.lower().endswith((".h5", ".hdf5")):
            with FeatureFile(item) as ff:
                for name, feats in ff.items():
                    yield name, feats, None, ff.conf
            continue
        for path, name in list_images([item]):
            if extractor is None:
                extractor = extractor_factory()
            try:
                yield name, extractor.extract(path), None, extractor.resolved_conf()
            except (ImageError, FileNotFoundError) as exc:
                yield name, None, f"{path}: {problem_of(exc, path)}", None


def format_answer(ans: Answer, top: int) -> list[str]:
    """The lines `delf search` prints for one answer: the verdict, then a table of the top results."""
    with_label = any(r.label is not None for r in ans.results)
    lab = f"  label: {ans.label if ans.label is not None else '-'}" if with_label else ""
    lines = [f"{ans.query}: {'MATCH' if ans.match else 'no match'} (confidence {ans.confidence:.3f}, "
             f"threshold {ans.threshold:g}){lab}"]
    if ans.results:
        lines.append(f"  {'rank':>4}  {'confidence':>10}  {'inliers':>7}  {'unique':>6}  {'votes':>5}  {'spread':>6}  "
                     f"{'label  ' if with_label else ''}photo")
        for i, r in enumerate(ans.results[:top], start=1):
            inl = str(r.inliers) if r.verified else "-"
            mark = "*" if r.confidence >= ans.threshold else " "
            rlab = f"{(r.label or '-'):<6} " if with_label else ""
            uniq = str(r.unique_inliers) if r.verified else "-"
            via = f"  (via {r.via})" if r.via is not None else ""
            lines.append(f"  {i:>4}  {r.confidence:>9.3f}{mark}  {inl:>7}  {uniq:>6}  {r.votes:>5}  {r.spread:>6.3f}  "
                         f"{rlab}{r.name}{via}")
    return lines


__all__ = ["SearchSettings", "answer_query", "conf_from_resolved", "default_search_conf", "draw_result", "format_answer",
           "query_items", "search_query"]
