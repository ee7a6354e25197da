"""Benchmark behind `delf bench ransac`: speed and accuracy of the verifier against scikit-image and OpenCV.

Putative matches come from OpenCV RootSIFT with Lowe's ratio 0.8, computed
once per pair, so the benchmark does not depend on our extractor. Every
method then sees the same matches in the same run; only the estimation call
is timed (median over repeats, the methods interleaved so that a noisy
neighbour on the machine hits them alike).

Besides the 20 homography/ and 33 wxbs/ pairs, ``--synthetic N`` warped copies
of landmarks/ photos (random crop, scale, rotation, perspective, colour
jitter, JPEG) are scored against their exact homography. The ground truth of
the homography/ pairs was itself estimated and is off by about a pixel on
some pairs, so sub-pixel differences between methods there are partly its
noise; the warps have none. They are reported apart ("synthetic" pairs,
``meta.synthetic``) and do not enter ``summary`` or the acceptance checks.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .bench_homography import project
from .sift import rootsift_features

AFFINE_THRESHOLD = 20.0  # DELF's setting (skimage.measure.ransac in the official code)
HOMOGRAPHY_THRESHOLD = 3.0  # OpenCV's default ransacReprojThreshold of findHomography
MAX_TRIALS = 2000  # OpenCV's default maxIters for both estimators
CONFIDENCE = 0.999
SIFT_FEATURES = 4000
RATIO = 0.8
SEED = 0
SYNTHETIC = 100  # default number of warped landmarks/ photos
# Warps of the synthetic pairs (delf.training.data.AugmentConf fields): more
# rotation and perspective than training augmentation, and most of the photo
# kept so that its corners stay near the copy.
SYNTHETIC_WARP = dict(copies=1, min_side=640, max_side=1024, min_area=0.6, max_rotation=30.0, perspective=0.12)
SYNTHETIC_JPEG_QUALITY = 90
METHODS = ("ours-affine", "ours-homography", "skimage-affine", "opencv-affine", "opencv-homography")


# ---------------------------------------------------------------- data


def _find_image(folder: str, stem: str) -> str:
    for ext in (".jpg", ".png", ".ppm", ".pgm", ".jpeg"):
        p = os.path.join(folder, stem + ext)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"{folder}: no {stem}.jpg/.png/.ppm photo")


def load_pairs(data: str) -> list[dict]:
    """Every benchmark pair: name, kind, the two photo paths, and its ground truth."""
    hdir = os.path.join(data, "homography")
    wdir = os.path.join(data, "wxbs")
    for d in (hdir, wdir):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{d}: no such folder (--data must hold homography/ and wxbs/)")
    pairs = []
    for seq in sorted(os.listdir(hdir)):
        folder = os.path.join(hdir, seq)
        if not os.path.isfile(os.path.join(folder, "H1to2p")):
            continue
        for n in range(2, 7):
            hfile = os.path.join(folder, f"H1to{n}p")
            if os.path.isfile(hfile):
                pairs.append({"pair": f"{seq}/1-{n}", "kind": "homography", "image1": _find_image(folder, "img1"),
                              "image2": _find_image(folder, f"img{n}"), "H": np.loadtxt(hfile).reshape(3, 3)})
    for group in sorted(os.listdir(wdir)):
        gdir = os.path.join(wdir, group)
        if not os.path.isdir(gdir):
            continue
        for name in sorted(os.listdir(gdir)):
            folder = os.path.join(gdir, name)
            cfile = os.path.join(folder, "corrs.txt")
            if not os.path.isfile(cfile):
                continue
            corrs = np.loadtxt(cfile, ndmin=2)
            if corrs.shape[1] != 4:
                raise ValueError(f"{cfile}: expected 4 columns (x1 y1 x2 y2), got {corrs.shape[1]}")
            pairs.append({"pair": f"{group}/{name}", "kind": "wxbs", "image1": _find_image(folder, "01"),
                          "image2": _find_image(folder, "02"), "corrs": corrs})
    if not pairs:
        raise ValueError(f"{data}: no benchmark pairs found")
    return pairs


def synthetic_pairs(data: str, count: int, seed: int = 0) -> list[dict]:
    """``count`` warped copies of landmarks/ photos, each with its exact homography.

    Photos are taken evenly over the sorted folder; photo i is warped with a
    generator seeded by (seed, i): a crop of 60-100% of the photo scaled to a
    longest side of 640-1024 px, rotated up to 30 degrees, corners jittered by
    up to 12% (perspective), colour jitter, then JPEG at quality 90. The pair
    is (photo, copy) and H maps photo pixels to copy pixels.
    """
    import cv2

    from delf.image import load_image
    from common.labels import IMAGE_SUFFIXES
    from engine.training.data import AugmentConf, augment

    if count <= 0:
        return []
    folder = os.path.join(data, "landmarks", "images")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder (--synthetic warps photos of landmarks/images)")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f"{folder}: no photos to warp")
    picks = np.unique(np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int))
    conf = AugmentConf(**SYNTHETIC_WARP)
    pairs = []
    for i in picks:
        path = os.path.join(folder, names[i])
        rgb = load_image(path)
        rng = np.random.default_rng([seed, int(i)])
        copy, h = augment(rgb, rng, conf)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(copy, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, SYNTHETIC_JPEG_QUALITY])
        if not ok:
            raise ValueError(f"{path}: could not encode its warped copy")
        pairs.append({"pair": f"synthetic/{names[i]}", "kind": "synthetic", "image1": path,
                      "image2": f"{path}#warp{seed}",
                      "gray1": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
                      "gray2": cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE), "H": h})
    return pairs


def rootsift(path: str, cache: dict, gray: np.ndarray | None = None):
    """OpenCV SIFT keypoints (x, y) and RootSIFT descriptors of one photo, and its (width, height)
    (memoised by ``path``). ``gray`` gives the pixels when the photo is not a file (a synthetic copy).
    """
    import cv2

    if path in cache:
        return cache[path]
    if gray is None:
        gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"{path}: cannot decode the photo")
    cache[path] = (*rootsift_features(gray, SIFT_FEATURES), gray.shape[::-1])
    return cache[path]


def ratio_matches(d1: np.ndarray, d2: np.ndarray):
    """Lowe's ratio test (``RATIO``, not mutual), brute force: (int64 index pairs (M, 2),
    float64 distance ratios)."""
    from verify.matching import match_descriptors

    if len(d1) == 0 or len(d2) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    m = match_descriptors(d1, d2, ratio=RATIO, mutual=False)
    return m.pairs, m.ratios.astype(np.float64)


# ---------------------------------------------------------------- methods


def _methods():
    import cv2
    from skimage.measure import ransac as sk_ransac
    from skimage.transform import AffineTransform

    import verify

    def ours(model, thr):
        def f(src, dst, quality):
            v = verify.ransac(src, dst, model=model, residual_threshold=thr, seed=SEED, quality=quality,
                              max_trials=MAX_TRIALS, confidence=CONFIDENCE)
            return v.model, v.num_inliers
        return f

    def skimage_affine(src, dst, quality):
        model, inliers = sk_ransac((src, dst), AffineTransform, min_samples=3,
                                   residual_threshold=AFFINE_THRESHOLD, max_trials=1000, rng=SEED)
        if model is None or inliers is None:
            return None, 0
        return np.asarray(model.params, np.float64), int(inliers.sum())

    def opencv_affine(src, dst, quality):
        m, inl = cv2.estimateAffine2D(src, dst, method=cv2.USAC_MAGSAC, ransacReprojThreshold=AFFINE_THRESHOLD,
                                      maxIters=MAX_TRIALS, confidence=CONFIDENCE)
        if m is None:
            return None, 0
        return np.vstack([m, [0.0, 0.0, 1.0]]), int(inl.sum())

    def opencv_homography(src, dst, quality):
        h, inl = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, HOMOGRAPHY_THRESHOLD, maxIters=MAX_TRIALS,
                                    confidence=CONFIDENCE)
        if h is None:
            return None, 0
        return np.asarray(h, np.float64), int(inl.sum())

    return {
        "ours-affine": ours("affine", AFFINE_THRESHOLD),
        "ours-homography": ours("homography", HOMOGRAPHY_THRESHOLD),
        "skimage-affine": skimage_affine,
        "opencv-affine": opencv_affine,
        "opencv-homography": opencv_homography,
    }


# ---------------------------------------------------------------- scoring


def model_error(pair: dict, model: np.ndarray | None, size1=None) -> float:
    """Mean corner error (homography pairs) or median hand-marked correspondence error (WxBS).

    A method that returns no model is scored as the identity map: what a
    caller that trusted it would be left with.
    """
    m = np.eye(3) if model is None else model
    if pair["kind"] in ("homography", "synthetic"):
        w, h = size1
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
        err = np.linalg.norm(project(m, corners) - project(pair["H"], corners), axis=1).mean()
    else:
        c = pair["corrs"]
        err = np.median(np.linalg.norm(project(m, c[:, :2]) - c[:, 2:], axis=1))
    return float(min(err, 1e9))


def fit_rms(pair: dict, models: dict) -> dict | None:
    """RMS transfer error (px) of each model over the same matches: those within
    the homography threshold of the ground truth. A ground truth that fits the
    matches worse than the estimates is itself off, by about the difference.
    None when fewer than 8 matches agree with the ground truth."""
    src, dst = pair["src"], pair["dst"]
    near = np.linalg.norm(project(pair["H"], src) - dst, axis=1) < HOMOGRAPHY_THRESHOLD
    if near.sum() < 8:
        return None
    out = {}
    for name, m in models.items():
        e = np.linalg.norm(project(np.eye(3) if m is None else m, src[near]) - dst[near], axis=1)
        out[name] = round(float(min(np.sqrt(np.mean(e ** 2)), 1e9)), 3)
    out["matches"] = int(near.sum())
    return out


# ---------------------------------------------------------------- run


def bench_ransac(data: str, repeats: int = 5, log=print, only: tuple[str, ...] | None = None,
                 synthetic: int = 0, seed: int = 0) -> dict:
    """Run the benchmark; returns the JSON-ready result (see the module docstring).

    ``only`` restricts it to the named pairs (e.g. "graf/1-3", "WLABS/kpi");
    ``synthetic`` adds that many warped landmarks/ photos (see synthetic_pairs).
    """
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if synthetic < 0:
        raise ValueError(f"--synthetic must be 0 or more, got {synthetic}")
    pairs = load_pairs(data)
    if only is not None:
        pairs = [p for p in pairs if p["pair"] in only]
        if not pairs:
            raise ValueError(f"none of the pairs {', '.join(only)} is in {data}")
    pairs += synthetic_pairs(data, synthetic, seed)
    methods = _methods()
    cache: dict = {}
    t0 = time.perf_counter()
    for p in pairs:
        loc1, d1, size1 = rootsift(p["image1"], cache, p.pop("gray1", None))
        loc2, d2, _ = rootsift(p["image2"], cache, p.pop("gray2", None))
        idx, ratios = ratio_matches(d1, d2)
        p["src"] = np.ascontiguousarray(loc1[idx[:, 0]], np.float64)
        p["dst"] = np.ascontiguousarray(loc2[idx[:, 1]], np.float64)
        p["src32"] = p["src"].astype(np.float32)
        p["dst32"] = p["dst"].astype(np.float32)
        p["quality"] = -ratios
        p["size1"] = size1
    log(f"RootSIFT matches for {len(pairs)} pairs in {time.perf_counter() - t0:.1f} s "
        f"(median {int(np.median([len(p['src']) for p in pairs]))} per pair)")

    def call(name, p):
        f = methods[name]
        if name.startswith("opencv"):
            return f(p["src32"], p["dst32"], None)
        return f(p["src"], p["dst"], p["quality"] if name.startswith("ours") else None)

    # Compile / initialise every method before any timing.
    warm = next(p for p in pairs if len(p["src"]) >= 8)
    for name in METHODS:
        call(name, warm)

    rows = []
    for k, p in enumerate(pairs):
        row = {"pair": p["pair"], "kind": p["kind"], "matches": int(len(p["src"]))}
        times = {name: [] for name in METHODS}
        results = {}
        for r in range(repeats):
            for name in METHODS:
                if len(p["src"]) < 4:
                    results[name] = (None, 0)
                    times[name].append(0.0)
                    continue
                t = time.perf_counter()
                out = call(name, p)
                times[name].append(time.perf_counter() - t)
                if r == 0:
                    results[name] = out
        for name in METHODS:
            model, inliers = results[name]
            row[name] = {
                "ms": round(1e3 * float(np.median(times[name])), 4),
                "inliers": int(inliers),
                "corner_error_px": round(model_error(p, model, p["size1"]), 3),
            }
        if p["kind"] != "wxbs":
            row["fit_rms_px"] = fit_rms(p, {"ground-truth": p["H"], "ours-homography": results["ours-homography"][0],
                                            "opencv-homography": results["opencv-homography"][0]})
        rows.append(row)
        log(f"[{k + 1:2d}/{len(pairs)}] {p['pair']:<22} {len(p['src']):5d} matches  "
            + "  ".join(f"{n} {row[n]['ms']:.2f}ms/{row[n]['corner_error_px']:.1f}px" for n in
                        ("ours-homography", "opencv-homography")))

    # The summary and the acceptance cover the real pairs only (see the module docstring).
    real = [r for r in rows if r["kind"] != "synthetic"] or rows
    summary = {}
    for name in METHODS:
        summary[name] = {
            "median_ms": round(float(np.median([r[name]["ms"] for r in real])), 4),
            "median_inliers": float(np.median([r[name]["inliers"] for r in real])),
            "mean_corner_error_px": round(float(np.mean([r[name]["corner_error_px"] for r in real])), 3),
        }
    meta = _meta(real, summary, repeats)
    meta["synthetic"] = _synthetic_meta([r for r in rows if r["kind"] == "synthetic"], seed)
    return {"summary": summary, "pairs": rows, "meta": meta}


def _synthetic_meta(rows: list[dict], seed: int) -> dict | None:
    """Corner errors on the warped copies (exact ground truth), per method, and ours against OpenCV's."""
    if not rows:
        return None
    out = {"pairs": len(rows), "seed": seed, "warp": SYNTHETIC_WARP, "jpeg_quality": SYNTHETIC_JPEG_QUALITY,
           "methods": {}}
    for name in METHODS:
        e = np.array([r[name]["corner_error_px"] for r in rows])
        out["methods"][name] = {"median_corner_error_px": round(float(np.median(e)), 3),
                                "over_10px": int((e > 10).sum()),
                                "median_ms": round(float(np.median([r[name]["ms"] for r in rows])), 4)}
    for ours, theirs in (("ours-homography", "opencv-homography"), ("ours-affine", "opencv-affine")):
        a = np.array([r[ours]["corner_error_px"] for r in rows])
        b = np.array([r[theirs]["corner_error_px"] for r in rows])
        out[f"{ours}_not_worse_than_{theirs}"] = f"{int((a <= b).sum())}/{len(rows)}"
        # Geometric mean of the per-pair error ratio: below 1, ours lands closer to the truth.
        out[f"{ours}_over_{theirs}_error_ratio"] = round(
            float(np.exp(np.mean(np.log(np.maximum(a, 1e-6) / np.maximum(b, 1e-6))))), 3)
    return out


