"""`delf bench pairs`: same-scene retrieval on a labelled photo collection by
exhaustive pairwise matching and verification (no index): every photo queries
all others, ranked by RANSAC inliers; mAP against the labels. Meant for
choosing extractor settings on non-evaluation photos (e.g. ../shared/data/landmarks)."""

from __future__ import annotations

import csv
import os
import time

import numpy as np

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser("pairs", help="same-scene retrieval mAP on a labelled collection, all pairs verified",
                       description="Extracts every photo listed in LABELS, matches and verifies every pair "
                                   "(mutual NN + ratio, affine RANSAC), ranks each photo's others by inliers "
                                   "and reports the mean average precision of same-label retrieval.")
    p.add_argument("--images", required=True, help="folder of the photos named in --labels")
    p.add_argument("--labels", required=True, help="CSV with columns image,scene (header line)")
    p.add_argument("--limit", type=int, help="use only the first N photos (default: all)")
    p.add_argument("--json", help="write the results here")
    add_conf_args(p)
    p.set_defaults(func=run)


def read_labels(path: str) -> dict[str, str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such labels file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image" not in rows[0] or "scene" not in rows[0]:
        raise ValueError(f"{path}: needs a header with the columns image,scene")
    return {r["image"]: r["scene"] for r in rows}


def average_precision(ranked_positive: np.ndarray, num_positives: int) -> float:
    """Plain AP of a ranking given as a boolean array (True = positive)."""
    if num_positives == 0:
        return float("nan")
    hits = np.cumsum(ranked_positive)
    ranks = np.flatnonzero(ranked_positive) + 1
    return float(np.sum(hits[ranked_positive] / ranks) / num_positives)


def run(args) -> int:
    from delf.extractor import make_extractor
    from verify import ransac
    from verify.matching import match_descriptors

    from .common import write_json

    labels = read_labels(args.labels)
    names = sorted(labels)[: args.limit] if args.limit else sorted(labels)
    conf = conf_from_args(args)
    ex = make_extractor(conf)
    t0 = time.perf_counter()
    feats = [ex.extract(os.path.join(args.images, n)) for n in names]
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
    lab = np.array([labels[x] for x in names])
    aps = []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = others[np.argsort(-inliers[i, others], kind="stable")]
        pos = lab[order] == lab[i]
        aps.append(average_precision(pos, int(pos.sum())))
    aps = np.array(aps)
    result = {
        "photos": n,
        "map": float(np.nanmean(aps) * 100),
        "seconds_per_image": t_extract,
        "ms_per_pair": t_pairs / max(1, n * (n - 1) // 2) * 1000,
        "conf": conf.to_dict(),
    }
    print(f"{n} photos, scales {','.join(map(str, conf.scales))}: mAP {result['map']:.1f}%, "
          f"{t_extract:.2f} s/photo extraction, {result['ms_per_pair']:.1f} ms/pair matching+verification")
    if args.json:
        write_json(args.json, result)
    return 0
