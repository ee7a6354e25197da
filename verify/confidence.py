"""Calibrated confidence that a verified candidate shows the query's place.

A raw inlier count is a poor match / no-match rule: photos of other places
reach a dozen affine inliers against Oxford photos (repeated windows, coarse
keypoints). The confidence is a logistic model over what the verification
says about a candidate and about the candidates beside it in the same answer:

  log_inliers   log(1 + unique inliers): inliers counted once per distinct
                location in each photo (verify.rerank.unique_inliers)
  spread        the smaller of the two photos' inlier grid coverage (Verification.spread)
  inlier_ratio  inliers / putative correspondences
  log_putative  log(1 + putative correspondences)
  log_margin    log(1 + unique inliers) - log(1 + unique inliers of the strongest
                other candidate of another place): the photo-level form of
                Lowe's ratio test. Two candidates are one place when their
                inliers share query keypoints (``context``); a photo of a place
                the database does not hold meets several unrelated photos about
                as strong as its best, a known place stands far above the rest.
  log_support   log(1 + unique inliers of the strongest other candidate of the
                same place): a second photo of the place that also verifies
  distortion    log of the ratio of the fitted affine map's two singular values
                (0: no shear or anisotropic stretch); a larger value is less
                plausible, so its coefficient is held <= 0
  scale_change  |log| of the fitted affine map's scale (the square root of its
                determinant's magnitude): 0 when both photos show the scene at
                one scale. Photos of one place rarely differ by more than 2x;
                a wrong photo's model often shrinks a whole region onto a few
                pixels (a repeated texture matched across pyramid levels), so
                its coefficient is held <= 0

Version 4 (shipped beside the default, not the default) is version 1 plus the scale change: a candidate's
confidence depends on its own verification only (no margin, no support), so
a lone strong look-alike in a large database is judged like any other pair.

Version 3 (shipped beside the default, not the default) reads "same place" from the database itself: two
photos are one place when the database's match graph links them (each
database photo searched the index when it was added; an edge is a pair whose
confidence under the embedded pair model reaches the pair model's threshold).
Shared query keypoints (version 2) also joined look-alike facades of different
buildings; a graph edge needs the two database photos to verify against each
other. The pair model (version 1's features) also scores photo pairs verified
alone (``delf match``) and the edges of ``delf collection``.

fitted on labelled photos that never include Oxford (``delf calibrate``),
with coefficients constrained so that the confidence never falls when the
evidence grows. Version 1 files (the first four features only, fitted on
every candidate) still load and score as they did. The fitted parameters and
the default decision threshold ship in ``verify/data/``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

FEATURES_V1 = ("log_inliers", "spread", "inlier_ratio", "log_putative")
CONTEXT = ("log_margin", "log_support", "distortion")
FEATURES_V2 = FEATURES_V1 + CONTEXT  # versions 2 and 3
FEATURES_V4 = FEATURES_V1 + ("scale_change",)
# Every feature ``feature_matrix`` computes, in its column order (each version's list is a subset).
FEATURES = FEATURES_V2 + ("scale_change",)
# Features whose coefficient must not be negative (more evidence never lowers confidence) ...
NONNEGATIVE = ("log_inliers", "spread", "inlier_ratio", "log_margin", "log_support")
# ... and those whose coefficient must not be positive (a less plausible model never raises it).
NONPOSITIVE = ("distortion", "scale_change")
FORMAT = "delf-confidence"
VERSION = 4
# The features each version's file lists.
VERSION_FEATURES = {1: FEATURES_V1, 2: FEATURES_V2, 3: FEATURES_V2, 4: FEATURES_V4}
VERSIONS = tuple(VERSION_FEATURES)
# Version 3: a second photo of the same place lends support only with at least this many unique inliers
# (chosen with cross-validation over places on non-Oxford photos, docs/results.md#confidence-version-3).
SUPPORT_MIN_INLIERS = 20
# Two candidates whose inliers share at least this many query keypoints, and at
# least this fraction of the smaller inlier set, show one place (``context``).
SAME_PLACE_SHARED = 3
SAME_PLACE_FRACTION = 0.2
# Only candidates with this many unique inliers can be one place with another
# (chosen with cross-validation over places on non-Oxford photos: at 5, weak
# wrong photos matched on one repeated texture lent each other support).
SAME_PLACE_MIN_INLIERS = 10


def default_path() -> str:
    return os.path.join(os.path.dirname(__file__), "data", "confidence.json")


def graph_model_path() -> str:
    """The version 3 model fitted on the non-Oxford photos (``delf calibrate --model-version 3``), shipped
    beside the default but not the default: on Oxford it accepted 3 of the 202 photos of other places
    (docs/results.md#confidence-version-3)."""
    return os.path.join(os.path.dirname(__file__), "data", "confidence-v3.json")


def scale_model_path() -> str:
    """The version 4 model fitted on the non-Oxford photos (``delf calibrate --model-version 4``), shipped
    beside the default but not the default: on Oxford it accepted 2 of the 202 photos of other places
    (docs/results.md#confidence-version-4)."""
    return os.path.join(os.path.dirname(__file__), "data", "confidence-v4.json")


def context_path() -> str:
    """The version 2 model fitted on the non-Oxford photos (``delf calibrate``), shipped beside the default
    but not the default: on Oxford it accepted 5 of the 202 photos of other places (docs/results.md)."""
    return os.path.join(os.path.dirname(__file__), "data", "confidence-v2.json")


def feature_matrix(inliers, putative, spread, other_place=None, same_place=None, distortion=None,
                   scale_change=None) -> np.ndarray:
    """(N, len(FEATURES)) float64 features of N verified candidates.

    other_place: unique inliers of the strongest other candidate of another
    place in the same answer (0 or None: none); same_place: of the strongest
    other candidate of the same place (0 or None: none); distortion and
    scale_change: of each fitted model (``distortion``, ``scale_change``;
    None: 0). ``context`` computes the first two."""
    inl = np.asarray(inliers, np.float64).reshape(-1)
    put = np.asarray(putative, np.float64).reshape(-1)
    spr = np.asarray(spread, np.float64).reshape(-1)
    extra = []
    for name, v in (("other_place", other_place), ("same_place", same_place), ("distortion", distortion),
                    ("scale_change", scale_change)):
        v = np.zeros(len(inl)) if v is None else np.asarray(v, np.float64).reshape(-1)
        if len(v) != len(inl) or not np.isfinite(v).all() or (v < 0).any():
            raise ValueError(f"{name} must hold one finite number >= 0 per candidate ({len(inl)}), got {len(v)}")
        extra.append(v)
    other, same, dist, scale = extra
    if not (len(inl) == len(put) == len(spr)):
        raise ValueError(f"inliers, putative and spread must have one entry per candidate, got "
                         f"{len(inl)}, {len(put)} and {len(spr)}")
    if (inl < 0).any() or (put < inl).any():
        raise ValueError("need 0 <= inliers <= putative correspondences for every candidate")
    ratio = np.divide(inl, put, out=np.zeros_like(inl), where=put > 0)
    return np.stack([np.log1p(inl), np.clip(spr, 0.0, 1.0), ratio, np.log1p(put),
                     np.log1p(inl) - np.log1p(other), np.log1p(same), dist, scale], axis=1)


def distortion(model) -> float:
    """log(largest / smallest singular value) of a model's 2x2 linear part: 0
    for a similarity, larger for shear and anisotropic stretch (a 2:1 squash
    gives 0.69); 0 when there is no model."""
    if model is None:
        return 0.0
    s = np.linalg.svd(np.asarray(model, np.float64)[:2, :2], compute_uv=False)
    if not np.isfinite(s).all() or s[1] <= 1e-12:
        return 10.0
    return float(min(np.log(s[0] / s[1]), 10.0))


def scale_change(model) -> float:
    """|log| of a model's scale change, the square root of its 2x2 linear
    part's determinant magnitude: 0 when the two photos show the scene at one
    scale, 0.69 for a 2x zoom either way; 0 when there is no model, 10 at most."""
    if model is None:
        return 0.0
    det = abs(float(np.linalg.det(np.asarray(model, np.float64)[:2, :2])))
    if not math.isfinite(det) or det <= 1e-12:
        return 10.0
    return float(min(abs(0.5 * math.log(det)), 10.0))


def graph_context(inliers, same, support_min: int = SUPPORT_MIN_INLIERS) -> tuple[np.ndarray, np.ndarray]:
    """(other_place, same_place) for N candidates of one answer when the
    database says which photos are one place: ``same`` is an (N, N) bool
    matrix (True: the two photos are linked in the database's match graph).
    other_place: the unique inliers of the strongest other candidate not
    linked to this one; same_place: of the strongest linked one with at least
    ``support_min`` unique inliers (0 when there is none)."""
    u = np.asarray(inliers, np.float64).reshape(-1)
    n = len(u)
    same = np.asarray(same, bool)
    if same.shape != (n, n):
        raise ValueError(f"need an ({n}, {n}) same-place matrix, got {same.shape}")
    others = ~np.eye(n, dtype=bool)
    linked = others & (same | same.T)
    un = np.broadcast_to(u, (n, n))
    other_place = np.where(others & ~linked, un, 0.0).max(axis=1, initial=0.0)
    same_place = np.where(linked & (un >= support_min), un, 0.0).max(axis=1, initial=0.0)
    return other_place, same_place


def context(inliers, query_points, min_inliers: int = SAME_PLACE_MIN_INLIERS) -> tuple[np.ndarray, np.ndarray]:
    """(other_place, same_place) for N candidates of one answer: for each, the
    unique inliers of the strongest other candidate of another place and of the
    same place (0 when there is none). ``query_points``: per candidate, its
    inliers' query locations (k, 2). Two candidates that both have at least
    ``min_inliers`` inliers are one place when their inliers share
    ``SAME_PLACE_SHARED`` or more query keypoints and at least
    ``SAME_PLACE_FRACTION`` of the smaller inlier set: photos of one building
    are matched by the same part of the query. A weaker candidate is always
    another place (it shows nothing the query is sure of)."""
    u = np.asarray(inliers, np.float64).reshape(-1)
    n = len(u)
    if len(query_points) != n:
        raise ValueError(f"need query points for each of the {n} candidates, got {len(query_points)}")
    strong = np.flatnonzero(u >= max(min_inliers, 1))
    keys = {}
    for i in strong:
        xy = np.round(np.asarray(query_points[i], np.float64).reshape(-1, 2)).astype(np.int64)
        keys[i] = np.unique(xy[:, 0] * 1_000_003 + xy[:, 1])
    same = np.zeros((n, n), bool)
    for a_pos, a in enumerate(strong):
        for b in strong[a_pos + 1:]:
            ka, kb = keys[a], keys[b]
            shared = len(np.intersect1d(ka, kb, assume_unique=True))
            if shared >= max(SAME_PLACE_SHARED, SAME_PLACE_FRACTION * min(len(ka), len(kb))):
                same[a, b] = same[b, a] = True
    other_place = np.zeros(n)
    same_place = np.zeros(n)
    for i in range(n):
        others = np.ones(n, bool)
        others[i] = False
        sp = others & same[i]
        op = others & ~same[i]
        other_place[i] = u[op].max(initial=0.0)
        same_place[i] = u[sp].max(initial=0.0)
    return other_place, same_place


@dataclass(frozen=True)
class Calibration:
    """Logistic confidence: sigmoid(intercept + ((x - mean) / scale) . coef),
    x the candidate's values of ``features``.

    features: the version's list (VERSION_FEATURES): FEATURES_V1 (version
              1) and FEATURES_V4 (version 4) read no context, so a
              candidate's confidence does not depend on the others;
              FEATURES_V2 (versions 2 and 3) adds the margin, support and
              distortion.
    threshold: the default confidence at or above which a result is a match.
    min_inliers: below this many inliers the confidence is 0 (an affine model
                 from 3-4 points proves nothing).
    fitted_on: free-form provenance (data, counts, extractor conf, command).
    """

    coef: tuple
    intercept: float
    mean: tuple
    scale: tuple
    threshold: float = 0.5
    min_inliers: int = 5
    features: tuple = FEATURES_V2
    fitted_on: dict = field(default_factory=dict, compare=False)
    # Version 3: the pair model (a version 1 calibration) whose matches are the database's match-graph
    # edges, and the support floor of ``graph_context``. None: version 1 or 2.
    pair: "Calibration | None" = None
    support_min: int = SUPPORT_MIN_INLIERS

    def __post_init__(self):
        n = len(self.features)
        if tuple(self.features) not in VERSION_FEATURES.values():
            raise ValueError(f"calibration features {list(self.features)} are none of the lists this engine reads "
                             f"({'; '.join(sorted({', '.join(f) for f in VERSION_FEATURES.values()}))}); "
                             f"refit with `delf calibrate`")
        for name in ("coef", "mean", "scale"):
            v = getattr(self, name)
            if len(v) != n or not all(math.isfinite(float(x)) for x in v):
                raise ValueError(f"calibration {name} must hold {n} finite numbers, got {v!r}")
        if any(float(s) <= 0 for s in self.scale):
            raise ValueError("calibration scale must be positive")
        if not math.isfinite(float(self.intercept)):
            raise ValueError("calibration intercept must be finite")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if int(self.min_inliers) < 0:
            raise ValueError(f"min_inliers must be >= 0, got {self.min_inliers!r}")
        if self.pair is not None:
            if not isinstance(self.pair, Calibration) or self.pair.version != 1:
                raise ValueError("a version 3 calibration's pair model must be a version 1 calibration")
            if tuple(self.features) != FEATURES_V2:
                raise ValueError(f"a version 3 calibration lists the features {list(FEATURES_V2)}")
            if int(self.support_min) < 0:
                raise ValueError(f"support_min must be >= 0, got {self.support_min!r}")

    @property
    def version(self) -> int:
        f = tuple(self.features)
        return 1 if f == FEATURES_V1 else 4 if f == FEATURES_V4 else 3 if self.pair is not None else 2

    @property
    def uses_graph(self) -> bool:
        """Whether "same place" comes from the database's match graph (version 3) rather than shared query
        keypoints (version 2)."""
        return self.pair is not None

    @property
    def pair_model(self) -> "Calibration":
        """The model that scores a photo pair on its own (``delf match``, ``delf collection``'s edges,
        the match graph): the embedded pair model of a version 3 calibration, else this one."""
        return self.pair if self.pair is not None else self

    @property
    def uses_context(self) -> bool:
        """Whether a candidate's confidence depends on the other candidates of its answer."""
        return any(float(c) != 0.0 for f, c in zip(self.features, self.coef) if f in ("log_margin", "log_support"))

    # ------------------------------------------------------------ scoring
    def logit(self, x: np.ndarray) -> np.ndarray:
        """Logit of (N, len(FEATURES)) features (``feature_matrix``), or of
        (N, len(self.features)) already in this calibration's order."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        if x.ndim != 2 or x.shape[1] not in (len(FEATURES), len(self.features)):
            raise ValueError(f"need features of shape (N, {len(FEATURES)}), got {x.shape}")
        if x.shape[1] == len(FEATURES):
            x = x[:, [FEATURES.index(f) for f in self.features]]
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef, np.float64) + float(self.intercept)

    def score(self, x: np.ndarray, inliers) -> np.ndarray:
        """Confidence in [0, 1] of candidates with features ``x`` (``feature_matrix``) and ``inliers``."""
        p = _sigmoid(self.logit(x))
        p[np.asarray(inliers).reshape(-1) < self.min_inliers] = 0.0
        return p

    def confidence(self, inliers, putative, spread, other_place=None, same_place=None,
                   distortion=None, scale_change=None) -> np.ndarray:
        """Confidence in [0, 1] per candidate (float64 (N,)); the context
        and model arguments as in ``feature_matrix``."""
        return self.score(feature_matrix(inliers, putative, spread, other_place, same_place, distortion,
                                         scale_change), inliers)

    def pair_confidence(self, inliers, putative, spread, distortion=None, scale_change=None) -> np.ndarray:
        """Confidence of photo pairs verified alone (``delf match``), with no
        answer around them: the margin and support are those of a typical
        search (their calibration means), neither credit nor penalty. A
        version 3 calibration scores them with its pair model."""
        if self.pair is not None:
            return self.pair.pair_confidence(inliers, putative, spread, distortion, scale_change)
        x = feature_matrix(inliers, putative, spread, distortion=distortion, scale_change=scale_change)
        for f in ("log_margin", "log_support"):
            if f in self.features:
                x[:, FEATURES.index(f)] = self.mean[self.features.index(f)]
        return self.score(x, inliers)

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": self.version, "features": list(self.features),
            "coef": [float(c) for c in self.coef], "intercept": float(self.intercept),
            "mean": [float(m) for m in self.mean], "scale": [float(s) for s in self.scale],
            "threshold": float(self.threshold), "min_inliers": int(self.min_inliers),
            "fitted_on": self.fitted_on,
        } | ({"pair": self.pair.to_dict(), "support_min": int(self.support_min)} if self.pair is not None else {})

    @classmethod
    def from_dict(cls, d: dict, where: str = "calibration") -> "Calibration":
        if d.get("format") != FORMAT:
            raise ValueError(f"{where}: not a confidence calibration file (format {d.get('format')!r})")
        version = d.get("version")
        if version not in VERSIONS:
            raise ValueError(f"{where}: calibration version {version!r}, this engine reads "
                             f"{', '.join(map(str, VERSIONS))}; refit with `delf calibrate`")
        pair = None
        if version == 3:
            if not isinstance(d.get("pair"), dict):
                raise ValueError(f"{where}: a version 3 calibration needs its pair model (\"pair\")")
            pair = cls.from_dict(d["pair"], f"{where} (pair model)")
            if pair.version != 1:
                raise ValueError(f"{where}: the pair model must be a version 1 calibration")
        want = VERSION_FEATURES[version]
        if tuple(d.get("features", ())) != want:
            raise ValueError(f"{where}: a version {version} calibration lists the features {list(want)}, "
                             f"this one {d.get('features')!r}; refit with `delf calibrate`")
        try:
            return cls(coef=tuple(d["coef"]), intercept=float(d["intercept"]), mean=tuple(d["mean"]),
                       scale=tuple(d["scale"]), threshold=float(d["threshold"]),
                       min_inliers=int(d["min_inliers"]), features=tuple(d["features"]),
                       fitted_on=dict(d.get("fitted_on", {})), pair=pair,
                       support_min=int(d.get("support_min", SUPPORT_MIN_INLIERS)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: incomplete calibration ({exc})") from None
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | None = None) -> "Calibration":
        path = os.fspath(path) if path else default_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no confidence calibration; make one with `delf calibrate`")
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: unreadable calibration ({exc})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a confidence calibration file")
        return cls.from_dict(d, path)

    def save(self, path: str) -> None:
        from common.files import atomic_write_bytes

        atomic_write_bytes(os.fspath(path), (json.dumps(self.to_dict(), indent=2) + "\n").encode())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, nonnegative=NONNEGATIVE,
                 iters: int = 100, use=FEATURES, nonpositive=NONPOSITIVE
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Regularised logistic regression by Newton's method on standardised
    features, with the coefficients of ``nonnegative`` features held at >= 0
    and those of ``nonpositive`` ones at <= 0 (a feature whose coefficient
    would take the wrong sign is dropped and the rest refitted). Only the features named in ``use`` enter the model (the others
    get coefficient 0). Returns (coef, intercept, mean, scale)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or len(x) != len(y):
        raise ValueError(f"need x of shape (N, {len(FEATURES)}) and y of shape (N,)")
    if not np.isfinite(x).all():
        raise ValueError("calibration features must be finite")
    if y.min() == y.max():
        raise ValueError("calibration needs both matching and non-matching pairs; got only one kind")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    unknown = sorted(set(use) - set(FEATURES))
    if unknown or not use:
        raise ValueError(f"use must name some of {', '.join(FEATURES)}, got {list(use)}")
    active = np.array([f in use for f in FEATURES])
    sign = np.array([1.0 if f in nonnegative else -1.0 if f in nonpositive else 0.0 for f in FEATURES])
    while True:
        w = _newton(z[:, active], y, l2, iters)
        coef = np.zeros(x.shape[1])
        coef[active] = w[1:]
        wrong = np.where(active & (sign * coef < 0), sign * coef, np.inf)
        if not np.isfinite(wrong).any():
            return coef, float(w[0]), mean, scale
        active[np.argmin(wrong)] = False


def _newton(z: np.ndarray, y: np.ndarray, l2: float, iters: int) -> np.ndarray:
    a = np.hstack([np.ones((len(z), 1)), z])
    w = np.zeros(a.shape[1])
    reg = np.full(a.shape[1], l2 * len(z))
    reg[0] = 0.0  # the intercept is not shrunk
    for _ in range(iters):
        p = _sigmoid(a @ w)
        grad = a.T @ (p - y) + reg * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


__all__ = ["CONTEXT", "FEATURES", "FEATURES_V1", "FEATURES_V2", "FEATURES_V4", "SUPPORT_MIN_INLIERS", "VERSION_FEATURES",
           "Calibration", "context", "context_path", "default_path", "distortion", "feature_matrix", "fit_logistic",
           "graph_context", "graph_model_path", "scale_change", "scale_model_path"]
