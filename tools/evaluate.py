"""`delf evaluate roxford` and `delf evaluate reject`: retrieval quality on the
Revisited Oxford protocol, and rejection of photos of places the database does
not hold.

Database features and the index are cached in a work folder keyed by the
extractor conf, so that a second run (another threshold, another scoring of
the queries, SIFT after DELF) costs only the queries.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from .revisited import evaluate_rankings, load_gnd, protocol


def conf_key(resolved: dict) -> str:
    return hashlib.sha1(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:10]


def _log_default(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- database


def oxford_layout(data: str) -> tuple[dict, str, str]:
    gnd_path = os.path.join(data, "gnd.json")
    jpg, queries = os.path.join(data, "jpg"), os.path.join(data, "queries")
    for p in (jpg, queries):
        if not os.path.isdir(p):
            raise FileNotFoundError(f"{p}: no such folder (expected jpg/, queries/ and gnd.json in {data})")
    return load_gnd(gnd_path), jpg, queries


def database_features(jpg: str, names: list, work: str, extractor, db_features: str | None = None,
                      progress: bool = True, log=_log_default) -> str:
    """Path of a features file holding every database photo (extracted into the work folder when needed)."""
    from delf.conf import describe_mismatch
    from delf.extract import extract_to_h5
    from delf.featio import FeatureFile

    want = extractor.resolved_conf()
    if db_features:
        with FeatureFile(db_features) as ff:
            diff = describe_mismatch(ff.conf, want)
            if diff or ff.conf.get("scoring") != want.get("scoring"):
                raise ValueError(f"{db_features}: made with another extractor conf than this run's "
                                 f"({diff or 'scoring ' + repr(ff.conf.get('scoring'))}); drop --db-features "
                                 f"or pass matching options")
            missing = [n for n in names if f"{n}.jpg" not in ff]
        if missing:
            raise ValueError(f"{db_features}: lacks {len(missing)} database photo(s), e.g. {missing[0]}.jpg")
        return db_features
    path = os.path.join(work, f"db-{conf_key(want)}.h5")
    items = [(os.path.join(jpg, f"{n}.jpg"), f"{n}.jpg") for n in names]
    log(f"database features: {path}")
    rep = extract_to_h5(items, path, extractor=extractor, progress=progress)
    if rep.failed:
        log(rep.summary())
    return path


def database_index(features: str, work: str, log=_log_default) -> str:
    """An index of ``features`` in the work folder (built once, reused while the features file is unchanged)."""
    from delf.featio import FeatureFile
    from index import IndexConf, build_index, index_info

    st = os.stat(features)
    with FeatureFile(features) as ff:
        key = conf_key({"conf": ff.conf, "photos": len(ff), "size": st.st_size, "path": os.path.abspath(features),
                        "build": "one-thread"})
    idx = os.path.join(work, f"index-{key}")
    if os.path.isfile(os.path.join(idx, "manifest.json")):
        try:
            index_info(idx)
            return idx
        except (OSError, ValueError):
            pass
    log(f"building the index {idx} (once per database features file)")
    t0 = time.perf_counter()
    # One build thread: Annoy's multi-threaded builds differ from run to run, and with a handful of
    # queries one photo's rank moves Hard mAP by many points; an evaluation must be reproducible.
    build_index(idx, [features], IndexConf(build_threads=1), overwrite=True)
    log(f"index built in {time.perf_counter() - t0:.0f} s")
    return idx


def crop_query(path: str, bbx) -> np.ndarray:
    from delf.image import load_image

    rgb = load_image(path)
    h, w = rgb.shape[:2]
    x1, y1 = max(int(np.floor(bbx[0])), 0), max(int(np.floor(bbx[1])), 0)
    x2, y2 = min(int(np.ceil(bbx[2])), w), min(int(np.ceil(bbx[3])), h)
    if x2 - x1 < 16 or y2 - y1 < 16:
        raise ValueError(f"{path}: query box {list(bbx)} leaves less than 16x16 pixels")
    return np.ascontiguousarray(rgb[y1:y2, x1:x2])


def _full_ranking(index, feats, settings, answer, db_names: list) -> tuple[list, list]:
    """(re-ranked, vote-only) rankings of every database photo (names without .jpg):
    the verified candidates by (inliers, votes), then the rest by votes, then
    the photos without a vote in database order."""
    all_cands = index.search(feats, settings.search.replace(top_n=len(db_names)))
    vote_order = [n[:-4] if n.endswith(".jpg") else n for n in all_cands.names]
    head = [r.name[:-4] if r.name.endswith(".jpg") else r.name for r in answer.results]
    seen = set(head)
    rest = [n for n in vote_order if n not in seen]
    seen |= set(rest)
    tail = [n for n in db_names if n not in seen]
    seen_v = set(vote_order)
    return head + rest + tail, vote_order + [n for n in db_names if n not in seen_v]


def skimage_verify_ms(answer) -> float:
    """Time of DELF's own verification (scikit-image RANSAC: affine, 3 samples,
    20 px, 1000 trials) on exactly the candidates ``answer`` verified."""
    from skimage.measure import ransac as sk_ransac
    from skimage.transform import AffineTransform

    t0 = time.perf_counter()
    for r in answer.results:
        if not r.verified or len(r.query_xy) < 3:
            continue
        try:
            sk_ransac((np.asarray(r.query_xy, np.float64), np.asarray(r.db_xy, np.float64)), AffineTransform,
                      min_samples=3, residual_threshold=20.0, max_trials=1000, rng=0)
        except ValueError:
            pass
    return (time.perf_counter() - t0) * 1000


# ---------------------------------------------------------------- roxford


def evaluate_roxford(data: str, work: str, conf=None, method: str = "delf", verify_top: int = 100,
                     skimage_queries: int = 2, db_features: str | None = None, threshold: float | None = None,
                     progress: bool = True, log=_log_default) -> dict:
    if method == "sift":
        return evaluate_roxford_sift(data, work, progress=progress, log=log)
    if method != "delf":
        raise ValueError(f"method must be 'delf' or 'sift', got {method!r}")
    from delf.extractor import make_extractor
    from index import Index
    from verify.rerank import RerankConf

    from .searching import SearchSettings, answer_query

    gnd, jpg, qdir = oxford_layout(data)
    os.makedirs(work, exist_ok=True)
    extractor = make_extractor(conf)
    feats_path = database_features(jpg, gnd["database"], work, extractor, db_features, progress, log)
    idx_path = database_index(feats_path, work, log)
    settings = SearchSettings(rerank=RerankConf(verify_top=verify_top), threshold=threshold).resolved()
    rer, norr, per_query = {}, {}, []
    t_search, t_verify, t_sk, t_extract = [], [], [], []
    # All queries are extracted first: TensorFlow's worker threads keep spinning for a
    # while after an extraction and would slow the search timed right after it.
    query_feats = []
    for q in gnd["queries"]:
        name = q["query"]
        t0 = time.perf_counter()
        query_feats.append(extractor.extract(crop_query(os.path.join(qdir, f"{name}.jpg"), q["bbx"]), name))
        t_extract.append((time.perf_counter() - t0) * 1000)
    with Index(idx_path) as index:
        for i, (q, feats) in enumerate(zip(gnd["queries"], query_feats)):
            name = q["query"]
            # Warm the kernels (Numba compile or cache load) outside the timings.
            if i == 0:
                answer_query(index, feats, name, settings)
            ans = answer_query(index, feats, name, settings)
            t_search.append(ans.search_ms)
            t_verify.append(ans.verify_ms)
            if i < skimage_queries:
                t_sk.append(skimage_verify_ms(ans))
            rer[name], norr[name] = _full_ranking(index, feats, settings, ans, gnd["database"])
            pos, junk = protocol(q, "medium")
            top = next((r for r in ans.results if r.name[:-4] not in junk), None)
            per_query.append({
                "query": name, "features": len(feats), "decision": "match" if ans.match else "no match",
                "confidence": round(ans.confidence, 4),
                "top1": top.name[:-4] if top else None, "top1_positive": bool(top and top.name[:-4] in pos),
                "top1_inliers": top.inliers if top else 0,
                "search_ms": round(ans.search_ms, 2), "verify_ms": round(ans.verify_ms, 2),
            })
            log(f"{name}: {len(feats)} features, top-1 {per_query[-1]['top1']} ({per_query[-1]['top1_inliers']} "
                f"inliers, confidence {ans.confidence:.3f}), search {ans.search_ms:.0f} ms, verify "
                f"{ans.verify_ms:.0f} ms")
    res = evaluate_rankings(gnd, rer)
    nr = evaluate_rankings(gnd, norr)
    for pq in per_query:
        pq.update({f"ap_{s}": res["per_query"].get(pq["query"], {}).get(s, {}).get("ap") for s in ("medium", "hard")})
        pq.update({f"ap_{s}_no_rerank": nr["per_query"].get(pq["query"], {}).get(s, {}).get("ap")
                   for s in ("medium", "hard")})
    timing = {"search": _mean(t_search), "verify": _mean(t_verify), "verify_skimage": _mean(t_sk),
              "extract_query": _mean(t_extract)}
    if t_sk:
        mine = _mean(t_search[: len(t_sk)]) + _mean(t_verify[: len(t_sk)])
        timing["skimage_queries"] = len(t_sk)
        timing["speedup_vs_skimage"] = round((_mean(t_search[: len(t_sk)]) + _mean(t_sk)) / max(mine, 1e-9), 2)
    return {
        "method": "delf", "medium": res["medium"], "hard": res["hard"],
        "no_rerank": {"medium": nr["medium"], "hard": nr["hard"]},
        "timing_ms": timing, "per_query": per_query,
        "setup": {"data": os.path.abspath(data), "database_photos": len(gnd["database"]),
                  "queries": len(gnd["queries"]), "verify_top": verify_top, "features": feats_path,
                  "index": idx_path, "extractor_conf": extractor.resolved_conf(),
                  "threshold": settings.threshold},
    }


def _mean(v) -> float | None:
    return round(float(np.mean(v)), 3) if len(v) else None


# ---------------------------------------------------------------- SIFT reference

SIFT_FEATURES = 2000
SIFT_RATIO = 0.8
SIFT_THRESHOLD = 20.0


def sift_features(gray: np.ndarray):
    """(xy float32 (N, 2), raw SIFT uint8 (N, 128)) of up to SIFT_FEATURES keypoints."""
    import cv2

    kps, desc = cv2.SIFT_create(nfeatures=SIFT_FEATURES).detectAndCompute(gray, None)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    return np.array([k.pt for k in kps], np.float32), np.clip(np.rint(desc), 0, 255).astype(np.uint8)


def root_sift(desc: np.ndarray) -> np.ndarray:
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


def sift_database(jpg: str, names: list, work: str, progress: bool = True, log=_log_default) -> dict:
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
        for n in tqdm(todo, desc="sift", unit="photo", disable=not progress):
            p = os.path.join(jpg, f"{n}.jpg")
            gray = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                log(f"{p}: cannot decode the photo; left out")
                continue
            xy, desc = sift_features(gray)
            g = f.create_group(n)
            g["xy"], g["desc"] = xy, desc
            f.flush()
        for n in names:
            if n in f:
                out[n] = (f[n]["xy"][()], f[n]["desc"][()])
    return out


def mutual_ratio_matches(q: np.ndarray, d: np.ndarray, ratio: float = SIFT_RATIO) -> np.ndarray:
    """(M, 2) index pairs: mutual nearest neighbours passing Lowe's ratio test (unit descriptors)."""
    if len(q) < 1 or len(d) < 2:
        return np.zeros((0, 2), np.int64)
    sim = q @ d.T
    nn2 = np.argpartition(-sim, 1, axis=1)[:, :2]
    s2 = np.take_along_axis(sim, nn2, 1)
    first = np.argmax(s2, axis=1)
    best = nn2[np.arange(len(q)), first]
    s_best, s_second = s2[np.arange(len(q)), first], s2[np.arange(len(q)), 1 - first]
    d_best = np.sqrt(np.maximum(2 - 2 * s_best, 0))
    d_second = np.sqrt(np.maximum(2 - 2 * s_second, 0))
    ok = d_best < ratio * d_second
    back = np.argmax(sim, axis=0)
    ok &= back[best] == np.arange(len(q))
    qi = np.flatnonzero(ok)
    return np.stack([qi, best[qi]], axis=1)


