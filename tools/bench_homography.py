"""`delf bench homography`: are the keypoints that match across a viewpoint,
zoom, blur or light change at the same place? Mutual-nearest-neighbour matches
between img1 and imgN of each sequence, checked against the ground-truth H."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .confargs import add_conf_args, conf_from_args

THRESHOLDS = (5, 10, 20)


def register(sub) -> None:
    p = sub.add_parser("homography", help="keypoint/match accuracy on the Oxford affine sequences",
                       description="For each of the 20 pairs img1 -> imgN with ground-truth H: mutual nearest-"
                                   "neighbour matches; fraction whose img1 keypoint, mapped by H, lands within "
                                   "5, 10, 20 px of its match. Methods: delf (the conf given), random (same "
                                   "extractor, random locations), sift (OpenCV RootSIFT, 1000 keypoints).")
    p.add_argument("--data", required=True, help="folder with one subfolder per sequence (img1..img6, H1toNp)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--methods", default="delf,random,sift", help="comma-separated (default: %(default)s)")
    add_conf_args(p)
    p.set_defaults(func=run)


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


def mutual_nn(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """(M, 2) index pairs that are each other's nearest neighbour."""
    if len(d1) == 0 or len(d2) == 0:
        return np.zeros((0, 2), np.int64)
    sim = d1 @ d2.T
    nn12, nn21 = sim.argmax(axis=1), sim.argmax(axis=0)
    i = np.flatnonzero(nn21[nn12] == np.arange(len(d1)))
    return np.stack([i, nn12[i]], axis=1)


def project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:3]


def sift_features(path: str, n: int = 1000):
    """OpenCV RootSIFT: (locations (x, y), descriptors)."""
    import cv2

    from delf.image import load_image

    gray = cv2.cvtColor(load_image(path), cv2.COLOR_RGB2GRAY)
    kps, desc = cv2.SIFT_create(nfeatures=n).detectAndCompute(gray, None)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    desc = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    desc = np.sqrt(desc).astype(np.float32)
    return np.array([k.pt for k in kps], np.float32), desc


def pair_scores(loc1, d1, loc2, d2, h) -> dict:
    m = mutual_nn(d1, d2)
    out = {"matches": int(len(m))}
    if len(m):
        err = np.linalg.norm(project(h, loc1[m[:, 0]]) - loc2[m[:, 1]], axis=1)
    for t in THRESHOLDS:
        out[f"correct_{t}px"] = float((err < t).mean()) if len(m) else 0.0
    return out


def run(args) -> int:
    from delf.extractor import make_extractor

    from .common import write_json

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - {"delf", "random", "sift"}
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)} (delf, random, sift)")
    conf = conf_from_args(args)
    extractors = {}
    if "delf" in methods:
        extractors["delf"] = make_extractor(conf)
    if "random" in methods:
        extractors["random"] = make_extractor(conf.replace(scoring="random"))
    pairs, seconds = [], {m: 0.0 for m in methods}
    for seq in sequences(args.data):
        folder = os.path.join(args.data, seq)
        feats = {}
        for m in methods:
            t = time.perf_counter()
            for i in range(1, 7):
                if m == "sift":
                    feats[m, i] = sift_features(_image(folder, i))
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
    keys = [f"correct_{t}px" for t in THRESHOLDS] + ["matches"]
    summary = {m: {k: float(np.mean([p[m][k] for p in pairs])) for k in keys} for m in methods}
    for m in methods:
        summary[m]["seconds_per_image"] = seconds[m] / (6 * len(pairs) / 5)
    result = {"summary": summary, "conf": conf.to_dict(), "pairs": pairs}
    _print_table(pairs, summary, methods, keys)
    if args.json:
        write_json(args.json, result)
    return 0


def _print_table(pairs, summary, methods, keys) -> None:
    head = f"{'sequence':10s} {'method':7s} " + " ".join(f"{k:>12s}" for k in keys)
    print(head)
    print("-" * len(head))
    for seq in sorted({p["sequence"] for p in pairs}):
        rows = [p for p in pairs if p["sequence"] == seq]
        for m in methods:
            vals = [np.mean([r[m][k] for r in rows]) for k in keys]
            print(f"{seq:10s} {m:7s} " + " ".join(f"{v:12.3f}" for v in vals))
    print("-" * len(head))
    for m in methods:
        print(f"{'mean':10s} {m:7s} " + " ".join(f"{summary[m][k]:12.3f}" for k in keys))
    sys.stdout.flush()
