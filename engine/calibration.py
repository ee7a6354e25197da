"""Fitting the confidence on labelled photos (`delf calibrate`).

Every labelled photo queries an index of all the others twice, exactly as
`delf search` would:

1. itself left out: its verified candidates become training examples for the
   logistic confidence, labelled 1 when the candidate carries the query's label;
2. its whole place left out (every photo of its label): a query of a place the
   database does not hold, which is what a "no match" answer is for. Every
   candidate is then of another place, and they score higher than the wrong
   candidates of the first search do, because the photos of the query's own
   place no longer take the nearest-neighbour slots of its descriptors (on
   the shipped calibration photos, 186 of 268 queries met a more confident wrong
   photo this way). The default threshold is set on these searches: the lowest
   at which at most ``MAX_FALSE_ACCEPT_RATE`` of them would answer "match".

The logistic confidence is fitted on the result that decides each answer:
the best result of every search of both kinds (matching when it carries the
query's label; the best of a not-a-match search never does). Its context
features (the margin over the strongest other place, the support of a second
photo of the same place) only mean something for the result an answer is
judged by; fitting every candidate instead weighs mostly the weak tail of
each answer. ``cross_validate`` measures the whole procedure (fit and
threshold) with places held out: no place is in both folds.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import tempfile
from dataclasses import dataclass

import numpy as np

from common.labels import LabelledPhoto, labelled_photos
from verify.confidence import (FEATURES, FEATURES_V2, SUPPORT_MIN_INLIERS, VERSION_FEATURES, Calibration,
                               feature_matrix, fit_logistic, graph_context)

NEUTRAL = Calibration(coef=(1.0,) + (0.0,) * (len(FEATURES_V2) - 1), intercept=0.0, mean=(0.0,) * len(FEATURES_V2),
                      scale=(1.0,) * len(FEATURES_V2), min_inliers=0)
# The examples weigh known and unknown places about equally, so the threshold
# the 1% rule sets can lie below 0.5; below this floor it is not set.
THRESHOLD_FLOOR = 0.2
# A version 1 model (every candidate an example) keeps its old floor.
THRESHOLD_FLOOR_V1 = 0.5
THRESHOLD_STEP = 0.01
# Calibration labels are noisy at the edges (WxBS pairs of one room or one city under different names):
# the default threshold lets at most 1% of calibration queries accept a photo of another label.
MAX_FALSE_ACCEPT_RATE = 0.01
# The putative count and inlier ratio mostly tell which data set a photo comes from, not whether it matches
# (chosen by cross-validation over places on the non-Oxford photos: docs/results.md#calibration).
USE = ("log_inliers", "spread", "log_margin", "log_support", "distortion")
USE_V1 = ("log_inliers", "spread")
# Version 3 reads the margin and support from the database's match graph; its fit on the ~500 decisive
# results is regularised less than the others (chosen by cross-validation over places, docs/results.md).
USE_V3 = ("log_inliers", "spread", "log_margin", "log_support")
L2_V3 = 1e-3
# Version 4 is version 1 plus the fitted model's scale change, fitted on every candidate of the first searches
# and the best result of each not-a-match search (chosen by cross-validation over places on the non-Oxford
# photos, docs/results.md#confidence-version-4).
USE_V4 = ("log_inliers", "spread", "scale_change")
# The model `delf calibrate` fits unless told otherwise: version 1 (the shipped default). Versions 2, 3 and 4
# met the cross-validated targets on the non-Oxford photos but accepted photos of other places on Oxford
# (5, 3 and 2 of 202; docs/results.md#confidence-version-4).
DEFAULT_VERSION = 1
CV_FOLDS = 5
EXAMPLES_VERSION = 4


def shared_data_photos(data: str) -> list[LabelledPhoto]:
    """The non-Oxford labelled photos of the shared data folder: landmarks/ (scene),
    ukbench/ (object) and wxbs/ (each pair its own place). Names are relative to ``data``."""
    out: list[LabelledPhoto] = []
    for sub, col in (("landmarks", "scene"), ("ukbench", "object")):
        out += labelled_photos(os.path.join(data, sub), os.path.join(data, sub, "labels.csv"), prefix=sub,
                               column=col)
    wx = os.path.join(data, "wxbs")
    if not os.path.isdir(wx):
        raise FileNotFoundError(f"{wx}: no such folder (expected the WxBS pairs)")
    for pair in sorted(glob.glob(os.path.join(wx, "*", "*"))):
        if not os.path.isdir(pair):
            continue
        rel = os.path.relpath(pair, data).replace(os.sep, "/")
        # One place may appear in several WxBS categories (kyiv) or as a second pair (lab, lab2).
        place = "wxbs:" + re.sub(r"\d+$", "", os.path.basename(pair))
        for fn in ("01.jpg", "02.jpg"):
            p = os.path.join(pair, fn)
            if os.path.isfile(p):
                out.append(LabelledPhoto(p, f"{rel}/{fn}", place))
    return out


@dataclass
class CalibrationData:
    x: np.ndarray  # (N, len(FEATURES)) features of verified candidates
    y: np.ndarray  # (N,) 1 = same label
    inliers: np.ndarray  # (N,)
    query: np.ndarray  # (N,) query row of each example
    n_queries: int
    # The not-a-match searches (each query's place left out): features, inliers
    # and query row of their verified candidates, all of other places. Empty
    # when not collected; the threshold then falls back to the wrong candidates above.
    null_x: np.ndarray | None = None
    null_inliers: np.ndarray | None = None
    null_query: np.ndarray | None = None
    null_queries: int = 0  # queries searched with their place left out
    best: np.ndarray | None = None  # (N,) bool: the example is its answer's best result
    null_best: np.ndarray | None = None
    query_labels: np.ndarray | None = None  # (n_queries,) the place of each query row (cross-validation)
    # The photo of each example and each query row, for the match graph of version 3 (None: not recorded).
    names: np.ndarray | None = None
    null_names: np.ndarray | None = None
    query_names: np.ndarray | None = None

    def __post_init__(self):
        if self.best is None:  # every example decides its own answer (hand-made examples)
            self.best = np.ones(len(self.y), bool)
        if self.null_x is not None and self.null_best is None:
            self.null_best = np.ones(len(self.null_x), bool)

    @property
    def has_null(self) -> bool:
        return self.null_queries > 0 and self.null_x is not None

    def save(self, path: str) -> None:
        from common.files import atomic_write_bytes
        import io

        buf = io.BytesIO()
        empty = np.zeros((0, len(FEATURES)))
        np.savez(buf, x=self.x, y=self.y, inliers=self.inliers, query=self.query, n_queries=self.n_queries,
                 null_x=self.null_x if self.null_x is not None else empty,
                 null_inliers=self.null_inliers if self.null_inliers is not None else np.zeros(0),
                 null_query=self.null_query if self.null_query is not None else np.zeros(0),
                 null_queries=self.null_queries, best=self.best,
                 null_best=self.null_best if self.null_best is not None else np.zeros(0, bool),
                  query_labels=np.asarray(self.query_labels if self.query_labels is not None else [], str),
                 names=np.asarray(self.names if self.names is not None else [], str),
                 null_names=np.asarray(self.null_names if self.null_names is not None else [], str),
                 query_names=np.asarray(self.query_names if self.query_names is not None else [], str),
                 version=EXAMPLES_VERSION)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str) -> "CalibrationData":
        with np.load(path) as z:
            if "version" not in z.files or int(z["version"]) != EXAMPLES_VERSION:
                raise ValueError(f"{path}: calibration examples of an older version; run `delf calibrate` again")
            labels = z["query_labels"]
            opt = {k: (z[k] if len(z[k]) else None) for k in ("names", "null_names", "query_names")}
            return cls(z["x"], z["y"], z["inliers"], z["query"], int(z["n_queries"]), null_x=z["null_x"],
                       null_inliers=z["null_inliers"], null_query=z["null_query"],
                       null_queries=int(z["null_queries"]), best=z["best"].astype(bool),
                       null_best=z["null_best"].astype(bool), query_labels=labels if len(labels) else None, **opt)


def collect(photos: list[LabelledPhoto], features_path: str, work: str, settings, progress: bool = True,
            log=print, not_a_match: bool = True) -> CalibrationData:
    """Query every photo against an index of all of them, itself excluded, and
    (``not_a_match``) again with every photo of its label excluded; gather examples."""
    import shutil

    from tqdm import tqdm

    from delf.featio import FeatureFile
    from index import Index, IndexConf, build_index_from_features

    from .searching import answer_query

    # Collection needs inliers and spread only: any calibration will do while gathering.
    from .searching import SearchSettings, default_search_conf

    settings = SearchSettings(settings.search or default_search_conf(settings.rerank.verify_top),
                              settings.rerank, NEUTRAL, 0.5)
    label = {p.name: p.label for p in photos}
    by_label: dict[str, list[str]] = {}
    for p in photos:
        by_label.setdefault(p.label, []).append(p.name)
    with FeatureFile(features_path) as ff:
        missing = [p.name for p in photos if p.name not in ff]
        if missing:
            raise ValueError(f"{features_path}: no features for {len(missing)} photo(s), e.g. {missing[0]}")
        feats = {p.name: ff[p.name] for p in photos}
        conf = ff.conf
    idx_dir = tempfile.mkdtemp(prefix="calibration-index-", dir=work)
    log(f"indexing {len(feats)} photos in {idx_dir}")
    build_index_from_features(idx_dir, feats.items(), conf, IndexConf(), overwrite=True)
    ex = {"loo": ([], [], [], [], []), "null": ([], [], [], [], [])}  # features, labels, inliers, query rows, best
    cand_names = {"loo": [], "null": []}
    n_null = 0
    with Index(idx_dir) as index:
        for qi, p in enumerate(tqdm(photos, desc="calibrate", unit="query", disable=None if progress else True)):
            searches = [("loo", (p.name,))]
            place = by_label[p.label]
            if not_a_match and len(place) < len(photos):
                searches.append(("null", tuple(place)))
                n_null += 1
            for kind, exclude in searches:
                ans = answer_query(index, feats[p.name], p.name, settings, exclude=exclude)
                rs = [r for r in ans.results if r.verified]
                if not rs:
                    continue
                xs, ys, inl, qs, bs = ex[kind]
                xs.append(result_features(rs))
                ys.append(np.array([label.get(r.name) == p.label for r in rs], np.float64))
                inl.append(np.array([r.unique_inliers for r in rs]))
                qs.append(np.full(len(rs), qi))
                bs.append(np.arange(len(rs)) == 0)
                cand_names[kind] += [r.name for r in rs]
    shutil.rmtree(idx_dir, ignore_errors=True)
    cat = (lambda a, w: np.concatenate(a) if a else np.zeros((0, w)) if w else np.zeros(0))
    xs, ys, inl, qs, bs = ex["loo"]
    nx, ny, ninl, nq, nbs = ex["null"]
    if ny and cat(ny, 0).any():
        raise AssertionError("a search with the query's place left out returned a photo of that place")
    data = CalibrationData(cat(xs, len(FEATURES)), cat(ys, 0), cat(inl, 0), cat(qs, 0), len(photos),
                           cat(nx, len(FEATURES)), cat(ninl, 0), cat(nq, 0), n_null,
                           best=cat(bs, 0).astype(bool), null_best=cat(nbs, 0).astype(bool),
                           query_labels=np.array([p.label for p in photos], str),
                           names=np.array(cand_names["loo"], str), null_names=np.array(cand_names["null"], str),
                           query_names=np.array([p.name for p in photos], str))
    # The examples, to refit without querying again (CalibrationData.load).
    data.save(os.path.join(work, "calibration-examples.npz"))
    return data


def result_features(results) -> np.ndarray:
    """(N, len(FEATURES)) features of verified results (verify.rerank.Result), as ``rerank`` scored them."""
    rs = list(results)
    return feature_matrix([r.unique_inliers for r in rs], [r.putative for r in rs], [r.spread for r in rs],
                          [r.other_place for r in rs], [r.same_place for r in rs], [r.distortion for r in rs],
                          [r.scale_change for r in rs])


def with_graph_context(data: CalibrationData, pair: Calibration,
                       support_min: int = SUPPORT_MIN_INLIERS) -> CalibrationData:
    """The examples with their margin and support read from the match graph
    (``verify.confidence.graph_context``), as a version 3 calibration with
    pair model ``pair`` scores them. The graph is the one the product builds:
    every photo's first search (itself left out) gives its rows, and a row is
    a link when ``pair`` calls it a match. A search's candidates never include
    the photos it left out, so the same graph serves both kinds of search."""
    if data.names is None or data.query_names is None or (data.has_null and data.null_names is None):
        raise ValueError("these calibration examples do not name their photos; run `delf calibrate` again")
    conf = pair.score(data.x, data.inliers) if len(data.x) else np.zeros(0)
    links: dict = {}
    for i in np.flatnonzero(conf >= pair.threshold):
        a, b = str(data.query_names[int(data.query[i])]), str(data.names[i])
        links.setdefault(a, set()).add(b)
        links.setdefault(b, set()).add(a)

    def redo(x, inliers, query, names):
        x = x.copy()
        for q in np.unique(query):
            rows = np.flatnonzero(query == q)
            nm = [str(n) for n in names[rows]]
            same = np.array([[m in links.get(n, ()) for m in nm] for n in nm], bool).reshape(len(nm), len(nm))
            other, sup = graph_context(inliers[rows], same, support_min)
            x[rows, FEATURES.index("log_margin")] = np.log1p(inliers[rows]) - np.log1p(other)
            x[rows, FEATURES.index("log_support")] = np.log1p(sup)
        return x

    out = dataclasses.replace(data, x=redo(data.x, data.inliers, data.query, data.names))
    if data.has_null and len(data.null_x):
        out.null_x = redo(data.null_x, data.null_inliers, data.null_query, data.null_names)
    return out


def fit(data: CalibrationData, min_inliers: int = 5, l2: float | None = None, fitted_on: dict | None = None,
        threshold: float | None = None, max_false_accept_rate: float = MAX_FALSE_ACCEPT_RATE,
        use=None, version: int = DEFAULT_VERSION, pair: Calibration | None = None,
        support_min: int = SUPPORT_MIN_INLIERS) -> tuple[Calibration, dict]:
    """Fit the logistic confidence and choose the default threshold: the
    lowest one (at least THRESHOLD_FLOOR, on a 0.01 grid) at which no more
    than ``max_false_accept_rate`` of the not-a-match searches (each query
    with its place left out; without them, of the queries) would accept a
    photo of another place. Version 2 is fitted on the best result of each
    search with at least ``min_inliers`` (unique) inliers (``decisive``) over
    ``use`` (default USE); version 1, as before, on every candidate of the
    first searches with that many, over log_inliers and spread (floor 0.5).
    Version 3 fits version 1 as its pair model (or takes ``pair``: the
    examples then already carry that model's graph context, as
    ``cross_validate`` prepares them), reads the margin and support from the
    match graph (``with_graph_context``) and fits the best results over
    USE_V3. Version 4 is fitted like version 1, over USE_V4, with the best
    result of each not-a-match search added as a non-matching example.
    Returns the calibration and a report."""
    _check_version(version)
    if version == 3:
        if pair is None:
            pair, _ = fit(data, min_inliers=min_inliers, fitted_on=fitted_on,
                          max_false_accept_rate=max_false_accept_rate, version=1)
            data = with_graph_context(data, pair, support_min)
        use = use or USE_V3
        l2 = L2_V3 if l2 is None else l2
    l2 = 1e-2 if l2 is None else l2
    if version in (1, 4):
        k = data.inliers >= min_inliers
        x, y = data.x[k], data.y[k]
        use, floor = use or (USE_V1 if version == 1 else USE_V4), THRESHOLD_FLOOR_V1
        if version == 4 and data.has_null and len(data.null_x):
            kn = data.null_best & (data.null_inliers >= min_inliers)
            x, y = np.concatenate([x, data.null_x[kn]]), np.concatenate([y, np.zeros(int(kn.sum()))])
    else:
        x, y = decisive(data, min_inliers)
        use, floor = use or USE, THRESHOLD_FLOOR
    if len(y) < 10 or y.sum() < 3 or (1 - y).sum() < 3:
        raise ValueError(f"too few examples with >= {min_inliers} inliers to calibrate "
                         f"({int(y.sum())} matching, {int((1 - y).sum())} not); label more photos")
    if not 0.0 <= max_false_accept_rate < 1.0:
        raise ValueError(f"max_false_accept_rate must be in [0, 1), got {max_false_accept_rate}")
    features = VERSION_FEATURES[version]
    if set(use) - set(features):
        raise ValueError(f"a version {version} model uses only {', '.join(features)}")
    coef, intercept, mean, scale = fit_logistic(x, y, l2=l2, use=use)
    cols = [FEATURES.index(f) for f in features]
    coef, mean, scale = coef[cols], mean[cols], scale[cols]
    cal = Calibration(tuple(coef), intercept, tuple(mean), tuple(scale), threshold=0.5, min_inliers=min_inliers,
                      features=features, fitted_on=dict(fitted_on or {}), pair=pair if version == 3 else None,
                      support_min=support_min)
    keep = data.inliers >= min_inliers
    p_all = np.where(keep, _probs(cal, data.x), 0.0) if len(data.x) else np.zeros(0)
    p_all = capped(cal, p_all, data.query, data.best, data.n_queries)
    neg = data.y == 0
    neg_max = float(p_all[neg].max()) if neg.any() else 0.0
    if threshold is None:
        # Highest wrong-photo confidence of each query, highest first: in the
        # not-a-match searches when there are any, else among the wrong candidates.
        if data.has_null:
            p_null = null_confidences(cal, data)
            rows, n_q = data.null_query.astype(np.int64), data.null_queries
        else:
            p_null, rows, n_q = p_all[neg], data.query[neg].astype(np.int64), data.n_queries
        worst = np.zeros(data.n_queries)
        np.maximum.at(worst, rows, p_null)
        worst = np.sort(worst)[::-1][:n_q]
        allowed = int(math.floor(max_false_accept_rate * n_q))
        bar = worst[allowed] if allowed < len(worst) else 0.0
        threshold = max(floor, math.floor(bar / THRESHOLD_STEP + 1e-9) * THRESHOLD_STEP + THRESHOLD_STEP)
        threshold = min(threshold, 0.995)
    cal = dataclasses.replace(cal, threshold=float(round(threshold, 4)))
    report = report_on(cal, data)
    report["examples_fitted"] = int(len(y))  # report_on counts the decisive results its reliability table reads
    report["max_negative_confidence"] = round(neg_max, 4)
    report["max_false_accept_rate"] = max_false_accept_rate
    return cal, report


def _check_version(version) -> None:
    if version not in VERSION_FEATURES:
        raise ValueError(f"calibration version must be one of {', '.join(map(str, VERSION_FEATURES))}, "
                         f"got {version!r}")


def decisive(data: CalibrationData, min_inliers: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the results that decide their answers: the best result of each
    search (itself left out; its place left out: never matching) with at least
    ``min_inliers`` unique inliers."""
    k = data.best & (data.inliers >= min_inliers)
    xs, ys = [data.x[k]], [data.y[k]]
    if data.has_null and len(data.null_x):
        kn = data.null_best & (data.null_inliers >= min_inliers)
        xs.append(data.null_x[kn])
        ys.append(np.zeros(int(kn.sum())))
    return np.concatenate(xs), np.concatenate(ys)


