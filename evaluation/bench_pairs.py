"""Benchmark behind `delf bench pairs`: same-scene retrieval on a labelled photo
collection by exhaustive pairwise matching and verification (no index): every
photo queries all others, ranked by RANSAC inliers; mAP against the labels. Meant
for choosing extractor settings on non-evaluation photos (e.g. ../shared/data/landmarks)."""

from __future__ import annotations

import os
import time

import numpy as np

from common.labels import load_labels

from .metrics import average_precision


def _plain_ap(pos: np.ndarray) -> float:
    """Plain (step) AP of a ranking given as a boolean array (True = positive); nan without positives."""
    n = int(pos.sum())
    return average_precision(np.flatnonzero(pos), n, interpolation="step") if n else float("nan")


def bench_pairs(images: str, labels: str, conf, limit: int | None = None) -> dict:
    """Extract every photo named in the ``labels`` CSV (columns image,scene) from the folder
    ``images`` with ``conf`` (the first ``limit`` by name), match and verify every pair (mutual
    NN + ratio, affine RANSAC), rank each photo's others by inliers; mAP of same-scene retrieval."""
    from delf.extractor import make_extractor
    from verify import ransac
    from verify.matching import match_descriptors

    scene = load_labels(labels, column="scene")
    names = sorted(scene)[:limit] if limit else sorted(scene)
    ex = make_extractor(conf)
    t0 = time.perf_counter()
    feats = [ex.extract(os.path.join(images, n)) for n in names]
    t_extract = (time.perf_counter() - t0) / len(names)
    n = len(names)
    inliers = np.zeros((n, n), np.int32)
    t0 = time.perf_counter()
    for i in range(n):
        for j in range(i + 1, n):
            m = match_descriptors(feats[i].descriptors, feats[j].descriptors)
            if len(m) < 3:
                continue
            v = ransac(feats[i].locations[m.pairs[:, 0]], feats[j].locations[m.pairs[:, 1]], model="affine",
                       residual_threshold=20.0, quality=m.quality, seed=i * n + j)
            inliers[i, j] = inliers[j, i] = v.num_inliers
    t_pairs = time.perf_counter() - t0
    lab = np.array([scene[x] for x in names])
    aps = []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = others[np.argsort(-inliers[i, others], kind="stable")]
        aps.append(_plain_ap(lab[order] == lab[i]))
    return {
        "photos": n,
        "map": float(np.nanmean(np.array(aps)) * 100),
        "seconds_per_image": t_extract,
        "ms_per_pair": t_pairs / max(1, n * (n - 1) // 2) * 1000,
        "conf": conf.to_dict(),
    }


def format_table(result: dict) -> str:
    """The line `delf bench pairs` prints."""
    return (f"{result['photos']} photos, scales {','.join(map(str, result['conf']['scales']))}: "
            f"mAP {result['map']:.1f}%, {result['seconds_per_image']:.2f} s/photo extraction, "
            f"{result['ms_per_pair']:.1f} ms/pair matching+verification")


__all__ = ["bench_pairs", "format_table"]
