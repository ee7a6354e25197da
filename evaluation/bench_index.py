"""Benchmark behind `delf bench index`: the compact "pq" index against today's
Annoy index and exact search of the uncompressed descriptors, in one run with
the same threads, on the Oxford database and on scaled sets of real descriptors
plus noise.

- ``index``: the pq index of the features file: bytes on disk per descriptor
  (everything: codes, rows, locations, codebook, photo tables, manifest) and
  per photo, build seconds.
- ``oxford``: each GND query (cropped to its bbx) searched as ``Index.search``
  does (neighbours and votes), the minimum over --repeats interleaved runs, in
  ms per query of 1000 descriptors; ``shortlist_agreement``: the mean share of
  the exact search's top-100 photos that the pq search also ranks in its top
  100; ``positives_in_top100``: the mean share of each query's GND positives
  (easy + hard) in the pq top 100 (the same for exact and Annoy beside it).
- ``scaled``: per --scale, the real descriptors plus jittered, renormalised
  copies of whole photos, indexed as pq with the default conf (codebook
  trained on that set); ``recall_at_1``: the query descriptors (a sample)
  whose first pq neighbour is truly as near as the exact first neighbour (a
  tie counts, copies make ids ambiguous); ``nearest_in_20``: those whose exact
  first neighbour is among the 20 the search returns (what the votes use);
  ``ms_per_query`` as above.
- ``deterministic``: a second build with one thread has the same bytes (every
  file's SHA-256) and the same rankings as the default build.
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
    """One untimed pass: page cache, mappings, kernels, thread pool, tables."""
    idx.knn(desc[:256], conf)


def _time_searches(idx, queries, conf, repeats: int = 1):
    """Best-of-``repeats`` seconds for searching every query; the last run's answers."""
    best = np.inf
    answers = None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        answers = [idx.search(feats, conf) for _, feats in queries]
        best = min(best, time.perf_counter() - t)
    return best, answers


def shortlist_agreement(exact_answers, approx_answers, top: int = 100) -> float:
    fr = []
    for e, a in zip(exact_answers, approx_answers):
        ref = set(e.names[:top])
        fr.append(len(ref & set(a.names[:top])) / max(1, len(ref)))
    return float(np.mean(fr))


def positives_in_top(gnd_path: str, queries, answers, top: int = 100) -> float | None:
    with open(gnd_path) as f:
        gnd = {q["query"]: q for q in json.load(f)["queries"]}
    fr = []
    for (name, _), c in zip(queries, answers):
        pos = set(gnd.get(name, {}).get("easy", [])) | set(gnd.get(name, {}).get("hard", []))
        if pos:
            fr.append(len(pos & {os.path.splitext(n)[0] for n in c.names[:top]}) / len(pos))
    return float(np.mean(fr)) if fr else None


def exact_knn(db: np.ndarray, q: np.ndarray, k: int, threads: int):
    """Exact k nearest rows of unit ``db`` for unit ``q``: (rows, distances), ascending."""
    from concurrent.futures import ThreadPoolExecutor

    from index.blas import blas_threads
    from index.kernels import topk_update

    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    blocks = [slice(a, a + 256) for a in range(0, len(q), 256)]

    def run(b):
        with blas_threads(1):
            for c0 in range(0, len(db), 32768):
                topk_update(q[b] @ db[c0:c0 + 32768].T, c0, best_s[b], best_i[b])

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(run, blocks))
    order = np.argsort(-best_s, axis=1, kind="stable")
    s = np.take_along_axis(best_s, order, 1)
    return np.take_along_axis(best_i, order, 1), np.sqrt(np.maximum(2 - 2 * s, 0)).astype(np.float32)


def _hashes(path: str) -> dict:
    from index import store

    m = store.read_manifest(path)
    out = {f"codebook/{k}": v["sha256"] for k, v in (m.get("codebook") or {}).get("files", {}).items()}
    for i, seg in enumerate(m["segments"]):
        out.update({f"{i}/{k}": v["sha256"] for k, v in seg["files"].items()})
    return out


