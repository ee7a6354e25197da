"""`delf evaluate roxford`: retrieval quality on the Revisited Oxford protocol
(and the database features and index that `delf evaluate reject` shares).

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

from .metrics import evaluate_rankings, load_gnd, positive_ranks, protocol


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


def database_index(features: str, work: str, log=_log_default, kind: str = "pq", graph: bool = False) -> str:
    """An index of ``features`` in the work folder (built once, reused while the features file is unchanged),
    of the given kind (``IndexConf.kind``); ``graph``: with its match graph (engine.graph), for a
    calibration that reads one."""
    from delf.featio import FeatureFile
    from index import IndexConf, build_index, index_info

    st = os.stat(features)
    with FeatureFile(features) as ff:
        spec = {"conf": ff.conf, "photos": len(ff), "size": st.st_size, "path": os.path.abspath(features),
                "build": "one-thread"}
        if kind != "annoy":  # the Annoy index keeps the key it had before there were kinds
            spec["kind"] = kind
        key = conf_key(spec)
    idx = os.path.join(work, f"index-{key}")
    built = False
    if os.path.isfile(os.path.join(idx, "manifest.json")):
        try:
            index_info(idx)
            built = True
        except (OSError, ValueError):
            pass
    if not built:
        log(f"building the index {idx} (once per database features file)")
        t0 = time.perf_counter()
        # One build thread: Annoy's multi-threaded builds differ from run to run, and with a handful of
        # queries one photo's rank moves Hard mAP by many points; an evaluation must be reproducible.
        build_index(idx, [features], IndexConf(kind=kind, build_threads=1), overwrite=True)
        log(f"index built in {time.perf_counter() - t0:.0f} s")
    if graph:
        database_graph(idx, features, log)
    return idx


def database_graph(idx: str, features: str, log=_log_default) -> None:
    """The index's match graph (engine.graph), completed for the photos that have not searched it yet (a
    graph file of an older version is made anew)."""
    from engine.graph import missing, stale
    from engine.graph_update import update_graph_from_features
    from index import Index

    with Index(idx) as index:
        todo = missing(idx, index.photos())
    if todo:
        log(f"match graph: {len(todo)} database photos search the index (once per index)")
        t0 = time.perf_counter()
        update_graph_from_features(idx, [features], todo, rebuild=stale(idx))
        log(f"match graph built in {time.perf_counter() - t0:.0f} s")


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


def positives_in_top(gnd: dict, rankings: dict, top: int = 100) -> float:
    """Share of all Medium positives (easy and hard, junk removed) ranked in the first ``top``."""
    found = total = 0
    for q in gnd["queries"]:
        if q["query"] not in rankings:
            continue
        pos, junk = protocol(q, "medium")
        ranks = positive_ranks(rankings[q["query"]], pos, junk)
        found += int((ranks < top).sum())
        total += len(pos)
    return round(found / max(total, 1), 4)


def evaluate_roxford(data: str, work: str, conf=None, verify_top: int = 100, skimage_queries: int = 2,
                     db_features: str | None = None, threshold: float | None = None, expand: int | None = None,
                     index_kind: str = "pq", compare_kinds=(), progress: bool = True, log=_log_default,
                     diffuse: int | None = None) -> dict:
    """The engine on Revisited Oxford: mAP and mP@k, Medium and Hard, with and without re-ranking,
    and per-query times (``evaluation.sift.evaluate_roxford_sift`` is the RootSIFT reference). The
    same queries are also answered with query expansion (``expand`` confident results, default:
    the engine's), reported apart under "expansion". ``compare_kinds``: index kinds also evaluated
    in the same run, on the same query features (results under "compare")."""
    from delf.extractor import make_extractor
    from engine import EngineConf
    from verify.confidence import Calibration

    expand = EngineConf.expand if expand is None else int(expand)
    diffuse = EngineConf.diffuse if diffuse is None else int(diffuse)
    gnd, jpg, qdir = oxford_layout(data)
    os.makedirs(work, exist_ok=True)
    extractor = make_extractor(conf)
    feats_path = database_features(jpg, gnd["database"], work, extractor, db_features, progress, log)
    # All queries are extracted first: TensorFlow's worker threads keep spinning for a
    # while after an extraction and would slow the search timed right after it.
    query_feats, t_extract = [], []
    for q in gnd["queries"]:
        name = q["query"]
        t0 = time.perf_counter()
        query_feats.append(extractor.extract(crop_query(os.path.join(qdir, f"{name}.jpg"), q["bbx"]), name))
        t_extract.append((time.perf_counter() - t0) * 1000)
    out = None
    compare = {}
    for kind in (index_kind, *[k for k in compare_kinds if k != index_kind]):
        idx_path = database_index(feats_path, work, log, kind, graph=Calibration.load().uses_graph or diffuse > 0)
        res = _evaluate_index(idx_path, gnd, query_feats, extractor, verify_top, skimage_queries, threshold,
                              expand, log, diffuse)
        res["timing_ms"]["extract_query"] = _mean(t_extract)
        res["setup"].update({"data": os.path.abspath(data), "features": feats_path, "index_kind": kind})
        if out is None:
            out = res
        else:
            compare[kind] = {k: res[k] for k in ("medium", "hard", "no_rerank", "positives_in_top100", "timing_ms",
                                                 "expansion", "diffusion", "expansion_diffusion", "setup")
                                 if k in res}
            compare[kind]["per_query"] = [{k: v for k, v in p.items() if k.startswith(("query", "ap_", "top1"))}
                                          for p in res["per_query"]]
    if compare:
        out["compare"] = compare
    return out


def _evaluate_index(idx_path: str, gnd: dict, query_feats: list, extractor, verify_top: int, skimage_queries: int,
                    threshold, expand: int, log, diffuse: int = 0) -> dict:
    from engine import Engine
    from engine.searching import search_query

    rer, norr, per_query = {}, {}, []
    t_search, t_verify, t_sk = [], [], []
    # The engine's other ways of ranking, each on the same queries: (expand, diffuse) -> rankings, times.
    ways = {}
    if expand:
        ways["expansion"] = (expand, 0)
    if diffuse:
        ways["diffusion"] = (0, diffuse)
    if expand and diffuse:
        ways["expansion_diffusion"] = (expand, diffuse)
    other = {k: ({}, [], []) for k in ways}  # rankings, ms, expanded
    with Engine.open(idx_path, candidates=verify_top, threshold=threshold, extractor=extractor) as engine:
        settings = engine.settings
        for i, (q, feats) in enumerate(zip(gnd["queries"], query_feats)):
            name = q["query"]
            # Warm the kernels (Numba compile or cache load) outside the timings.
            if i == 0:
                engine.search(feats, name=name, expand=0, diffuse=0)
            ans = engine.search(feats, name=name, expand=0, diffuse=0)
            t_search.append(ans.search_ms)
            t_verify.append(ans.verify_ms)
            if i < skimage_queries:
                t_sk.append(skimage_verify_ms(ans))
            rer[name], norr[name] = _full_ranking(engine.index, feats, settings, ans, gnd["database"])
            for key, (e, d) in ways.items():
                t0 = time.perf_counter()
                ansx, last = search_query(engine.index, feats, name, settings, expand=e, diffuse=d)
                other[key][1].append((time.perf_counter() - t0) * 1000)
                other[key][2].append(bool(ansx.expanded_from))
                other[key][0][name], _ = _full_ranking(engine.index, last, settings, ansx, gnd["database"])
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
    rerx, t_expand, expanded = other.get("expansion", ({}, [], []))
    n_expanded = int(sum(expanded))
    ex = evaluate_rankings(gnd, rerx) if expand else None
    for pqr in per_query:
        pqr.update({f"ap_{s}": res["per_query"].get(pqr["query"], {}).get(s, {}).get("ap") for s in ("medium", "hard")})
        pqr.update({f"ap_{s}_no_rerank": nr["per_query"].get(pqr["query"], {}).get(s, {}).get("ap")
                    for s in ("medium", "hard")})
        if ex is not None:
            pqr.update({f"ap_{s}_expanded": ex["per_query"].get(pqr["query"], {}).get(s, {}).get("ap")
                        for s in ("medium", "hard")})
    timing = {"search": _mean(t_search), "verify": _mean(t_verify), "verify_skimage": _mean(t_sk)}
    if t_sk:
        mine = _mean(t_search[: len(t_sk)]) + _mean(t_verify[: len(t_sk)])
        timing["skimage_queries"] = len(t_sk)
        timing["speedup_vs_skimage"] = round((_mean(t_search[: len(t_sk)]) + _mean(t_sk)) / max(mine, 1e-9), 2)
    out = {
        "method": "delf", "medium": res["medium"], "hard": res["hard"],
        "no_rerank": {"medium": nr["medium"], "hard": nr["hard"]},
        "positives_in_top100": positives_in_top(gnd, rer),
        "timing_ms": timing, "per_query": per_query,
        "setup": {"database_photos": len(gnd["database"]),
                  "queries": len(gnd["queries"]), "verify_top": verify_top,
                  "index": idx_path, "extractor_conf": extractor.resolved_conf(),
                  "threshold": settings.threshold},
    }
    plain = _mean([a + b for a, b in zip(t_search, t_verify)])
    for key, (e, d) in ways.items():
        if key == "expansion":
            continue
        ev = evaluate_rankings(gnd, other[key][0])
        for pqr in per_query:
            pqr.update({f"ap_{s}_{key}": ev["per_query"].get(pqr["query"], {}).get(s, {}).get("ap")
                        for s in ("medium", "hard")})
        out[key] = {"expand": e, "diffuse": d, "medium": ev["medium"], "hard": ev["hard"],
                    "positives_in_top100": positives_in_top(gnd, other[key][0]),
                    "expanded_queries": int(sum(other[key][2])),
                    "timing_ms": {"search": _mean(other[key][1]), "plain": plain,
                                  "ratio": round(_mean(other[key][1]) / max(plain, 1e-9), 2)}}
    if ex is not None:
        # Time after extraction: the whole expanded search (first round, expansion, second round,
        # verification) against the search and verification of the plain one, on the same queries.
        out["expansion"] = {
            "expand": expand, "medium": ex["medium"], "hard": ex["hard"],
            "positives_in_top100": positives_in_top(gnd, rerx), "expanded_queries": n_expanded,
            "timing_ms": {"expanded": _mean(t_expand), "plain": plain,
                          "ratio": round(_mean(t_expand) / max(plain, 1e-9), 2)},
        }
    return out


def report_lines(res: dict) -> list[str]:
    """The lines `delf evaluate roxford` prints for a result of ``evaluate_roxford`` (or the RootSIFT one)."""
    out = []
    for key, title in (("medium", "Medium"), ("hard", "Hard")):
        m, n = res[key], res["no_rerank"][key]
        out.append(f"{title:>6}: mAP {m['map']:6.2f}  mP@1 {m['mp@1']:6.2f}  mP@5 {m['mp@5']:6.2f}  "
                   f"mP@10 {m['mp@10']:6.2f}   (no re-ranking: mAP {n['map']:6.2f})")
    t = res["timing_ms"]
    out.append("per query: " + ", ".join(f"{k} {v:.1f} ms" for k, v in t.items()
                                         if isinstance(v, float) and k != "speedup_vs_skimage"))
    x = res.get("expansion")
    if x:
        out.append(f"expanded from up to {x['expand']} confident results ({x['expanded_queries']} queries "
                   f"expanded): Medium mAP {x['medium']['map']:.2f}, Hard mAP {x['hard']['map']:.2f}; positives in "
                   f"the top 100 {res['positives_in_top100']:.3f} -> {x['positives_in_top100']:.3f}; time "
                   f"{x['timing_ms']['ratio']:.2f}x")
    for key, what in (("diffusion", "diffusion over the match graph"),
                      ("expansion_diffusion", "expansion and diffusion")):
        x = res.get(key)
        if x:
            out.append(f"{what} (from results with >= {x['diffuse']} unique inliers): Medium mAP "
                       f"{x['medium']['map']:.2f}, Hard mAP {x['hard']['map']:.2f}; positives in the top 100 "
                       f"{res['positives_in_top100']:.3f} -> {x['positives_in_top100']:.3f}; time "
                       f"{x['timing_ms']['ratio']:.2f}x")
    if t.get("speedup_vs_skimage"):
        out.append(f"search + verify vs search + scikit-image verification ({t['skimage_queries']} queries): "
                   f"{t['speedup_vs_skimage']:.1f}x faster")
    for kind, c in res.get("compare", {}).items():
        out.append(f"{kind} index: Medium mAP {c['medium']['map']:.2f}, Hard mAP {c['hard']['map']:.2f}, "
                   f"positives in top 100 {c['positives_in_top100']:.3f}, search {c['timing_ms']['search']:.0f} ms")
    return out


def _mean(v) -> float | None:
    return round(float(np.mean(v)), 3) if len(v) else None


__all__ = ["conf_key", "crop_query", "database_features", "database_graph", "database_index", "evaluate_roxford",
           "oxford_layout", "report_lines"]
