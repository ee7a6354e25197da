"""Benchmark behind `delf bench index`: the Annoy index against the exact search, in the same run
with the same threads, on real descriptors and on a scaled set of >= 1M.

Timings are end-to-end ``Index.search`` calls (neighbours and votes) per 1000
query descriptors, the minimum over --repeats interleaved runs (these machines
are shared). recall@1: the query descriptors whose first Annoy neighbour is as
near as the exact first neighbour; recall@10: the mean share of the exact 10
nearest neighbours among Annoy's 10. shortlist_agreement: over the queries, the
mean share of the exact search's top-100 photos (by votes) that the Annoy
search also ranks in its top 100.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np


# ---------------------------------------------------------------- inputs


def _read_db(path: str):
    from delf.featio import FeatureFile

    with FeatureFile(path) as ff:
        items = list(ff.items())
        conf = ff.conf
    if not items:
        raise ValueError(f"{path}: no photos")
    return items, conf


def load_queries(gnd_path: str, db_conf: dict, queries: str | None, images: str | None):
    """Features of the GND queries cropped to their bbx, made with the database's
    extractor conf (read from ``queries`` when that file exists)."""
    from delf.conf import describe_mismatch
    from delf.featio import FeatureFile, FeatureWriter

    with open(gnd_path) as f:
        gnd = json.load(f)
    names = [q["query"] for q in gnd["queries"]]
    if queries and os.path.exists(queries):
        with FeatureFile(queries) as ff:
            diff = describe_mismatch(db_conf, ff.conf)
            if diff:
                raise ValueError(f"{queries}: extracted with another conf than the database ({diff})")
            missing = [n for n in names if n not in ff]
            if missing:
                raise ValueError(f"{queries}: no features for queries {', '.join(missing)}")
            return [(n, ff[n]) for n in names], ff.conf

    import dataclasses

    from PIL import Image

    from delf import Extractor, ExtractorConf

    known = {f.name for f in dataclasses.fields(ExtractorConf)}
    conf = ExtractorConf.from_dict({k: v for k, v in db_conf.items() if k in known})
    ex = Extractor(conf)
    resolved = ex.resolved_conf()
    diff = describe_mismatch(db_conf, resolved)
    if diff:
        raise ValueError(f"cannot reproduce the database's extractor conf here ({diff})")
    folder = images or os.path.join(os.path.dirname(os.path.abspath(gnd_path)), "queries")
    out = []
    for q in gnd["queries"]:
        path = os.path.join(folder, q["query"] + ".jpg")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: query photo missing (set --images)")
        img = np.asarray(Image.open(path).convert("RGB"))
        x1, y1, x2, y2 = q["bbx"]
        h, w = img.shape[:2]
        top, bottom = max(0, int(np.floor(y1))), min(h, int(np.ceil(y2)))
        left, right = max(0, int(np.floor(x1))), min(w, int(np.ceil(x2)))
        crop = img[top:bottom, left:right]
        out.append((q["query"], ex.extract(np.ascontiguousarray(crop))))
    if queries:
        with FeatureWriter(queries, resolved) as w:
            for name, feats in out:
                w.write(name, feats)
    return out, resolved


# ---------------------------------------------------------------- measuring


def _warm(idx, desc, conf) -> None:
    """One untimed pass of each mode: page cache, mappings, kernels, thread pool."""
    for mode in ("exact", "annoy"):
        idx.knn(desc[:256], conf.replace(mode=mode))


def _time_searches(idx, queries, conf, repeats: int, keep: bool = True):
    """Best-of-``repeats`` seconds for searching every query; the last run's answers."""
    best = np.inf
    answers = None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        answers = [idx.search(feats, conf, keep_knn=keep) for _, feats in queries]
        best = min(best, time.perf_counter() - t)
    return best, answers


def _time_knn(idx, desc, conf, repeats: int):
    best = np.inf
    out = None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = idx.knn(desc, conf)
        best = min(best, time.perf_counter() - t)
    return best, out[0], out[1]


def recalls(exact_d, exact_r, approx_d, approx_r) -> tuple[float, float]:
    # A tie at the first distance is a hit: duplicates make ids ambiguous.
    r1 = float(np.mean(approx_d[:, 0] <= exact_d[:, 0] * (1 + 1e-5) + 1e-6))
    k = min(10, exact_r.shape[1])
    hits = [len(set(a[:k][a[:k] >= 0]) & set(b[:k][b[:k] >= 0])) / k for a, b in zip(exact_r, approx_r)]
    return r1, float(np.mean(hits))