def _meta(rows: list[dict], summary: dict, repeats: int) -> dict:
    """Settings, per-kind figures and the acceptance checks of issue 3."""
    hom = [r for r in rows if r["kind"] == "homography"]
    wx = [r for r in rows if r["kind"] == "wxbs"]
    per_kind = {}
    for name in METHODS:
        per_kind[name] = {
            "homography_mean_corner_error_px": round(float(np.mean([r[name]["corner_error_px"] for r in hom])), 3)
            if hom else None,
            "homography_median_corner_error_px": round(float(np.median([r[name]["corner_error_px"] for r in hom])),
                                                       3) if hom else None,
            "wxbs_median_error_px": round(float(np.median([r[name]["corner_error_px"] for r in wx])), 3)
            if wx else None,
            "homography_median_ms": round(float(np.median([r[name]["ms"] for r in hom])), 4) if hom else None,
            "wxbs_median_ms": round(float(np.median([r[name]["ms"] for r in wx])), 4) if wx else None,
        }
    ms = {n: summary[n]["median_ms"] for n in METHODS}
    not_worse = sum(r["ours-homography"]["corner_error_px"] <= r["opencv-homography"]["corner_error_px"]
                    for r in hom)
    acceptance = {
        "speedup_ours_affine_vs_skimage_affine": round(ms["skimage-affine"] / max(ms["ours-affine"], 1e-9), 1),
        "speedup_ours_affine_vs_opencv_affine": round(ms["opencv-affine"] / max(ms["ours-affine"], 1e-9), 2),
        "speedup_ours_homography_vs_opencv_homography":
            round(ms["opencv-homography"] / max(ms["ours-homography"], 1e-9), 2),
        "homography_pairs_ours_not_worse_than_opencv": f"{not_worse}/{len(hom)}",
    }
    acceptance["passed"] = bool(
        acceptance["speedup_ours_affine_vs_skimage_affine"] >= 100
        and ms["ours-affine"] <= ms["opencv-affine"]
        and ms["ours-homography"] <= ms["opencv-homography"]
        and not_worse >= min(15, len(hom))
    )
    return {
        "settings": {
            "features": f"OpenCV SIFT (nfeatures={SIFT_FEATURES}) + RootSIFT, exact 2-NN, ratio {RATIO}",
            "affine_threshold_px": AFFINE_THRESHOLD, "homography_threshold_px": HOMOGRAPHY_THRESHOLD,
            "max_trials": MAX_TRIALS, "confidence": CONFIDENCE,
            "skimage": "skimage.measure.ransac(AffineTransform, min_samples=3, residual_threshold=20, "
                       "max_trials=1000)",
            "opencv": "cv2.estimateAffine2D / cv2.findHomography, method=cv2.USAC_MAGSAC, same threshold, "
                      "maxIters and confidence as ours",
            "ours": "verify.ransac, seed 0, quality = minus the SIFT distance ratio (PROSAC order)",
            "timing": f"median of {repeats} calls per pair, estimation call only, methods interleaved",
            "no_model": "a method returning no model is scored as the identity map",
        },
        "per_kind": per_kind,
        "acceptance": acceptance,
    }