def subset(data: CalibrationData, queries) -> CalibrationData:
    """The examples of the query rows in ``queries`` only (row numbers are kept)."""
    q = np.zeros(data.n_queries, bool)
    q[np.asarray(list(queries), np.int64)] = True
    k = q[data.query.astype(np.int64)]
    null = {}
    if data.has_null:
        kn = q[data.null_query.astype(np.int64)]
        null = dict(null_x=data.null_x[kn], null_inliers=data.null_inliers[kn], null_query=data.null_query[kn],
                    null_best=data.null_best[kn], null_queries=int(min(q.sum(), data.null_queries)),
                    null_names=data.null_names[kn] if data.null_names is not None else None)
    return CalibrationData(data.x[k], data.y[k], data.inliers[k], data.query[k], data.n_queries, best=data.best[k],
                           query_labels=data.query_labels, names=data.names[k] if data.names is not None else None,
                           query_names=data.query_names, **null)


def place_folds(labels, k: int = CV_FOLDS, seed: int = 0) -> list[np.ndarray]:
    """Query rows split into ``k`` folds by place: every photo of a label in one
    fold; places dealt out largest first (ties in a seeded random order) to the
    fold with the fewest photos so far."""
    labels = np.asarray(labels)
    places, counts = np.unique(labels, return_counts=True)
    if len(places) < k:
        raise ValueError(f"cross-validation over {k} folds needs at least {k} places, got {len(places)}")
    order = np.random.default_rng(seed).permutation(len(places))
    order = order[np.argsort(-counts[order], kind="stable")]
    size = np.zeros(k, np.int64)
    fold_of = {}
    for i in order:
        f = int(np.argmin(size))
        fold_of[places[i]] = f
        size[f] += counts[i]
    return [np.flatnonzero([fold_of[lab] == f for lab in labels]) for f in range(k)]