def _stack_knn(answers):
    rows = np.concatenate([c.extra["knn_rows"] for c in answers])
    dist = np.concatenate([c.extra["knn_distances"] for c in answers])
    return rows, dist


def shortlist_agreement(exact_answers, approx_answers, top: int = 100) -> float:
    fr = []
    for e, a in zip(exact_answers, approx_answers):
        ref = set(e.names[:top])
        fr.append(len(ref & set(a.names[:top])) / max(1, len(ref)))
    return float(np.mean(fr))


def _revote(snap, answers, qs, conf):
    from index.search import vote

    return [vote(snap, c.extra["knn_rows"], c.extra["knn_distances"], f.locations, conf)
            for c, (_, f) in zip(answers, qs)]


# Rankings compared at the default settings: the default, and plain k-NN voting.
_RANKINGS = {
    "default": {},
    "count, no cutoff": {"weighting": "count", "cutoff": None},
    "adaptive, no cutoff": {"weighting": "adaptive", "cutoff": None},
}


def _shortlist_recall(gnd_path, qs, exact_answers, approx_answers, snap, conf):
    """Share of each query's positives (easy + hard of GND) in the top 100, per
    ranking, exact and Annoy: how good a shortlist each ranking makes."""
    with open(gnd_path) as f:
        gnd = {q["query"]: q for q in json.load(f)["queries"]}
    if not all(name in gnd and ("easy" in gnd[name] or "hard" in gnd[name]) for name, _ in qs):
        return None
    out = {}
    for label, vc in _RANKINGS.items():
        wc = conf.replace(**vc)
        for mode, answers in (("exact", exact_answers), ("annoy", approx_answers)):
            ranked = _revote(snap, answers, qs, wc)
            fr = []
            for (name, _), c in zip(qs, ranked):
                pos = set(gnd[name].get("easy", [])) | set(gnd[name].get("hard", []))
                if pos:
                    top = {os.path.splitext(n)[0] for n in c.names[:100]}
                    fr.append(len(pos & top) / len(pos))
            out[f"{label} ({mode})"] = float(np.mean(fr)) if fr else None
    return out


def _dir_bytes(info: dict) -> int:
    return int(info["bytes_on_disk"])


