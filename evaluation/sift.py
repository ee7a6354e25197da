"""RootSIFT (Arandjelovic and Zisserman, CVPR 2012): the classic reference the
engine is measured against, in `delf evaluate roxford --method sift` and the
benchmarks. OpenCV SIFT keypoints, each descriptor L1-normalised and
square-rooted (so that Euclidean distance compares like the Hellinger kernel)."""

from __future__ import annotations

import os
import time

import numpy as np

from .metrics import evaluate_rankings, protocol


def sift_features(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(xy float32 (N, 2), raw SIFT float32 (N, 128)) of up to ``n`` OpenCV SIFT keypoints of a grey photo."""
    import cv2

    kps, desc = cv2.SIFT_create(nfeatures=n).detectAndCompute(gray, None)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in kps], np.float32), desc.astype(np.float32)


def root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT of raw SIFT descriptors (any numeric dtype): float32, unit L2 norm."""
    d = np.asarray(desc).astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


def rootsift_features(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(xy float32 (N, 2), RootSIFT float32 (N, 128)) of up to ``n`` keypoints of a grey photo."""
    xy, desc = sift_features(gray, n)
    return xy, root_sift(desc)


# ---------------------------------------------------------------- the Revisited Oxford reference

SIFT_FEATURES = 2000
SIFT_RATIO = 0.8
SIFT_THRESHOLD = 20.0


def sift_database(jpg: str, names: list, work: str, progress: bool = True, log=print) -> dict:
    """{name: (xy, desc uint8)} for the database, cached in WORK/sift-2000.h5 (resumable)."""
    import cv2
    import h5py
    from tqdm import tqdm

    path = os.path.join(work, f"sift-{SIFT_FEATURES}.h5")
    out = {}
    with h5py.File(path, "a") as f:
        todo = [n for n in names if n not in f]
        if todo:
            log(f"RootSIFT of {len(todo)} database photos -> {path}")
        for n in tqdm(todo, desc="sift", unit="photo", disable=None if progress else True):
            p = os.path.join(jpg, f"{n}.jpg")
            gray = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                log(f"{p}: cannot decode the photo; left out")
                continue
            xy, desc = sift_features(gray, SIFT_FEATURES)
            desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)  # SIFT values are whole bytes: stored as such
            g = f.create_group(n)
            g["xy"], g["desc"] = xy, desc
            f.flush()
        for n in names:
            if n in f:
                out[n] = (f[n]["xy"][()], f[n]["desc"][()])
    return out


def evaluate_roxford_sift(data: str, work: str, progress: bool = True, log=print) -> dict:
    """The classic reference on the same protocol: RootSIFT (2000), mutual + ratio 0.8 against every database
    photo, affine USAC_MAGSAC 20 px, ranking by inliers (no re-ranking: by putative matches)."""
    import cv2
    from tqdm import tqdm

    from verify.matching import match_descriptors

    from .roxford import _mean, crop_query, oxford_layout

    gnd, jpg, qdir = oxford_layout(data)
    os.makedirs(work, exist_ok=True)
    db = sift_database(jpg, gnd["database"], work, progress, log)
    db_names = [n for n in gnd["database"] if n in db]
    db_desc = {n: root_sift(db[n][1]) for n in db_names}
    rer, norr, per_query = {}, {}, []
    t_search, t_verify = [], []
    for q in gnd["queries"]:
        name = q["query"]
        rgb = crop_query(os.path.join(qdir, f"{name}.jpg"), q["bbx"])
        qxy, qd = rootsift_features(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), SIFT_FEATURES)
        inl = np.zeros(len(db_names), np.int64)
        put = np.zeros(len(db_names), np.int64)
        ts = tv = 0.0
        for j, n in enumerate(tqdm(db_names, desc=name, unit="photo", disable=None if progress else True, leave=False)):
            t0 = time.perf_counter()
            m = match_descriptors(qd, db_desc[n], ratio=SIFT_RATIO, mutual=True).pairs
            t1 = time.perf_counter()
            put[j] = len(m)
            if len(m) >= 3:
                _, mask = cv2.estimateAffine2D(qxy[m[:, 0]], db[n][0][m[:, 1]], method=cv2.USAC_MAGSAC,
                                               ransacReprojThreshold=SIFT_THRESHOLD)
                inl[j] = int(mask.sum()) if mask is not None else 0
            tv += time.perf_counter() - t1
            ts += t1 - t0
        t_search.append(ts * 1000)
        t_verify.append(tv * 1000)
        idx = np.arange(len(db_names))
        rer[name] = [db_names[i] for i in np.lexsort((idx, -put, -inl))]
        norr[name] = [db_names[i] for i in np.lexsort((idx, -put))]
        pos, junk = protocol(q, "medium")
        top = next((n for n in rer[name] if n not in junk), None)
        per_query.append({"query": name, "features": len(qxy), "top1": top, "top1_positive": top in pos,
                          "top1_inliers": int(inl[db_names.index(top)]) if top else 0,
                          "search_ms": round(ts * 1000, 1), "verify_ms": round(tv * 1000, 1)})
        log(f"{name}: {len(qxy)} SIFT keypoints, top-1 {top} ({per_query[-1]['top1_inliers']} inliers)")
    res = evaluate_rankings(gnd, rer)
    nr = evaluate_rankings(gnd, norr)
    for pq in per_query:
        pq.update({f"ap_{s}": res["per_query"].get(pq["query"], {}).get(s, {}).get("ap") for s in ("medium", "hard")})
    return {
        "method": "sift", "medium": res["medium"], "hard": res["hard"],
        "no_rerank": {"medium": nr["medium"], "hard": nr["hard"]},
        "timing_ms": {"search": _mean(t_search), "verify": _mean(t_verify), "verify_skimage": None},
        "per_query": per_query,
        "setup": {"data": os.path.abspath(data), "database_photos": len(db_names), "queries": len(gnd["queries"]),
                  "sift_features": SIFT_FEATURES, "ratio": SIFT_RATIO, "mutual": True,
                  "verification": "cv2.estimateAffine2D USAC_MAGSAC 20 px, every database photo"},
    }


__all__ = ["evaluate_roxford_sift", "root_sift", "rootsift_features", "sift_database", "sift_features"]