def evaluate_roxford_sift(data: str, work: str, progress: bool = True, log=_log_default) -> dict:
    """The classic reference on the same protocol: RootSIFT (2000), mutual + ratio 0.8 against every database
    photo, affine USAC_MAGSAC 20 px, ranking by inliers (no re-ranking: by putative matches)."""
    import cv2
    from tqdm import tqdm

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
        qxy, qdesc = sift_features(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        qd = root_sift(qdesc)
        inl = np.zeros(len(db_names), np.int64)
        put = np.zeros(len(db_names), np.int64)
        ts = tv = 0.0
        for j, n in enumerate(tqdm(db_names, desc=name, unit="photo", disable=not progress, leave=False)):
            t0 = time.perf_counter()
            m = mutual_ratio_matches(qd, db_desc[n])
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


# ---------------------------------------------------------------- reject


def not_a_match_photos(data: str):
    """(path, name) of every photo of landmarks/ and ukbench/ (none shows Oxford)."""
    from delf.image import list_images

    items = []
    for sub in ("landmarks", "ukbench"):
        folder = os.path.join(data, sub)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no such folder")
        items += [(p, f"{sub}/{n}") for p, n in list_images([folder])]
    return items


def global_average_precision(predictions: list) -> float:
    """GAP (micro AP) of the Google Landmarks challenges: ``predictions`` are
    (confidence, correct, has_landmark) per query, one predicted label each;
    sorted by confidence, GAP = sum over correct predictions of the precision
    at their rank, divided by the number of queries that show a landmark."""
    m = sum(1 for _, _, has in predictions if has)
    if m == 0:
        raise ValueError("GAP needs at least one query that shows a landmark of the database")
    order = sorted(range(len(predictions)), key=lambda i: (-predictions[i][0], i))
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if predictions[i][1]:
            hits += 1
            total += hits / rank
    return total / m


def evaluate_reject(data: str, work: str, conf=None, verify_top: int = 100, threshold: float | None = None,
                    db_features: str | None = None, progress: bool = True, log=_log_default) -> dict:
    from delf.extract import extract_to_h5
    from delf.extractor import make_extractor
    from delf.featio import FeatureFile
    from index import Index
    from verify.rerank import RerankConf

    from .searching import SearchSettings, answer_query

    oxford = os.path.join(data, "oxford")
    gnd, jpg, qdir = oxford_layout(oxford)
    os.makedirs(work, exist_ok=True)
    extractor = make_extractor(conf)
    feats_path = database_features(jpg, gnd["database"], work, extractor, db_features, progress, log)
    idx_path = database_index(feats_path, work, log)
    items = not_a_match_photos(data)
    qpath = os.path.join(work, f"not-a-match-{conf_key(extractor.resolved_conf())}.h5")
    log(f"not-a-match query features: {qpath}")
    rep = extract_to_h5(items, qpath, extractor=extractor, progress=progress)
    if rep.failed:
        log(rep.summary())
    settings = SearchSettings(rerank=RerankConf(verify_top=verify_top), threshold=threshold).resolved()
    per_query, preds = [], []
    from tqdm import tqdm

    with Index(idx_path) as index, FeatureFile(qpath) as qf:
        for path, name in tqdm(items, desc="not-a-match", unit="query", disable=not progress):
            if name not in qf:
                continue
            ans = answer_query(index, qf[name], name, settings)
            b = ans.best
            per_query.append({"query": name, "kind": "not_a_match", "decision": "match" if ans.match else "no match",
                              "confidence": round(ans.confidence, 4), "top1": b.name if b else None,
                              "top1_inliers": b.inliers if b else 0})
            preds.append((ans.confidence, False, False))
        accepted_true = 0
        for q in gnd["queries"]:
            name = q["query"]
            feats = extractor.extract(crop_query(os.path.join(qdir, f"{name}.jpg"), q["bbx"]), name)
            ans = answer_query(index, feats, name, settings)
            pos, junk = protocol(q, "medium")
            top = next((r for r in ans.results if r.name[:-4] not in junk), None)
            ok = bool(top is not None and top.name[:-4] in pos)
            acc = bool(top is not None and top.confidence >= settings.threshold)
            accepted_true += ok and acc
            per_query.append({"query": name, "kind": "oxford", "decision": "match" if acc else "no match",
                              "confidence": round(top.confidence if top else 0.0, 4),
                              "top1": top.name if top else None, "top1_positive": ok,
                              "top1_inliers": top.inliers if top else 0})
            preds.append((top.confidence if top else 0.0, ok, True))
            log(f"{name}: top-1 {per_query[-1]['top1']} positive={ok} confidence {per_query[-1]['confidence']:.3f}")
    nam = [p for p in per_query if p["kind"] == "not_a_match"]
    false_acc = [p for p in nam if p["decision"] == "match"]
    worst = max(nam, key=lambda p: p["confidence"]) if nam else None
    return {
        "false_accepts": len(false_acc), "not_a_match_queries": len(nam),
        "true_accept_rate": round(accepted_true / max(len(gnd["queries"]), 1), 4),
        "gap": round(global_average_precision(preds), 4),
        "threshold": settings.threshold,
        "max_not_a_match_confidence": worst["confidence"] if worst else None,
        "max_not_a_match": worst,
        "false_accepted": false_acc,
        "per_query": per_query,
        "setup": {"data": os.path.abspath(data), "oxford_queries": len(gnd["queries"]),
                  "database_photos": len(gnd["database"]), "verify_top": verify_top,
                  "extractor_conf": extractor.resolved_conf()},
    }


__all__ = ["evaluate_reject", "evaluate_roxford", "evaluate_roxford_sift", "global_average_precision",
           "mutual_ratio_matches"]
