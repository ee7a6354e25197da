"""Helpers shared by the index tests: small synthetic features files in the
engine's real format. (No tests here.)"""

from __future__ import annotations

import numpy as np

from delf.features import Features
from delf.featio import FeatureWriter

DIM = 16
CONF = {"backbone": "synthetic", "weights": None, "scales": [1.0], "max_image_size": 1024, "pca": None,
        "pca_sha256": None, "pca_dim": DIM, "descriptor_dim": DIM, "scoring": "norm"}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_photo(rng: np.random.Generator, n: int, dim: int = DIM) -> Features:
    w, h = int(rng.integers(200, 800)), int(rng.integers(200, 800))
    return Features(
        locations=np.column_stack([rng.uniform(0, w, n), rng.uniform(0, h, n)]).astype(np.float32),
        descriptors=unit(rng.standard_normal((n, dim))),
        scales=np.ones(n, np.float32),
        scores=rng.random(n).astype(np.float32),
        image_size=(w, h),
    )


def make_photos(prefix: str, count: int, seed: int, n_range=(20, 60), dim: int = DIM) -> dict:
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i:03d}.jpg": make_photo(rng, int(rng.integers(*n_range)), dim) for i in range(count)}


def write_features(path, photos: dict, conf: dict | None = None) -> str:
    with FeatureWriter(path, conf or CONF) as w:
        for name, feats in photos.items():
            w.write(name, feats)
    return str(path)


def noisy_query(feats: Features, seed: int, frac: float = 0.6, noise: float = 0.05) -> Features:
    """A query sharing a fraction of a photo's descriptors, slightly perturbed."""
    rng = np.random.default_rng(seed)
    n = len(feats)
    keep = np.sort(rng.choice(n, max(1, int(frac * n)), replace=False))
    desc = unit(feats.descriptors[keep] + noise * rng.standard_normal((len(keep), feats.dim)))
    return Features(feats.locations[keep] * 0.5 + 3, desc, feats.scales[keep], feats.scores[keep], (100, 100))


def brute_force_knn(db: np.ndarray, q: np.ndarray, k: int):
    """NumPy reference: full distance matrix, full sort."""
    d = np.sqrt(np.maximum(2 - 2 * (unit(q) @ db.T), 0))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)