def bench_index(features: str, gnd: str, queries: str | None = None, images: str | None = None,
                threads: int = 0, trees=(8, 16, 32), search_ks=(2000, 5000, 10000, 20000, 40000),
                crossover_sizes=(25000, 50000, 100000, 200000, 400000), scaled: int = -1, jitter: float = 0.3,
                sample: int = 2000, repeats: int = 2, workdir: str | None = None, seed: int = 0,
                log=lambda *a: None) -> dict:
    from index import Index, IndexConf, SearchConf, build_index
    from index.kernels import warm_up

    warm_up()
    threads = int(threads) or (os.cpu_count() or 1)
    default_search = SearchConf(threads=threads)
    default_trees = IndexConf().n_trees
    trees = sorted(set(trees) | {default_trees})
    search_ks = sorted(set(search_ks) | {default_search.search_k})
    rng = np.random.default_rng(seed)
    tmp = workdir or tempfile.mkdtemp(prefix="bench-index-")
    os.makedirs(tmp, exist_ok=True)
    try:
        db_items, db_conf = _read_db(features)
        n_real = int(sum(len(f) for _, f in db_items))
        log(f"database: {len(db_items)} photos, {n_real} descriptors")
        qs, q_conf = load_queries(gnd, db_conf, queries, images)
        n_qdesc = int(sum(len(f) for _, f in qs))
        log(f"queries: {len(qs)}, {n_qdesc} descriptors")

        exact_conf = default_search.replace(mode="exact")
        annoy_conf = default_search.replace(mode="annoy")
        builds = {}
        for nt in trees:
            path = os.path.join(tmp, f"real-{nt}.idx")
            t = time.perf_counter()
            info = build_index(path, [features], IndexConf(n_trees=nt), overwrite=True)
            builds[nt] = {"build_s": time.perf_counter() - t,
                          "bytes_per_descriptor": _dir_bytes(info) / info["descriptors"], "path": path}
            log(f"built {nt} trees in {builds[nt]['build_s']:.1f} s, "
                f"{builds[nt]['bytes_per_descriptor']:.0f} bytes/descriptor")

        curve = []
        exact_s = None
        default_entry = None
        for nt in trees:
            with Index(builds[nt]["path"]) as idx:
                idx.check_query_conf(q_conf)
                _warm(idx, qs[0][1].descriptors, default_search)
                if exact_s is None:
                    exact_s, exact_ans = _time_searches(idx, qs, exact_conf, 1)
                    exact_rows, exact_dist = _stack_knn(exact_ans)
                    log(f"exact: {exact_s / n_qdesc * 1e6:.0f} ms per 1000")
                for sk in search_ks:
                    conf = annoy_conf.replace(search_k=sk)
                    is_default = nt == default_trees and sk == default_search.search_k
                    if is_default:
                        # Interleaved with the exact search, so both see the same machine load.
                        s, ans = np.inf, None
                        for _ in range(max(1, repeats)):
                            e, _ = _time_searches(idx, qs, exact_conf, 1, keep=False)
                            exact_s = min(exact_s, e)
                            a, ans = _time_searches(idx, qs, conf, 1)
                            s = min(s, a)
                    else:
                        s, ans = _time_searches(idx, qs, conf, 1)
                    rows, dist = _stack_knn(ans)
                    r1, r10 = recalls(exact_dist, exact_rows, dist, rows)
                    entry = {
                        "n_trees": nt, "search_k": sk, "weighting": conf.weighting, "cutoff": conf.cutoff,
                        "recall_at_1": r1, "recall_at_10": r10, "ms_per_1000": s / n_qdesc * 1e6,
                        "shortlist_agreement": shortlist_agreement(exact_ans, ans),
                        "build_s": builds[nt]["build_s"],
                        "bytes_per_descriptor": builds[nt]["bytes_per_descriptor"],
                    }
                    curve.append(entry)
                    log(f"trees {nt} search_k {sk}: R@1 {r1:.3f} R@10 {r10:.3f} "
                        f"{entry['ms_per_1000']:.0f} ms/1000 agreement {entry['shortlist_agreement']:.3f}")
                    if is_default:
                        default_entry = entry
                        # The same neighbours ranked as plain k-NN voting would.
                        snap = idx.snapshot()
                        for label, vc in _RANKINGS.items():
                            wc = conf.replace(**vc)
                            if wc == conf:
                                continue
                            agree = shortlist_agreement(_revote(snap, exact_ans, qs, wc),
                                                        _revote(snap, ans, qs, wc))
                            curve.append(dict(entry, weighting=wc.weighting, cutoff=wc.cutoff,
                                              shortlist_agreement=agree))
                            log(f"  ranked by {label}: agreement {agree:.3f}")
                        positives = _shortlist_recall(gnd, qs, exact_ans, ans, snap, conf)
                        if positives is not None:
                            entry["shortlist_positives"] = positives
        exact_ms = exact_s / n_qdesc * 1e6
        for e in curve:
            e["speedup_vs_exact"] = exact_ms / e["ms_per_1000"]

        all_q = np.concatenate([f.descriptors for _, f in qs])
        q_sample = all_q[rng.choice(len(all_q), min(sample, len(all_q)), replace=False)]
        crossover = _crossover(db_items, db_conf, q_sample, crossover_sizes, default_search, repeats, tmp,
                               rng, log)

        scaled_result = None
        if scaled != 0:
            target = scaled if scaled > 0 else max(1_000_000, 2 * n_real)
            scaled_result = _scaled(db_items, db_conf, target, jitter, q_sample, default_search, repeats, tmp,
                                    rng, log)
        return {
            "descriptors": n_real,
            "bytes_per_descriptor": builds[default_trees]["bytes_per_descriptor"],
            "exact": {
                "ms_per_1000": exact_ms, "crossover": crossover,
                "setup": {"features": os.path.abspath(features), "gnd": os.path.abspath(gnd),
                          "photos": len(db_items), "queries": len(qs), "query_descriptors": n_qdesc,
                          "threads": threads, "repeats": repeats, "jitter": jitter,
                          "sample": int(len(q_sample)), "seed": seed, "cpu_count": os.cpu_count(),
                          "load_average": list(os.getloadavg())},
            },
            "default": {
                "search_k": default_search.search_k, "recall_at_1": default_entry["recall_at_1"],
                "ms_per_1000": default_entry["ms_per_1000"], "recall_at_10": default_entry["recall_at_10"],
                "n_trees": default_trees, "k": default_search.k, "top_n": default_search.top_n,
                "weighting": default_search.weighting, "cutoff": default_search.cutoff,
                "build_s": builds[default_trees]["build_s"],
            },
            "speedup_vs_exact": exact_ms / default_entry["ms_per_1000"],
            "shortlist_agreement": default_entry["shortlist_agreement"],
            "curve": curve,
            "scaled": scaled_result,
        }
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _crossover(db_items, db_conf, q_sample, sizes, search, repeats, tmp, rng, log) -> dict:
    """Exact vs Annoy (default settings) on growing subsets of the database."""
    from index import Index, build_index_from_features

    order = rng.permutation(len(db_items))
    points = []
    n_total = sum(len(f) for _, f in db_items)
    for size in sorted(sizes):
        if size >= n_total:
            break
        items, n = [], 0
        for i in order:
            items.append(db_items[i])
            n += len(db_items[i][1])
            if n >= size:
                break
        path = os.path.join(tmp, f"crossover-{size}.idx")
        build_index_from_features(path, items, db_conf, overwrite=True)
        with Index(path) as idx:
            _warm(idx, q_sample, search)
            te, ta = np.inf, np.inf
            for _ in range(max(1, repeats)):
                te = min(te, _time_knn(idx, q_sample, search.replace(mode="exact"), 1)[0])
                ta = min(ta, _time_knn(idx, q_sample, search.replace(mode="annoy"), 1)[0])
        shutil.rmtree(path, ignore_errors=True)
        points.append({"descriptors": n, "exact_ms_per_1000": te / len(q_sample) * 1e6,
                       "annoy_ms_per_1000": ta / len(q_sample) * 1e6})
        log(f"crossover {n}: exact {points[-1]['exact_ms_per_1000']:.0f} "
            f"annoy {points[-1]['annoy_ms_per_1000']:.0f} ms/1000")
    # Exact cost grows with the size, Annoy's barely: the crossover is where the
    # ratio passes 1, interpolated in log size between the bracketing points.
    at = None
    for a, b in zip(points, points[1:]):
        ra = a["exact_ms_per_1000"] / a["annoy_ms_per_1000"]
        rb = b["exact_ms_per_1000"] / b["annoy_ms_per_1000"]
        if ra < 1 <= rb:
            f = (0 - np.log(ra)) / (np.log(rb) - np.log(ra))
            la, lb = np.log(a["descriptors"]), np.log(b["descriptors"])
            at = int(np.exp(la + f * (lb - la)))
            break
    if at is None and points and points[0]["exact_ms_per_1000"] >= points[0]["annoy_ms_per_1000"]:
        at = points[0]["descriptors"]
    return {"descriptors": at, "points": points}


