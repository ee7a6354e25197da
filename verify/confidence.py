"""Calibrated confidence that a verified candidate shows the query's place.

A raw inlier count is a poor match / no-match rule: photos of other places
reach a dozen affine inliers against Oxford photos (repeated windows, coarse
keypoints). The confidence is a logistic model over what the verification
says about a candidate:

  log_inliers   log(1 + unique inliers): inliers counted once per distinct
                location in each photo (verify.rerank.unique_inliers)
  spread        the smaller of the two photos' inlier grid coverage (Verification.spread)
  inlier_ratio  inliers / putative correspondences
  log_putative  log(1 + putative correspondences)

fitted on labelled photos that never include Oxford (``delf calibrate``; the
shipped fit uses log_inliers and spread only: the putative count mostly says
which data set a photo comes from),
with coefficients constrained to be >= 0 on the features that grow with the
evidence, so that the confidence never falls when inliers rise. The fitted
parameters and the default decision threshold ship in ``verify/data/``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

FEATURES = ("log_inliers", "spread", "inlier_ratio", "log_putative")
# Features whose coefficient must not be negative (more evidence never lowers confidence).
NONNEGATIVE = ("log_inliers", "spread", "inlier_ratio")
FORMAT = "delf-confidence"
VERSION = 1


def default_path() -> str:
    return os.path.join(os.path.dirname(__file__), "data", "confidence.json")


def feature_matrix(inliers, putative, spread) -> np.ndarray:
    """(N, len(FEATURES)) float64 features of N verified candidates."""
    inl = np.asarray(inliers, np.float64).reshape(-1)
    put = np.asarray(putative, np.float64).reshape(-1)
    spr = np.asarray(spread, np.float64).reshape(-1)
    if not (len(inl) == len(put) == len(spr)):
        raise ValueError(f"inliers, putative and spread must have one entry per candidate, got "
                         f"{len(inl)}, {len(put)} and {len(spr)}")
    if (inl < 0).any() or (put < inl).any():
        raise ValueError("need 0 <= inliers <= putative correspondences for every candidate")
    ratio = np.divide(inl, put, out=np.zeros_like(inl), where=put > 0)
    return np.stack([np.log1p(inl), np.clip(spr, 0.0, 1.0), ratio, np.log1p(put)], axis=1)


@dataclass(frozen=True)
class Calibration:
    """Logistic confidence: sigmoid(intercept + ((x - mean) / scale) . coef).

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
    features: tuple = FEATURES
    fitted_on: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        n = len(self.features)
        if tuple(self.features) != FEATURES:
            raise ValueError(f"calibration features {list(self.features)} differ from this version's "
                             f"{list(FEATURES)}; refit with `delf calibrate`")
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

    # ------------------------------------------------------------ scoring
    def logit(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, len(FEATURES))
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef, np.float64) + float(self.intercept)

    def confidence(self, inliers, putative, spread) -> np.ndarray:
        """Confidence in [0, 1] per candidate (float64 (N,))."""
        x = feature_matrix(inliers, putative, spread)
        p = _sigmoid(self.logit(x))
        p[np.asarray(inliers).reshape(-1) < self.min_inliers] = 0.0
        return p

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "features": list(self.features),
            "coef": [float(c) for c in self.coef], "intercept": float(self.intercept),
            "mean": [float(m) for m in self.mean], "scale": [float(s) for s in self.scale],
            "threshold": float(self.threshold), "min_inliers": int(self.min_inliers),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "calibration") -> "Calibration":
        if d.get("format") != FORMAT:
            raise ValueError(f"{where}: not a confidence calibration file (format {d.get('format')!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"{where}: calibration version {d.get('version')!r}, this engine reads {VERSION}")
        try:
            return cls(coef=tuple(d["coef"]), intercept=float(d["intercept"]), mean=tuple(d["mean"]),
                       scale=tuple(d["scale"]), threshold=float(d["threshold"]),
                       min_inliers=int(d["min_inliers"]), features=tuple(d["features"]),
                       fitted_on=dict(d.get("fitted_on", {})))
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
        return cls.from_dict(d, path)

    def save(self, path: str) -> None:
        from common.files import atomic_write_bytes

        atomic_write_bytes(os.fspath(path), (json.dumps(self.to_dict(), indent=2) + "\n").encode())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, nonnegative=NONNEGATIVE,
                 iters: int = 100, use=FEATURES) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Regularised logistic regression by Newton's method on standardised
    features, with the coefficients of ``nonnegative`` features held at >= 0
    (a feature whose coefficient would turn negative is dropped and the rest
    refitted). Only the features named in ``use`` enter the model (the others
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
    must = np.array([f in nonnegative for f in FEATURES])
    while True:
        w = _newton(z[:, active], y, l2, iters)
        coef = np.zeros(x.shape[1])
        coef[active] = w[1:]
        bad = must & active & (coef < 0)
        if not bad.any():
            return coef, float(w[0]), mean, scale
        active[np.argmin(np.where(bad, coef, np.inf))] = False


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


__all__ = ["FEATURES", "Calibration", "default_path", "feature_matrix", "fit_logistic"]