def cross_validate(data: CalibrationData, k: int = CV_FOLDS, seed: int = 0, **fit_kwargs) -> dict:
    """The whole calibration (fit and threshold rule) measured with places held
    out: for each of ``k`` folds of places, fit on the other folds' queries and
    count, on this fold's, the not-a-match searches that accept a photo and the
    queries whose best result is right that are accepted."""
    if data.query_labels is None or len(data.query_labels) != data.n_queries:
        raise ValueError("cross-validation needs the place of each query (examples from `delf calibrate`)")
    fa = nq = acc = right = 0
    thresholds = []
    version = fit_kwargs.get("version", DEFAULT_VERSION)
    for test in place_folds(data.query_labels, k, seed):
        train = np.setdiff1d(np.arange(data.n_queries), test)
        fold = data
        if version == 3:
            # The pair model is fitted on the training places; the graph is the whole database's (every
            # photo searched it when indexed), its links decided by that pair model.
            kw = {key: v for key, v in fit_kwargs.items() if key in ("min_inliers", "max_false_accept_rate")}
            pair, _ = fit(subset(data, train), version=1, **kw)
            fold = with_graph_context(data, pair, fit_kwargs.get("support_min", SUPPORT_MIN_INLIERS))
            cal, _ = fit(subset(fold, train), pair=pair, **fit_kwargs)
        else:
            cal, _ = fit(subset(fold, train), **fit_kwargs)
        rep = report_on(cal, subset(fold, test))
        thresholds.append(cal.threshold)
        fa += rep.get("not_a_match_queries_accepting", 0)
        nq += rep.get("not_a_match_queries", 0)
        acc += rep["right_best_accepted"]
        right += rep["queries_whose_best_is_right"]
    return {"folds": k, "seed": seed, "thresholds": thresholds,
            "not_a_match_queries": nq, "not_a_match_queries_accepting": fa,
            "false_accept_rate": round(fa / max(nq, 1), 4),
            "queries_whose_best_is_right": right, "right_best_accepted": acc,
            "true_accept_rate": round(acc / max(right, 1), 4)}


