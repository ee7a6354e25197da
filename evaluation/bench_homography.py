"""Benchmark behind `delf bench homography`: are the keypoints that match across a
viewpoint, zoom, blur or light change at the same place? Mutual-nearest-neighbour
matches between img1 and imgN of each sequence, checked against the ground-truth H.

Methods: delf (the conf given), random (same extractor, random locations), sift
(OpenCV RootSIFT, 1000 keypoints)."""

from __future__ import annotations

import os
import time

import numpy as np

from .sift import rootsift_features

THRESHOLDS = (5, 10, 20)
KEYS = tuple(f"correct_{t}px" for t in THRESHOLDS) + ("matches",)
METHODS = ("delf", "random", "sift")
SIFT_FEATURES = 1000


def sequences(data: str) -> list[str]:
    if not os.path.isdir(data):
        raise FileNotFoundError(f"{data}: no such folder")
    seqs = sorted(d for d in os.listdir(data) if os.path.isfile(os.path.join(data, d, "H1to2p")))
    if not seqs:
        raise ValueError(f"{data}: no sequences (subfolders with img1.* and H1to2p)")
    return seqs


def _image(folder: str, i: int) -> str:
    for ext in (".jpg", ".png", ".ppm", ".pgm"):
        p = os.path.join(folder, f"img{i}{ext}")
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"{folder}: no img{i} photo")


def project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by the 3x3 homography ``h``; a point sent to infinity lands at +-1e9."""
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p[:, :2] / p[:, 2:3]
    return np.nan_to_num(out, nan=1e9, posinf=1e9, neginf=-1e9)


def _sift(path: str):
    """OpenCV RootSIFT of a photo file: (locations (x, y), descriptors)."""
    import cv2

    from delf.image import load_image

    return rootsift_features(cv2.cvtColor(load_image(path), cv2.COLOR_RGB2GRAY), SIFT_FEATURES)


def pair_scores(loc1, d1, loc2, d2, h) -> dict:
    """Mutual-NN matches of one pair and the fraction within each threshold of where H puts them."""
    from verify.matching import match_descriptors

    m = match_descriptors(d1, d2, ratio=None, mutual=True).pairs
    out = {"matches": int(len(m))}
    if len(m):
        err = np.linalg.norm(project(h, loc1[m[:, 0]]) - loc2[m[:, 1]], axis=1)
    for t in THRESHOLDS:
        out[f"correct_{t}px"] = float((err < t).mean()) if len(m) else 0.0
    return out


def bench_homography(data: str, methods=METHODS, conf=None) -> dict:
    """Run the benchmark on the sequences under ``data`` (one subfolder each, img1..img6 and
    H1toNp); ``conf`` is the ExtractorConf of delf and random (default: the default preset).
    Returns {"summary": {method: means}, "conf": ..., "pairs": [per-pair scores]}."""
    from delf.conf import ExtractorConf
    from delf.extractor import make_extractor

    methods = list(methods)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)} ({', '.join(METHODS)})")
    conf = ExtractorConf.preset("default") if conf is None else conf
    extractors = {}
    if "delf" in methods:
        extractors["delf"] = make_extractor(conf)
    if "random" in methods:
        extractors["random"] = make_extractor(conf.replace(scoring="random"))
    pairs, seconds = [], {m: 0.0 for m in methods}
    for seq in sequences(data):
        folder = os.path.join(data, seq)
        feats = {}
        for m in methods:
            t = time.perf_counter()
            for i in range(1, 7):
                if m == "sift":
                    feats[m, i] = _sift(_image(folder, i))
                else:
                    f = extractors[m].extract(_image(folder, i))
                    feats[m, i] = (f.locations, f.descriptors)
            seconds[m] += time.perf_counter() - t
        for n in range(2, 7):
            h = np.loadtxt(os.path.join(folder, f"H1to{n}p"))
            row = {"pair": f"{seq}/1-{n}", "sequence": seq}
            for m in methods:
                row[m] = pair_scores(*feats[m, 1], *feats[m, n], h)
            pairs.append(row)
    summary = {m: {k: float(np.mean([p[m][k] for p in pairs])) for k in KEYS} for m in methods}
    for m in methods:
        summary[m]["seconds_per_image"] = seconds[m] / (6 * len(pairs) / 5)
    return {"summary": summary, "conf": conf.to_dict(), "pairs": pairs}


def format_table(result: dict) -> str:
    """Per-sequence and mean scores of each method, as `delf bench homography` prints them."""
    pairs, summary = result["pairs"], result["summary"]
    methods = list(summary)
    head = f"{'sequence':10s} {'method':7s} " + " ".join(f"{k:>12s}" for k in KEYS)
    lines = [head, "-" * len(head)]
    for seq in sorted({p["sequence"] for p in pairs}):
        rows = [p for p in pairs if p["sequence"] == seq]
        for m in methods:
            vals = [np.mean([r[m][k] for r in rows]) for k in KEYS]
            lines.append(f"{seq:10s} {m:7s} " + " ".join(f"{v:12.3f}" for v in vals))
    lines.append("-" * len(head))
    for m in methods:
        lines.append(f"{'mean':10s} {m:7s} " + " ".join(f"{summary[m][k]:12.3f}" for k in KEYS))
    return "\n".join(lines)


__all__ = ["METHODS", "THRESHOLDS", "bench_homography", "format_table", "pair_scores", "project", "sequences"]