def print_table(result: dict, out=sys.stdout) -> None:
    s, meta = result["summary"], result["meta"]
    sk = s["skimage-affine"]["median_ms"]
    print(f"\n{'method':<18} {'median ms':>10} {'x skimage':>10} {'inliers':>8} {'H corner px':>12} "
          f"{'H median px':>12} {'WxBS px':>9} {'mean px':>9}", file=out)
    def num(v, width, digits):
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    for name in METHODS:
        k = meta["per_kind"][name]
        print(f"{name:<18} {s[name]['median_ms']:>10.3f} {sk / max(s[name]['median_ms'], 1e-9):>10.1f} "
              f"{s[name]['median_inliers']:>8.0f} {num(k['homography_mean_corner_error_px'], 12, 2)} "
              f"{num(k['homography_median_corner_error_px'], 12, 2)} {num(k['wxbs_median_error_px'], 9, 1)} "
              f"{s[name]['mean_corner_error_px']:>9.1f}", file=out)
    a = meta["acceptance"]
    print(f"\nours-affine is {a['speedup_ours_affine_vs_skimage_affine']}x faster than skimage-affine and "
          f"{a['speedup_ours_affine_vs_opencv_affine']}x opencv-affine; ours-homography "
          f"{a['speedup_ours_homography_vs_opencv_homography']}x opencv-homography; corner error not worse than "
          f"opencv-homography on {a['homography_pairs_ours_not_worse_than_opencv']} homography pairs. "
          f"Acceptance: {'passed' if a['passed'] else 'NOT passed'}.", file=out)
    syn = meta.get("synthetic")
    if syn:
        print(f"\nSynthetic warps ({syn['pairs']} landmarks/ photos, exact homography; not in the table above):",
              file=out)
        for name in METHODS:
            m = syn["methods"][name]
            print(f"  {name:<18} median corner error {m['median_corner_error_px']:.3f} px, "
                  f"{m['over_10px']} over 10 px", file=out)
        print(f"  ours-homography no worse than opencv-homography on "
              f"{syn['ours-homography_not_worse_than_opencv-homography']} "
              f"(error ratio {syn['ours-homography_over_opencv-homography_error_ratio']}); ours-affine vs "
              f"opencv-affine {syn['ours-affine_not_worse_than_opencv-affine']} "
              f"(ratio {syn['ours-affine_over_opencv-affine_error_ratio']})", file=out)