def capped(cal: Calibration, p: np.ndarray, query: np.ndarray, best: np.ndarray, n_queries: int) -> np.ndarray:
    """Confidences ``p`` held at or below their answer's best result's, as ``rerank`` holds those of a model
    that reads the context (a version 1 model's are left as they are)."""
    if not cal.uses_context:
        return p
    top = np.zeros(n_queries)
    q = query.astype(np.int64)
    np.maximum.at(top, q[best], p[best])
    return np.minimum(p, top[q])


def _probs(cal: Calibration, x: np.ndarray) -> np.ndarray:
    from verify.confidence import _sigmoid

    return _sigmoid(cal.logit(x)) if len(x) else np.zeros(0)


def null_confidences(cal: Calibration, data: CalibrationData) -> np.ndarray:
    """Confidence of every candidate of the not-a-match searches (none above its answer's best)."""
    if not data.has_null or not len(data.null_x):
        return np.zeros(0)
    p = np.where(data.null_inliers >= cal.min_inliers, _probs(cal, data.null_x), 0.0)
    return capped(cal, p, data.null_query, data.null_best, data.n_queries)


def report_on(cal: Calibration, data: CalibrationData) -> dict:
    """Per-query figures of a calibration on examples: how many queries would
    accept a wrong photo, and how many accept a right one; the reliability
    table of the results that decide the answers."""
    keep = data.inliers >= cal.min_inliers
    p = np.where(keep, _probs(cal, data.x), 0.0) if len(data.x) else np.zeros(0)
    p = capped(cal, p, data.query, data.best, data.n_queries)
    acc = p >= cal.threshold
    q_with_pos = np.unique(data.query[data.y == 1])
    q_accept_pos = np.unique(data.query[(data.y == 1) & acc])
    q_false = np.unique(data.query[(data.y == 0) & acc])
    right_best = data.best & (data.y == 1)
    # Log loss and a reliability table of the fitted probabilities, on the decisive results.
    xd, yd = decisive(data, cal.min_inliers)
    pd = _probs(cal, xd)
    eps = 1e-12
    ll = -np.mean(yd * np.log(pd + eps) + (1 - yd) * np.log(1 - pd + eps)) if len(yd) else float("nan")
    bins = []
    for lo in np.arange(0.0, 1.0, 0.1):
        m = (pd >= lo) & (pd < lo + 0.1 + (1e-9 if lo >= 0.85 else 0))
        if m.any():
            bins.append({"confidence": f"{lo:.1f}-{lo + 0.1:.1f}", "examples": int(m.sum()),
                         "mean_confidence": round(float(pd[m].mean()), 3),
                         "fraction_matching": round(float(yd[m].mean()), 3)})
    null = {}
    if data.has_null:
        pn = null_confidences(cal, data)
        acc_q = np.unique(data.null_query[pn >= cal.threshold]) if len(pn) else np.zeros(0)
        null = {"not_a_match_queries": int(data.null_queries),
                "not_a_match_queries_accepting": int(len(acc_q)),
                "not_a_match_max_confidence": round(float(pn.max()), 4) if len(pn) else 0.0}
    return {
        **null,
        "examples": int(len(data.y)), "examples_fitted": int(len(yd)),
        "matching_examples": int(data.y.sum()), "queries": int(data.n_queries),
        "queries_with_a_verified_match": int(len(q_with_pos)),
        "queries_accepting_a_match": int(len(q_accept_pos)),
        "queries_accepting_a_wrong_photo": int(len(q_false)),
        "queries_whose_best_is_right": int(right_best.sum()),
        "right_best_accepted": int((right_best & acc).sum()),
        "true_accept_rate": round(float((right_best & acc).sum() / max(right_best.sum(), 1)), 4),
        "log_loss": round(float(ll), 4), "reliability": bins, "threshold": cal.threshold,
        "coef": dict(zip(cal.features, [round(float(c), 4) for c in cal.coef])),
    }


