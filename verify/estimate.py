"""Robust model fitting over point correspondences: the public face of the kernels.

``ransac`` has scikit-image's shape (aligned arrays in, explicit seed,
model and inlier mask out); ``ransac_many`` verifies one query against many
candidates in parallel. Plain Python here validates and converts; the work
happens in ``verify.kernels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.conf import DictConf

MODELS = ("affine", "similarity", "homography")
SAMPLE_SIZE = {"affine": 3, "similarity": 2, "homography": 4}
_MODEL_ID = {"affine": 0, "similarity": 1, "homography": 2}
_MAX_POINTS = 2**31 - 1


@dataclass(frozen=True)
class RansacConf(DictConf):
    """Settings of one verification run.

    model:              "affine" (3 points; DELF's choice), "similarity" (2) or "homography" (4).
    residual_threshold: inlier distance in destination pixels (DELF: 20 px, its keypoints are coarse).
    confidence:         stop once an all-inlier sample has been drawn with this probability.
    min_trials, max_trials: bounds on the number of samples drawn.
    local_optimization: least-squares refits (this many) whenever a new best model appears; 0 disables.
    final_refit:        iterations of the winner's final refit (least squares reweighted by Tukey's
                        biweight reaching 1.5 thresholds; Gauss-Newton for a homography); 0 disables.
    min_scale, max_scale: bounds on sqrt|det| of the linear part (affine, similarity).
    allow_reflection:   accept mirrored maps (affine, homography; a similarity never mirrors).
    prosac:             sample best-quality correspondences first when a quality is given.
    grid:               cells per side of the grid that measures the spread of the inliers.
    """

    model: str = "affine"
    residual_threshold: float = 20.0
    confidence: float = 0.999
    min_trials: int = 10
    max_trials: int = 2000
    local_optimization: int = 3
    final_refit: int = 5
    min_scale: float = 0.1
    max_scale: float = 10.0
    allow_reflection: bool = False
    prosac: bool = True
    grid: int = 8

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        t = self.residual_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"residual_threshold must be a positive number of pixels, got {t!r}")
        if not (0.0 < float(self.confidence) < 1.0):
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        for name in ("min_trials", "max_trials", "local_optimization", "final_refit", "grid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.max_trials < 1 or self.max_trials > 10_000_000:
            raise ValueError(f"max_trials must be in [1, 10000000], got {self.max_trials}")
        if self.min_trials > self.max_trials:
            raise ValueError(f"min_trials ({self.min_trials}) exceeds max_trials ({self.max_trials})")
        if self.grid < 1 or self.grid > 1024:
            raise ValueError(f"grid must be in [1, 1024], got {self.grid}")
        lo, hi = self.min_scale, self.max_scale
        if not (0.0 <= lo < hi) or not math.isfinite(lo):
            raise ValueError(f"need 0 <= min_scale < max_scale, got {lo!r} and {hi!r}")
        for name in ("allow_reflection", "prosac"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def sample_size(self) -> int:
        return SAMPLE_SIZE[self.model]


_DEFAULT = RansacConf()

PRESETS = {
    # DELF's verification: affine, 20 px, on coarse (stride-16) keypoints.
    "delf": RansacConf(),
    # Precise keypoints (SIFT-like) on planar scenes.
    "homography": RansacConf(model="homography", residual_threshold=3.0),
}


@dataclass(frozen=True, eq=False)
class Verification:
    """Result of verifying one pair.

    model:       3x3 float64 matrix mapping homogeneous source (x, y, 1) to
                 destination pixels, or None when no model was found.
    inliers:     bool (N,), aligned with the correspondences given.
    num_inliers: inliers.sum().
    spread:      how much of both photos the inliers cover: the smaller of
                 ``spread_src`` and ``spread_dst``, each the fraction of the
                 cells of a grid x grid partition of that photo holding an
                 inlier (the photo is the image size when given, else the
                 bounding box of all correspondences in it).
    trials:      samples drawn.
    """

    model: np.ndarray | None
    inliers: np.ndarray
    num_inliers: int
    spread: float
    trials: int
    spread_src: float = 0.0
    spread_dst: float = 0.0
    model_type: str = "affine"

    def __bool__(self) -> bool:
        return self.model is not None

    def transform(self, points) -> np.ndarray:
        """Map (N, 2) source points through the model (float64 (N, 2))."""
        if self.model is None:
            raise ValueError("this Verification has no model (too few or degenerate correspondences)")
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        h = p @ self.model[:, :2].T + self.model[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return h[:, :2] / h[:, 2:3]

    def to_dict(self) -> dict:
        return {
            "model_type": self.model_type,
            "model": None if self.model is None else self.model.tolist(),
            "num_inliers": int(self.num_inliers),
            "spread": float(self.spread),
            "spread_src": float(self.spread_src),
            "spread_dst": float(self.spread_dst),
            "trials": int(self.trials),
        }


def adaptive_trials(inlier_ratio: float, sample_size: int, confidence: float = 0.999,
                    min_trials: int = 0, max_trials: int = 100_000) -> int:
    """Samples needed so that one is all-inlier with probability ``confidence``.

    ``ceil(log(1 - confidence) / log(1 - inlier_ratio ** sample_size))``
    clamped to [min_trials, max_trials]; e.g. half inliers, 3-point samples,
    99 % confidence: ceil(log(0.01) / log(0.875)) = 35.
    """
    from .kernels import adaptive_trials as kernel

    if not (0.0 <= inlier_ratio <= 1.0):
        raise ValueError(f"inlier_ratio must be in [0, 1], got {inlier_ratio!r}")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if sample_size < 1 or min_trials < 0 or max_trials < min_trials:
        raise ValueError(
            f"need sample_size >= 1 and 0 <= min_trials <= max_trials, got {sample_size}, "
            f"{min_trials}, {max_trials}"
        )
    return int(kernel(float(inlier_ratio), int(sample_size), float(confidence), int(min_trials),
                      int(max_trials)))


def pair_seed(seed: int, index: int) -> int:
    """The seed ``ransac_many(..., seed=seed)`` uses for pair ``index``."""
    from .kernels import pair_seed as kernel

    return int(kernel(np.uint64(_check_seed(seed)), np.uint64(index)))


# ---------------------------------------------------------------- validation


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _resolve_conf(conf, overrides: dict) -> RansacConf:
    base = RansacConf.resolve(conf, PRESETS, _DEFAULT)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return base
    try:
        key = (base, tuple(sorted(changes.items())))
        hit = _CONF_CACHE.get(key)
    except TypeError:  # an unhashable value: let the conf reject it
        key, hit = None, None
    if hit is None:
        hit = base.replace(**changes)
        if key is not None and len(_CONF_CACHE) < 256:
            _CONF_CACHE[key] = hit
    return hit


# Verifying thousands of pairs with the same overrides should not rebuild the conf each time.
_CONF_CACHE: dict = {}


def _points(a, name: str) -> np.ndarray:
    try:
        p = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an (N, 2) array of numbers: {exc}") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {p.shape}")
    if p.shape[0] > _MAX_POINTS:
        raise ValueError(f"{name}: too many points ({p.shape[0]})")
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise ValueError(f"{name} has NaN or infinite coordinates (first at row {bad})")
    return np.ascontiguousarray(p)


def _quality(q, n: int, name: str = "quality") -> np.ndarray | None:
    if q is None:
        return None
    try:
        q = np.asarray(q, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers: {exc}") from None
    if q.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one value per correspondence), got {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return np.ascontiguousarray(q)


def _size(size, name: str):
    if size is None:
        return None
    try:
        w, h = (float(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (width, height), got {size!r}") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise ValueError(f"{name} must be positive (width, height), got {size!r}")
    return (w, h)


def grid_spread(points, mask=None, size=None, grid: int = 8) -> float:
    """Fraction of the grid x grid cells of a photo holding at least one (masked) point.

    The photo is [0, w) x [0, h) when ``size`` = (w, h) is given, else the
    bounding box of all ``points``.
    """
    from .kernels import grid_spread as kernel

    p = _points(points, "points")
    m = np.ones(len(p), dtype=np.bool_) if mask is None else np.asarray(mask, dtype=np.bool_).reshape(-1)
    if len(m) != len(p):
        raise ValueError(f"mask must have one entry per point ({len(p)}), got {len(m)}")
    size = _size(size, "size") or (0.0, 0.0)
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or not 1 <= grid <= 1024:
        raise ValueError(f"grid must be an integer in [1, 1024], got {grid!r}")
    return float(kernel(p, m, float(size[0]), float(size[1]), int(grid)))


def _sizes_row(src_size, dst_size) -> np.ndarray:
    return np.array([*(src_size or (0.0, 0.0)), *(dst_size or (0.0, 0.0))], dtype=np.float64)


def _result(model, inliers, info, conf: RansacConf) -> Verification:
    count, trials, s1, s2 = int(info[0]), int(info[1]), float(info[2]), float(info[3])
    if count == 0:
        return Verification(None, np.zeros(len(inliers), dtype=bool), 0, 0.0, trials, 0.0, 0.0, conf.model)
    return Verification(model, inliers, count, min(s1, s2), trials, s1, s2, conf.model)


def _kernel_args(conf: RansacConf) -> tuple:
    return (
        _MODEL_ID[conf.model], float(conf.residual_threshold), float(conf.confidence),
        int(conf.min_trials), int(conf.max_trials),
    )


def _kernel_args2(conf: RansacConf) -> tuple:
    return (
        float(conf.min_scale), float(conf.max_scale), conf.allow_reflection,
        int(conf.local_optimization), int(conf.final_refit),
    )


_NO_QUALITY = np.zeros(0)


# ---------------------------------------------------------------- public API


def ransac(src, dst, model: str | None = None, residual_threshold: float | None = None, seed: int = 0,
           quality=None, src_size=None, dst_size=None, conf=None, **overrides) -> Verification:
    """Fit ``model`` to correspondences src[i] -> dst[i] robustly.

    src, dst:   (N, 2) arrays of (x, y) pixels, row i of one matching row i of the other.
    model, residual_threshold: shortcuts for the RansacConf fields of the same name.
    seed:       the same seed gives the same result.
    quality:    optional (N,) score per correspondence, higher = more likely
                correct (e.g. minus the descriptor distance ratio); samples
                are then drawn best first (PROSAC).
    src_size, dst_size: optional (width, height) of the two photos, for the spread.
    conf:       a RansacConf, a preset name (``verify.PRESETS``) or a dict;
                ``overrides`` replace single fields.

    Too few correspondences, or all of them coincident or collinear, give an
    empty Verification (model None, no inliers); malformed input raises ValueError.
    """
    from .kernels import verify_pair

    conf = _resolve_conf(conf, {"model": model, "residual_threshold": residual_threshold, **overrides})
    seed = _check_seed(seed)
    src = _points(src, "src")
    dst = _points(dst, "dst")
    if len(src) != len(dst):
        raise ValueError(f"src and dst must have the same length, got {len(src)} and {len(dst)}")
    quality = _quality(quality, len(src))
    src_size = _size(src_size, "src_size")
    dst_size = _size(dst_size, "dst_size")
    prosac = quality is not None and conf.prosac
    H = np.zeros((3, 3))
    mask = np.zeros(len(src), dtype=np.bool_)
    info = np.zeros(4)
    verify_pair(src, dst, quality if prosac else _NO_QUALITY, *_kernel_args(conf), prosac, *_kernel_args2(conf),
                np.uint64(seed), int(conf.grid), _sizes_row(src_size, dst_size), H, mask, info)
    return _result(H if info[0] else None, mask, info, conf)


def _per_pair(value, num: int, name: str, check):
    """A value shared by all pairs, or a sequence with one entry per pair."""
    if value is None:
        return [None] * num
    if isinstance(value, (list, tuple)) and len(value) == num and (
        num == 0 or value[0] is None or np.ndim(value[0]) == 1
    ):
        return [check(v, f"{name}[{i}]") for i, v in enumerate(value)]
    one = check(value, name)
    return [one] * num


def ransac_many(src, dst, offsets=None, model: str | None = None, residual_threshold: float | None = None,
                seed: int = 0, quality=None, src_size=None, dst_size=None, conf=None,
                **overrides) -> list[Verification]:
    """Verify many pairs in parallel (one query against its candidates, say).

    Either ``src`` and ``dst`` are sequences of (N_p, 2) arrays (one per
    pair), or concatenated (sum N_p, 2) arrays with ``offsets`` (P + 1,)
    such that pair p owns rows offsets[p]:offsets[p + 1]. ``quality``
    follows the same layout. ``src_size``/``dst_size`` are one (w, h) for
    all pairs or a sequence of one per pair. Pair p uses the seed
    ``pair_seed(seed, p)``, so its result equals ``ransac`` on that pair
    with that seed, whatever the number of threads.
    """
    from .kernels import pair_seed as pair_seed_kernel
    from .kernels import verify_batch

    conf = _resolve_conf(conf, {"model": model, "residual_threshold": residual_threshold, **overrides})
    seed = _check_seed(seed)
    if offsets is None:
        if isinstance(src, np.ndarray) or isinstance(dst, np.ndarray):
            raise ValueError("pass src and dst as sequences of (N, 2) arrays, or concatenated arrays with offsets")
        src_list = [_points(a, f"src[{i}]") for i, a in enumerate(src)]
        dst_list = [_points(a, f"dst[{i}]") for i, a in enumerate(dst)]
        if len(src_list) != len(dst_list):
            raise ValueError(f"src and dst must hold the same number of pairs, got {len(src_list)} and "
                             f"{len(dst_list)}")
        for i, (a, b) in enumerate(zip(src_list, dst_list)):
            if len(a) != len(b):
                raise ValueError(f"pair {i}: src and dst must have the same length, got {len(a)} and {len(b)}")
        lengths = [len(a) for a in src_list]
        offs = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offs[1:])
        cat_src = np.concatenate(src_list) if src_list else np.zeros((0, 2))
        cat_dst = np.concatenate(dst_list) if dst_list else np.zeros((0, 2))
        if quality is not None:
            if len(quality) != len(src_list):
                raise ValueError(f"quality must hold one array per pair ({len(src_list)}), got {len(quality)}")
            quality = np.concatenate([_quality(q, lengths[i], f"quality[{i}]") for i, q in enumerate(quality)]) \
                if src_list else np.zeros(0)
    else:
        cat_src = _points(src, "src")
        cat_dst = _points(dst, "dst")
        if len(cat_src) != len(cat_dst):
            raise ValueError(f"src and dst must have the same length, got {len(cat_src)} and {len(cat_dst)}")
        offs = np.asarray(offsets)
        if offs.ndim != 1 or len(offs) < 1 or not np.issubdtype(offs.dtype, np.integer):
            raise ValueError("offsets must be a 1-D integer array of P + 1 row offsets")
        offs = offs.astype(np.int64)
        if offs[0] != 0 or offs[-1] != len(cat_src) or (np.diff(offs) < 0).any():
            raise ValueError(
                f"offsets must start at 0, never decrease and end at the number of rows ({len(cat_src)})"
            )
        quality = _quality(quality, len(cat_src))
    num = len(offs) - 1
    src_sizes = _per_pair(src_size, num, "src_size", _size)
    dst_sizes = _per_pair(dst_size, num, "dst_size", _size)

    use_prosac = quality is not None and conf.prosac
    seeds = np.array([pair_seed_kernel(np.uint64(seed), np.uint64(p)) for p in range(num)], dtype=np.uint64)
    sizes = np.array([_sizes_row(a, b) for a, b in zip(src_sizes, dst_sizes)], dtype=np.float64).reshape(num, 4)
    models = np.zeros((num, 3, 3))
    mask = np.zeros(len(cat_src), dtype=np.bool_)
    info = np.zeros((num, 4))
    if num:
        from numba import parallel_chunksize

        # Pairs differ a lot in cost: hand them out one at a time.
        with parallel_chunksize(1):
            verify_batch(np.ascontiguousarray(cat_src), np.ascontiguousarray(cat_dst),
                         quality if use_prosac else _NO_QUALITY, offs, *_kernel_args(conf), use_prosac,
                         *_kernel_args2(conf), seeds, int(conf.grid), sizes, models, mask, info)
    return [
        _result(models[p].copy() if info[p, 0] else None, mask[offs[p]:offs[p + 1]].copy(), info[p], conf)
        for p in range(num)
    ]


__all__ = [
    "MODELS", "PRESETS", "RansacConf", "Verification", "adaptive_trials", "grid_spread", "pair_seed",
    "ransac", "ransac_many",
]