def _scaled(db_items, db_conf, target, jitter, q_sample, search, repeats, tmp, rng, log) -> dict:
    """The real descriptors plus jittered, renormalised copies, up to ``target``."""
    from delf.features import Features
    from index import Index, IndexConf, build_index_from_features

    n_real = sum(len(f) for _, f in db_items)
    copies = int(np.ceil(target / n_real)) - 1

    def items():
        yield from db_items
        for j in range(copies):
            for name, f in db_items:
                if not len(f):
                    continue
                noise = rng.standard_normal(f.descriptors.shape).astype(np.float32)
                noise *= jitter / np.sqrt(f.dim)
                d = f.descriptors + noise
                d /= np.linalg.norm(d, axis=1, keepdims=True)
                yield f"{name}#copy{j + 1}", Features(f.locations, d, f.scales, f.scores, f.image_size)

    path = os.path.join(tmp, "scaled.idx")
    t = time.perf_counter()
    info = build_index_from_features(path, items(), db_conf, IndexConf(), overwrite=True)
    build_s = time.perf_counter() - t
    n = info["descriptors"]
    log(f"scaled: {n} descriptors built in {build_s:.1f} s")
    with Index(path) as idx:
        _warm(idx, q_sample, search)
        te, ta = np.inf, np.inf
        for _ in range(max(1, repeats)):
            s, er, ed = _time_knn(idx, q_sample, search.replace(mode="exact"), 1)
            te = min(te, s)
            s, ar, ad = _time_knn(idx, q_sample, search.replace(mode="annoy"), 1)
            ta = min(ta, s)
    r1, r10 = recalls(ed, er, ad, ar)
    shutil.rmtree(path, ignore_errors=True)
    out = {"descriptors": int(n), "recall_at_1": r1, "speedup_vs_exact": te / ta, "recall_at_10": r10,
           "exact_ms_per_1000": te / len(q_sample) * 1e6, "ms_per_1000": ta / len(q_sample) * 1e6,
           "search_k": search.search_k, "n_trees": IndexConf().n_trees, "build_s": build_s,
           "bytes_per_descriptor": info["bytes_on_disk"] / n, "jitter": jitter, "copies": copies}
    log(f"scaled: R@1 {r1:.3f} R@10 {r10:.3f} speedup {te / ta:.2f}")
    return out