def _same_answers(a, b) -> bool:
    return all(x.names == y.names and np.array_equal(x.votes, y.votes) and np.array_equal(x.db_idx, y.db_idx)
               for x, y in zip(a, b))


def bench_index(features: str, gnd: str, scales=(1_000_000, 3_000_000, 10_000_000), queries: str | None = None,
                images: str | None = None, threads: int = 0, annoy_index: str | None = None, jitter: float = 0.3,
                sample: int = 2000, repeats: int = 2, workdir: str | None = None, seed: int = 0,
                log=lambda *a: None) -> dict:
    from index import Index, IndexConf, SearchConf, build_index, index_info
    from index import pq
    from index.kernels import warm_up

    warm_up()
    pq.warm_up()
    threads = int(threads) or (os.cpu_count() or 1)
    conf = SearchConf(threads=threads)
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
        per_query = 1000.0 / n_qdesc  # seconds for all queries -> ms per query of 1000 descriptors

        # The pq index, twice: default threads and one thread.
        pq_path = os.path.join(tmp, "pq.idx")
        t = time.perf_counter()
        info = build_index(pq_path, [features], IndexConf(), overwrite=True)
        build_s = time.perf_counter() - t
        log(f"pq: built in {build_s:.1f} s, {info['bytes_on_disk'] / info['descriptors']:.2f} bytes/descriptor")
        pq1_path = os.path.join(tmp, "pq-1thread.idx")
        build_index(pq1_path, [features], IndexConf(build_threads=1), overwrite=True)

        # Today's Annoy index (reused when given), whose stored descriptors the exact search reads.
        if annoy_index:
            ann_path = annoy_index
            ann_info = index_info(ann_path)
            if ann_info["kind"] != "annoy" or ann_info["descriptors"] != n_real:
                raise ValueError(f"{ann_path}: not an Annoy index of {features} ({ann_info['kind']}, "
                                 f"{ann_info['descriptors']} descriptors)")
        else:
            ann_path = os.path.join(tmp, "annoy.idx")
            t = time.perf_counter()
            ann_info = build_index(ann_path, [features], IndexConf(kind="annoy"), overwrite=True)
            log(f"annoy: built in {time.perf_counter() - t:.1f} s")

        with Index(pq_path) as ipq, Index(pq1_path) as ipq1, Index(ann_path) as iann:
            for idx in (ipq, ipq1, iann):
                idx.check_query_conf(q_conf)
            _warm(ipq, qs[0][1].descriptors, conf)
            _warm(iann, qs[0][1].descriptors, conf.replace(mode="exact"))
            _warm(iann, qs[0][1].descriptors, conf.replace(mode="annoy"))
            times = {"pq": np.inf, "exact": np.inf, "annoy": np.inf}
            answers = {}
            for _ in range(max(1, repeats)):  # interleaved: the three see the same machine load
                for key, idx, c in (("exact", iann, conf.replace(mode="exact")), ("pq", ipq, conf),
                                    ("annoy", iann, conf.replace(mode="annoy"))):
                    s, answers[key] = _time_searches(idx, qs, c)
                    times[key] = min(times[key], s)
            one_thread = [ipq1.search(f, conf) for _, f in qs]
        deterministic = _hashes(pq_path) == _hashes(pq1_path) and _same_answers(answers["pq"], one_thread)
        oxford = {
            "shortlist_agreement": shortlist_agreement(answers["exact"], answers["pq"]),
            "positives_in_top100": positives_in_top(gnd, qs, answers["pq"]),
            "ms_per_query": times["pq"] * per_query * 1000,
            "exact_ms_per_query": times["exact"] * per_query * 1000,
            "annoy_ms_per_query": times["annoy"] * per_query * 1000,
            "exact_positives_in_top100": positives_in_top(gnd, qs, answers["exact"]),
            "annoy_positives_in_top100": positives_in_top(gnd, qs, answers["annoy"]),
            "annoy_shortlist_agreement": shortlist_agreement(answers["exact"], answers["annoy"]),
            "annoy_bytes_per_descriptor": ann_info["bytes_on_disk"] / ann_info["descriptors"],
        }
        log("oxford: " + json.dumps(oxford))
        shutil.rmtree(pq1_path, ignore_errors=True)

        all_q = np.concatenate([f.descriptors for _, f in qs]).astype(np.float32)
        all_q /= np.linalg.norm(all_q, axis=1, keepdims=True)
        q_sample = all_q[np.sort(rng.choice(len(all_q), min(sample, len(all_q)), replace=False))]
        scaled = [_scaled(db_items, db_conf, int(n), jitter, qs, q_sample, conf, repeats, tmp, rng, per_query,
                          threads, log) for n in scales]
        return {
            "index": {"bytes_per_descriptor": info["bytes_on_disk"] / info["descriptors"],
                      "bytes_per_photo": info["bytes_on_disk"] / info["photos"], "build_seconds": build_s,
                      "descriptors": info["descriptors"], "photos": info["photos"], "codebook": info["codebook"]},
            "oxford": oxford,
            "scaled": scaled,
            "deterministic": bool(deterministic),
            "setup": {"features": os.path.abspath(features), "gnd": os.path.abspath(gnd), "queries": len(qs),
                      "query_descriptors": n_qdesc, "threads": threads, "repeats": repeats, "jitter": jitter,
                      "sample": int(len(q_sample)), "seed": seed, "cpu_count": os.cpu_count(),
                      "search": conf.to_dict(), "load_average": list(os.getloadavg())},
        }
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _scaled(db_items, db_conf, target, jitter, qs, q_sample, conf, repeats, tmp, rng, per_query, threads,
            log) -> dict:
    """The real descriptors plus jittered, renormalised copies of whole photos, up to ``target``."""
    from delf.features import Features
    from index import Index, IndexConf, build_index_from_features

    n_real = sum(len(f) for _, f in db_items)
    items = list(db_items)
    n, copies = n_real, 0
    while n < target:  # whole photos, copied in turn until the target is reached
        copies += 1
        for name, f in db_items:
            if n >= target:
                break
            if not len(f):
                continue
            noise = rng.standard_normal(f.descriptors.shape).astype(np.float32)
            noise *= jitter / np.sqrt(f.dim)
            d = f.descriptors + noise
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            items.append((f"{name}#copy{copies}", Features(f.locations, d, f.scales, f.scores, f.image_size)))
            n += len(f)
    db = np.concatenate([f.descriptors for _, f in items]).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    path = os.path.join(tmp, "scaled.idx")
    t = time.perf_counter()
    info = build_index_from_features(path, items, db_conf, IndexConf(), overwrite=True)
    build_s = time.perf_counter() - t
    del items
    n = info["descriptors"]
    log(f"scaled {n}: built in {build_s:.1f} s")
    with Index(path) as idx:
        _warm(idx, q_sample, conf)
        s, _ = _time_searches(idx, qs, conf, repeats)
        rows, _, _, _ = idx.knn(q_sample, conf)
    er, ed = exact_knn(db, q_sample, 1, threads)
    true_d = np.where(rows >= 0, np.linalg.norm(db[np.maximum(rows, 0)] - q_sample[:, None, :], axis=2), np.inf)
    hit = true_d <= ed[:, :1] * (1 + 1e-5) + 1e-6
    r1 = float(np.mean(hit[:, 0]))
    # What the votes need: the exact nearest neighbour among the k a query descriptor takes.
    r1_k = float(np.mean(hit.any(axis=1)))
    shutil.rmtree(path, ignore_errors=True)
    out = {"descriptors": int(n), "ms_per_query": s * per_query * 1000, "recall_at_1": r1,
           f"nearest_in_{conf.k}": r1_k,
           "bytes_per_descriptor": info["bytes_on_disk"] / n, "build_seconds": build_s,
           "nlist": info["codebook"]["nlist"], "copies": copies}
    log(f"scaled {n}: " + json.dumps(out))
    return out
