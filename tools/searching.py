"""The engine's main job, shared by `delf search`, `delf evaluate`, `delf
calibrate`, `delf demo` and `delf collection`: a query's features -> index
candidates -> parallel verification -> ranked results with a confidence ->
match / no match (and a landmark label when the database photos carry one).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field


from verify.confidence import Calibration
from verify.rerank import Answer, RerankConf, rerank


# Annoy's search_k when a search is re-ranked (index.SearchConf's own default,
# 2000, serves a vote-only ranking). Verification re-ranks the top 100 anyway:
# on the 268 non-Oxford calibration photos (leave-one-out, 269k descriptors)
# search_k 2000 / 1000 / 700 gave the same top-1 accuracy (0.896 / 0.896 /
# 0.899) at 396 / 257 / 219 ms per query; README, "Search".
SEARCH_K = 1000


def default_search_conf(verify_top: int = 100):
    """The index search of a re-ranked query: the top ``verify_top`` photos at SEARCH_K."""
    from index import SearchConf

    return SearchConf(top_n=max(int(verify_top), 1), search_k=SEARCH_K)


@dataclass
class SearchSettings:
    """search: index.SearchConf (None: default_search_conf(verify_top), search_k SEARCH_K).
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
                 labels: dict | None = None, query_conf=None) -> Answer:
    """Search ``index`` with one query's Features, verify and rank its
    candidates. Photos named in ``exclude`` (e.g. the query itself when it is
    in the index) are searched as if they were not in the index."""
    s = settings or SearchSettings()
    if s.search is None or s.calibration is None or s.threshold is None:
        s = s.resolved()
    t0 = time.perf_counter()
    cands = index.search(feats, s.search, query_conf=query_conf, exclude=exclude)
    search_ms = (time.perf_counter() - t0) * 1000
    ans = rerank(cands, query_size=tuple(feats.image_size), conf=s.rerank, calibration=s.calibration,
                 threshold=s.threshold, query=name)
    ans.search_ms = search_ms
    if labels:
        for r in ans.results:
            r.label = labels.get(r.name)
    return ans


def predicted_label(answer: Answer) -> tuple[str | None, float]:
    """Landmark recognition: the label of the best result when the answer is
    a match (its confidence), else (None, confidence of the best result)."""
    b = answer.best
    if b is None:
        return None, 0.0
    return (b.label if answer.match else None), float(b.confidence)


def read_labels_csv(path: str) -> list:
    """The rows of a labels CSV (header first), checked to hold a header and rows of two or more columns."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such labels file")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(f"{path}: a labels CSV needs a header and rows of at least two columns (photo, label)")
    return rows


def load_labels(path: str) -> dict:
    """A CSV with a header; the first column names a photo (as in the index),
    the second its label (e.g. `image,scene`). Returns {name: label}; a name
    is also reachable by its basename when that is unambiguous."""
    rows = read_labels_csv(path)
    labels = {}
    for i, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {i}: expected photo,label, got {','.join(row)!r}")
        labels[row[0].strip()] = row[1].strip()
    return labels


def labels_for(names, labels: dict) -> dict:
    """Map index photo names to labels, matching a labels file that names
    photos by basename or by a path suffix."""
    out = {}
    by_base: dict = {}
    for k, v in labels.items():
        by_base.setdefault(os.path.basename(k), set()).add(v)
    for n in names:
        if n in labels:
            out[n] = labels[n]
        else:
            cand = by_base.get(os.path.basename(n))
            if cand and len(cand) == 1:
                out[n] = next(iter(cand))
    return out


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
    from delf.image import ImageError, list_images

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
                yield name, None, f"{path}: {getattr(exc, 'problem', None) or exc}", None


__all__ = ["SearchSettings", "answer_query", "conf_from_resolved", "labels_for", "load_labels", "predicted_label", "query_items"]