def calibrate(photos: list, out: str, work: str, extractor_conf=None, candidates: int = 100, min_inliers: int = 5,
              threshold: float | None = None, max_false_accept_rate: float = MAX_FALSE_ACCEPT_RATE,
              sources=(), command: str = "", progress: bool = True, log=print, version: int = DEFAULT_VERSION):
    """`delf calibrate`: extract ``photos`` (LabelledPhoto) into WORK/features.h5
    (resumable; photos that cannot be used are left out and reported), run the
    two searches per photo (``collect``), fit the confidence (``fit``, model
    ``version`` 1 to 4), cross-validate it over places and save it to ``out``
    atomically. Returns (calibration, report)."""
    import sys

    from delf.extract import extract_to_h5
    from verify.rerank import RerankConf

    from .searching import SearchSettings

    _check_version(version)  # before minutes of searching
    if len({p.name for p in photos}) != len(photos):
        raise ValueError("two labelled photos share a name; give distinct folders")
    os.makedirs(work, exist_ok=True)
    feats = os.path.join(work, "features.h5")
    report = extract_to_h5([(p.path, p.name) for p in photos], feats, extractor_conf, progress=progress)
    if report.failed:
        print(report.summary(), file=sys.stderr)
        bad = {os.fspath(path) for path, _ in report.failed}
        photos = [p for p in photos if p.path not in bad]
    log(f"{len(photos)} labelled photos, {len({p.label for p in photos})} labels")
    settings = SearchSettings(rerank=RerankConf(verify_top=candidates))
    data = collect(photos, feats, work, settings, progress=progress)
    fitted_on = {"photos": len(photos), "labels": len({p.label for p in photos}), "sources": list(sources),
                 "candidates": candidates, "command": command}
    cal, rep = fit(data, min_inliers=min_inliers, fitted_on=fitted_on, threshold=threshold,
                   max_false_accept_rate=max_false_accept_rate, version=version)
    if data.query_labels is not None and len(set(data.query_labels)) >= CV_FOLDS and threshold is None:
        rep["cross_validation"] = cross_validate(data, min_inliers=min_inliers, version=version,
                                                 max_false_accept_rate=max_false_accept_rate)
    cal.save(out)
    return cal, rep


__all__ = ["CalibrationData", "calibrate", "LabelledPhoto", "collect", "cross_validate", "decisive", "fit",
           "place_folds", "report_on", "result_features", "shared_data_photos", "subset", "with_graph_context"]
