"""Batch matching of a photo collection: which photos show the same place.

    photos ──► hash (exact duplicates) ──► extract (features.h5) ──► index
           ──► every photo queries the index, its candidates are verified (one
               JSON per photo) ──► match graph ──► groups ──► contact sheets

Every stage resumes: extraction skips photos already in the features file
(delf.featio's atomic partial file), the index is rebuilt only when its photos
or conf differ from the features file's (its manifest is replaced atomically),
and each photo's query result is one JSON file written atomically and skipped
when present with the same fingerprint (search, verification and calibration
settings and the index's content). The graph, groups and sheets are pure
functions of those files and are rewritten whole, atomically, on every run; so
a run killed at any point and started again ends with the same output as an
uninterrupted run.

Scale-out: with a ``dask.distributed`` client, extraction and the per-photo
queries run as tasks on its workers. Tasks are idempotent: extraction is a
pure function whose result the client writes into the features file; a query
task writes its JSON atomically and does nothing when it is already there, so
a lost worker costs only a retry. Workers must see the photos and the work
folder at the same paths (one machine or a shared filesystem).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import io
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from common.files import sha256_file, sha256_text, sweep_tmp

FORMAT = "delf-collection"
VERSION = 1
REFINES = ("triangle", "none")


@dataclass(frozen=True)
class CollectionConf:
    """verify_top: candidates verified per photo (the index's votes prune the rest).
    threshold: an edge is confident at or above this confidence (None: the calibration's).
    refine: how confident edges become groups. "triangle": an edge joins two
            photos' groups only when a third photo is confidently linked to both;
            a photo that no triangle joins is attached by its most confident
            edge (it can then only join one group), so one bad edge cannot merge
            two places (``group_photos``); "none": plain connected components.
    window: tasks in flight per Dask worker (bounds the client's memory)."""

    verify_top: int = 20
    threshold: float | None = None
    refine: str = "triangle"
    window: int = 4

    def __post_init__(self):
        if isinstance(self.verify_top, bool) or not isinstance(self.verify_top, int) or self.verify_top < 1:
            raise ValueError(f"verify_top must be an integer >= 1, got {self.verify_top!r}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.refine not in REFINES:
            raise ValueError(f"refine must be one of {', '.join(REFINES)}, got {self.refine!r}")
        if int(self.window) < 1:
            raise ValueError(f"window must be >= 1, got {self.window!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class CollectionReport:
    """What a run did; ``out`` holds the files (see ``run_collection``)."""

    out: str
    photos: int = 0
    failed: list = field(default_factory=list)  # (name, problem)
    duplicates: int = 0  # photos whose content equals an earlier photo's
    extracted: int = 0
    queried: int = 0
    query_skipped: int = 0
    pairs_verified: int = 0
    pairs_total: int = 0
    edges: int = 0
    groups: int = 0  # groups of two or more photos
    threshold: float = 0.0
    seconds: dict = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return self.query_skipped > 0 or (self.photos - len(self.failed) > self.extracted)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["failed"] = [list(f) for f in self.failed]
        d["resumed"] = self.resumed
        return d

    def summary(self) -> str:
        lines = [f"{self.out}: {self.photos} photos ({len(self.failed)} unusable, {self.duplicates} exact duplicates), "
                 f"{self.pairs_verified} of {self.pairs_total} pairs verified, {self.edges} confident edges "
                 f"(threshold {self.threshold:g}), {self.groups} groups of 2 or more photos "
                 f"({self.seconds.get('total', 0.0):.1f} s)"]
        lines += [f"  unusable: {n}: {p}" for n, p in self.failed]
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _sha256_or_none(path: str) -> str | None:
    """The file's sha256, or None when it cannot be read (the photo then counts as changed)."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def photo_items(inputs) -> list[tuple[str, str]]:
    """(path, name) of every photo: one folder gives names relative to it;
    several folders give names prefixed with each folder's base name; files
    and (path, name) tuples as ``delf.image.list_images`` takes them."""
    from delf.image import list_images, require_inputs

    inputs = list(inputs)
    folders = [i for i in inputs if not isinstance(i, tuple) and os.path.isdir(os.fspath(i))]
    if len(folders) > 1:
        expanded = []
        for item in inputs:
            if not isinstance(item, tuple) and os.path.isdir(os.fspath(item)):
                base = os.path.basename(os.path.normpath(os.fspath(item)))
                expanded += [(p, f"{base}/{n}") for p, n in list_images([item])]
            else:
                expanded.append(item)
        inputs = expanded
    require_inputs(inputs)
    items = list_images(inputs)
    if not items:
        raise ValueError(f"no photos found in {', '.join(str(i) for i in inputs)}")
    return sorted(items, key=lambda t: t[1])


def _result_file(work: str, name: str) -> str:
    return os.path.join(work, "queries", hashlib.sha1(name.encode()).hexdigest()[:24] + ".json")


def _fingerprint(settings, index_key: str) -> str:
    d = {
        "search": settings.search.to_dict(),
        "rerank": {"verify_top": settings.rerank.verify_top, "seed": settings.rerank.seed,
                   "border": settings.rerank.border, "ransac": settings.rerank.ransac.to_dict()},
        "calibration": settings.calibration.to_dict(),
        "index": index_key,
    }
    return sha256_text(json.dumps(d, sort_keys=True, default=str), 32)


# Per-process caches of opened files (Dask workers run many tasks in one process).
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _cached(key, make):
    with _CACHE_LOCK:
        obj = _CACHE.get(key)
        if obj is None:
            obj = _CACHE[key] = make()
        return obj


def release_cache() -> None:
    """Close the files this process keeps open between tasks."""
    with _CACHE_LOCK:
        for key, obj in list(_CACHE.items()):
            if key[0] in ("features", "index"):
                obj.close()
                del _CACHE[key]


def _features_file(path: str):
    from delf.featio import FeatureFile

    st = os.stat(path)
    return _cached(("features", path, st.st_ino, st.st_mtime_ns), lambda: FeatureFile(path))


def _index(path: str, key: str):
    from index import Index

    return _cached(("index", path, key), lambda: Index(path))


def _extractor(conf):
    from delf.extractor import make_extractor

    return _cached(("extractor", conf.to_json()), lambda: make_extractor(conf))


# ---------------------------------------------------------------- tasks (run in-process or on Dask workers)


def extract_task(path: str, name: str, conf):
    """(name, Features or None, problem or None, resolved conf): pure, so a retry is harmless."""
    from delf.image import ImageError, problem_of

    ex = _extractor(conf)
    try:
        return name, ex.extract(path), None, ex.resolved_conf()
    except (ImageError, FileNotFoundError) as exc:
        return name, None, problem_of(exc, path), ex.resolved_conf()


def query_task(work: str, name: str, settings, fingerprint: str, index_key: str) -> str:
    """Search the index with one photo, verify its candidates, write its JSON
    (atomically); nothing to do when the JSON is already there."""
    from common.files import atomic_write_bytes

    from .searching import answer_query

    out = _result_file(work, name)
    if _read_result(out, fingerprint) is not None:
        return name
    feats = _features_file(os.path.join(work, "features.h5"))[name]
    ans = answer_query(_index(os.path.join(work, "index"), index_key), feats, name, settings, exclude=(name,))
    rec = {
        "photo": name, "fingerprint": fingerprint, "n_features": len(feats),
        "results": [{"name": r.name, "inliers": int(r.inliers), "putative": int(r.putative),
                     "spread": round(float(r.spread), 6), "votes": int(r.votes),
                     "unique_inliers": int(getattr(r, "unique_inliers", r.inliers)),
                     "confidence": float(r.confidence)} for r in ans.results if r.verified],
    }
    atomic_write_bytes(out, (json.dumps(rec, sort_keys=True) + "\n").encode())
    return name


def _read_result(path: str, fingerprint: str) -> dict | None:
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if rec.get("fingerprint") == fingerprint else None


def _run_tasks(client, fn, args_list, window: int, desc: str, progress: bool):
    """Yield fn(*args) for each args, in-process or on the Dask client with at
    most ``window`` tasks per worker in flight (the client's memory stays bounded)."""
    from tqdm import tqdm

    bar = tqdm(total=len(args_list), desc=desc, unit="photo", disable=None if progress else True, dynamic_ncols=True)
    try:
        if client is None:
            for args in args_list:
                yield fn(*args)
                bar.update()
            return
        from distributed import as_completed

        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        limit = max(1, window * n_workers)
        todo = iter(args_list)
        first = [client.submit(fn, *a, pure=False) for a in _take(todo, limit)]
        ac = as_completed(first)
        for fut in ac:
            res = fut.result()
            fut.release()
            for a in _take(todo, 1):
                ac.add(client.submit(fn, *a, pure=False))
            yield res
            bar.update()
    finally:
        bar.close()


def _take(it, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


# ---------------------------------------------------------------- stages


def _extract(items, work: str, conf, client, window: int, progress: bool) -> tuple[int, list]:
    """Extract the photos missing from work/features.h5. Returns (extracted, failed)."""
    from delf.extract import extract_to_h5
    from delf.featio import FeatureFile, FeatureWriter

    path = os.path.join(work, "features.h5")
    have: set = set()
    if os.path.isfile(path):
        with FeatureFile(path) as ff:
            have = set(ff.names)
    todo = [(p, n) for p, n in items if n not in have]
    if not todo:
        return 0, []
    if client is None:
        rep = extract_to_h5(todo, path, extractor=_extractor(conf), progress=progress)
        by_path = {p: n for p, n in todo}
        return len(rep.extracted), [(by_path.get(p, p), problem) for p, problem in rep.failed]
    failed, done = [], 0
    writer = None
    try:
        tasks = [(os.path.abspath(p), n, conf) for p, n in todo]
        for name, feats, problem, resolved in _run_tasks(client, extract_task, tasks, window, "extract", progress):
            if writer is None:
                writer = FeatureWriter(path, resolved)
            if feats is None:
                failed.append((name, problem))
            else:
                writer.write(name, feats)
                done += 1
    except BaseException:
        if writer is not None:
            writer.close(commit=False)
        raise
    if writer is not None:
        writer.close(commit=True)
    return done, failed


def _ensure_index(work: str, names: list, index_conf=None) -> str:
    """Build work/index from the features of ``names`` (photos of this run;
    a features file may hold photos since removed from the folder) unless it
    already holds exactly those with the same confs. Returns the index key
    (a digest of what the index holds)."""
    from common.files import atomic_write_bytes
    from delf.featio import FeatureFile
    from index import IndexConf, build_index_from_features
    from index import store

    # One build thread: Annoy's multi-threaded build is not reproducible even with a seed
    # (measured: two builds of the same 202 photos gave different trees and, for one pair,
    # 347 vs 350 inliers), and a rebuild after a kill must give the same index.
    index_conf = index_conf or IndexConf(build_threads=1)
    feats_path = os.path.join(work, "features.h5")
    with FeatureFile(feats_path) as ff:
        conf = ff.conf
    key = sha256_text(json.dumps({"photos": sorted(names), "extractor": conf,
                                  "index": {k: v for k, v in index_conf.to_dict().items()
                                            if k not in ("build_threads", "lock_timeout")}},
                                 sort_keys=True), 32)
    idx_dir = os.path.join(work, "index")
    key_file = os.path.join(work, "index.key")
    if os.path.isfile(store.manifest_path(idx_dir)) and os.path.isfile(key_file):
        with open(key_file) as f:
            if f.read().strip() == key:
                return key
    with FeatureFile(feats_path) as ff:
        build_index_from_features(idx_dir, ((n, ff[n]) for n in sorted(names)), conf, index_conf, overwrite=True)
    atomic_write_bytes(key_file, (key + "\n").encode())
    return key


def _edges(work: str, names: list, fingerprint: str) -> tuple[dict, set]:
    """{(a, b): [conf a->b, conf b->a, inliers a->b, inliers b->a]} with a < b, over
    every verified pair, from the per-photo results (read one at a time)."""
    live = set(names)
    pairs: dict = {}
    for q in names:
        rec = _read_result(_result_file(work, q), fingerprint)
        if rec is None:
            raise RuntimeError(f"{work}: the query result of {q!r} is missing; run again to complete it")
        for r in rec["results"]:
            n = r["name"]
            if n == q or n not in live:
                continue
            a, b = (q, n) if q < n else (n, q)
            e = pairs.setdefault((a, b), [None, None, -1, -1])
            side = 0 if q == a else 1
            e[side] = float(r["confidence"])
            e[2 + side] = int(r["inliers"])
    return pairs, live


def combine(e: list) -> tuple[float, int]:
    """An edge's confidence (the higher of its two directions: either query
    alone found and verified the pair) and the inliers of that direction."""
    ab, ba = (-1.0 if e[0] is None else e[0]), (-1.0 if e[1] is None else e[1])
    return (ab, e[2]) if (ab, e[2]) >= (ba, e[3]) else (ba, e[3])


def group_photos(names, edges, refine: str = "triangle", joined=(), confidence=None) -> tuple[list, set]:
    """Groups (a list of sorted photo lists, largest first) from confident
    ``edges`` [(a, b)], and the edges that were used to join groups.

    "triangle": an edge (a, b) joins when a and b share a confident neighbour
    (a triangle: two more edges agree). A photo that no triangle joins is then
    attached by its most confident edge alone (``confidence``: {(a, b): value};
    ties by name): one edge per such photo only ever brings that photo into one
    group, so these edges cannot merge two groups either. A single wrong edge
    between two places links two photos that have no common neighbour, so it
    joins nothing unless it is the only link of a photo, which then sits in
    the wrong group alone. ``joined`` pairs (exact duplicates) always join."""
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    used = set()
    for a, b in edges:
        if refine == "none" or (adj[a] & adj[b]):
            used.add((a, b))
    if refine != "none":
        conf = confidence or {}
        in_triangle = {n for e in used for n in e}
        for n in sorted(adj):
            if n in in_triangle:
                continue
            best = max(adj[n], key=lambda m: (conf.get((min(n, m), max(n, m)), 0.0), m))
            used.add((min(n, best), max(n, best)))
    parent = {n: n for n in names}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in sorted(used | set(joined)):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps = defaultdict(list)
    for n in names:
        comps[find(n)].append(n)
    groups = sorted((sorted(c) for c in comps.values()), key=lambda c: (-len(c), c[0]))
    return groups, used


def _csv_bytes(header, rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _write_sheets(out: str, groups, paths: dict, edge_rows: list, dup_of: dict, threshold: float,
                  progress: bool) -> None:
    """One HTML contact sheet per group of two or more photos (thumbnails link
    to the photos where they are), and sheets/index.html listing the groups."""
    from tqdm import tqdm

    from common.files import atomic_write_bytes

    sheets = os.path.join(out, "sheets")
    by_photo = defaultdict(list)
    for row in edge_rows:
        by_photo[row[0]].append(row)
    multi = [g for g in groups if len(g) > 1]
    style = ("<style>body{font-family:sans-serif}figure{display:inline-block;margin:4px;width:210px;"
             "vertical-align:top;font-size:11px;word-break:break-all}img{max-width:200px;max-height:160px}"
             "td{padding:0 6px;font-size:12px}</style>")
    index_rows = []
    for gi, g in enumerate(tqdm(multi, desc="sheets", unit="group", disable=None if progress else True, dynamic_ncols=True)):
        fn = f"group_{gi:04d}.html"
        figs = []
        for n in g:
            src = os.path.relpath(os.path.abspath(paths[n]), os.path.abspath(sheets)) if n in paths else n
            dup = f"<br>duplicate of {html.escape(dup_of[n])}" if n in dup_of else ""
            figs.append(f'<figure><a href="{html.escape(src)}"><img src="{html.escape(src)}" loading="lazy"></a>'
                        f"<figcaption>{html.escape(n)}{dup}</figcaption></figure>")
        members = set(g)
        rows = [r for n in g for r in by_photo[n] if r[1] in members]
        table = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{inl}</td><td>{c:.4f}</td>"
                        f"<td>{'yes' if used else 'no'}</td></tr>" for a, b, inl, c, _, _, used, _ in rows)
        page = (f"<!doctype html><meta charset=utf-8><title>group {gi}</title>{style}"
                f"<h1>group {gi}: {len(g)} photos</h1><p><a href=index.html>all groups</a></p>{''.join(figs)}"
                f"<h2>confident edges (threshold {threshold:g})</h2><table><tr><th>photo A</th><th>photo B</th>"
                f"<th>inliers</th><th>confidence</th><th>joins</th></tr>{table}</table>\n")
        atomic_write_bytes(os.path.join(sheets, fn), page.encode())
        index_rows.append(f'<li><a href="{fn}">group {gi}</a>: {len(g)} photos ({html.escape(g[0])}, ...)</li>')
    page = (f"<!doctype html><meta charset=utf-8><title>groups</title>{style}<h1>{len(multi)} groups of two or "
            f"more photos</h1><ul>{''.join(index_rows)}</ul>\n")
    atomic_write_bytes(os.path.join(sheets, "index.html"), page.encode())


# ---------------------------------------------------------------- the job


def run_collection(inputs, out: str, conf: CollectionConf | None = None, extractor_conf=None, work: str | None = None,
                   client=None, calibration=None, search_conf=None, index_conf=None,
                   progress: bool = True) -> CollectionReport:
    """Match every photo of ``inputs`` (folders, files or (path, name) tuples)
    against the others and group them into places. Writes into ``out``:

      edges.csv       photo_a,photo_b,inliers,confidence,confidence_ab,confidence_ba,joins,duplicate:
                      every confident edge (a < b, once per pair); confidence is the higher of the
                      two directions' (empty: that direction did not verify the pair); joins: 1 when
                      the edge joined groups (see ``group_photos``)
      groups.csv      photo,group,group_size,duplicate_of: every usable photo; group 0 is the largest
      graph.json      the same graph (photos, edges, groups, duplicates, unusable photos, counts, confs)
      verified.csv    photo_a,photo_b,confidence_ab,confidence_ba,inliers_ab,inliers_ba: every verified pair
      sheets/         index.html and group_NNNN.html contact sheets
      report.json     counts and stage times of this run (the only file that differs between runs)

    and its working files (features, index, per-photo results) into ``work``
    (default out/work). ``client``: a ``distributed.Client`` to run extraction
    and queries on."""
    from common.files import atomic_write_bytes
    from delf.conf import ExtractorConf
    from verify.rerank import RerankConf

    from .searching import SearchSettings

    t_start = time.perf_counter()
    conf = conf or CollectionConf()
    extractor_conf = extractor_conf or ExtractorConf()
    out = os.fspath(out)
    # Absolute: Dask workers may run in another folder.
    work = os.path.abspath(os.fspath(work) if work else os.path.join(out, "work"))
    photo_items(inputs)  # refuse missing inputs before anything is written
    os.makedirs(os.path.join(work, "queries"), exist_ok=True)
    for folder in (out, work, os.path.join(work, "queries")):
        sweep_tmp(folder)  # what a killed run's atomic writes left
    rep = CollectionReport(out=out)
    sec = rep.seconds
    # Edges are photo pairs: a calibration that reads the match graph (version 3) lends its pair model,
    # since the collection's own graph is what is being built.
    from verify.confidence import Calibration

    cal = (calibration or Calibration.load()).pair_model
    settings = SearchSettings(search=search_conf, rerank=RerankConf(verify_top=conf.verify_top),
                              calibration=cal, threshold=conf.threshold).resolved()
    rep.threshold = threshold = float(settings.threshold)

    # 1. list and hash (exact duplicates: same bytes)
    t = time.perf_counter()
    items = photo_items(inputs)
    paths = dict((n, p) for p, n in items)
    from tqdm import tqdm

    first_of: dict = {}
    dup_of: dict = {}
    for p, n in tqdm(items, desc="hash", unit="photo", disable=None if progress else True, dynamic_ncols=True):
        h = _sha256_or_none(p)
        if h is None:
            continue
        if h in first_of:
            dup_of[n] = first_of[h]
        else:
            first_of[h] = n
    rep.photos = len(items)
    sec["hash"] = time.perf_counter() - t

    # 2. extract
    t = time.perf_counter()
    rep.extracted, failed = _extract(items, work, extractor_conf, client, conf.window, progress)
    sec["extract"] = time.perf_counter() - t

    # 3. index
    t = time.perf_counter()
    from delf.featio import FeatureFile

    feats_path = os.path.join(work, "features.h5")
    if not os.path.isfile(feats_path):
        raise ValueError(f"no usable photo in {', '.join(str(i) for i in inputs)}: "
                         + "; ".join(f"{n}: {p}" for n, p in failed[:3]))
    with FeatureFile(feats_path) as ff:
        stored = set(ff.names)
    names = [n for _, n in items if n in stored]
    failed_names = {n for n, _ in failed}
    # A photo that failed in an earlier run fails again here (it is retried).
    rep.failed = sorted(failed) + sorted((n, "not extracted") for _, n in items
                                         if n not in stored and n not in failed_names)
    index_key = _ensure_index(work, names, index_conf)
    fingerprint = _fingerprint(settings, index_key)
    sec["index"] = time.perf_counter() - t

    # 4. queries
    t = time.perf_counter()
    todo = [n for n in names if _read_result(_result_file(work, n), fingerprint) is None]
    rep.query_skipped = len(names) - len(todo)
    for _ in _run_tasks(client, query_task, [(work, n, settings, fingerprint, index_key) for n in todo],
                        conf.window, "query", progress):
        rep.queried += 1
    sec["query"] = time.perf_counter() - t

    # 5. graph and groups
    t = time.perf_counter()
    release_cache()
    pairs, live = _edges(work, names, fingerprint)
    rep.pairs_verified = len(pairs)
    rep.pairs_total = len(names) * (len(names) - 1) // 2
    edge_list = []
    for (a, b), e in sorted(pairs.items()):
        c, inl = combine(e)
        if c >= threshold:
            edge_list.append((a, b, inl, c, e[0], e[1]))
    dup_pairs = [(min(n, d), max(n, d)) for n, d in dup_of.items() if n in live and d in live]
    dup_of = {n: d for n, d in dup_of.items() if n in live and d in live}
    groups, used = group_photos(names, [(a, b) for a, b, *_ in edge_list], conf.refine, dup_pairs,
                                {(a, b): c for a, b, _, c, _, _ in edge_list})
    dup_set = set(dup_pairs)
    edge_rows = [(a, b, inl, c, ab, ba, (a, b) in used, (a, b) in dup_set) for a, b, inl, c, ab, ba in edge_list]
    rep.edges = len(edge_rows)
    rep.groups = sum(1 for g in groups if len(g) > 1)
    rep.duplicates = len(dup_of)

    def fmt(v):
        return "" if v is None else f"{v:.6f}"

    atomic_write_bytes(os.path.join(out, "edges.csv"), _csv_bytes(
        ["photo_a", "photo_b", "inliers", "confidence", "confidence_ab", "confidence_ba", "joins", "duplicate"],
        [(a, b, inl, f"{c:.6f}", fmt(ab), fmt(ba), int(u), int(d)) for a, b, inl, c, ab, ba, u, d in edge_rows]))
    group_of = {n: gi for gi, g in enumerate(groups) for n in g}
    atomic_write_bytes(os.path.join(out, "groups.csv"), _csv_bytes(
        ["photo", "group", "group_size", "duplicate_of"],
        [(n, group_of[n], len(groups[group_of[n]]), dup_of.get(n, "")) for n in names]))
    atomic_write_bytes(os.path.join(out, "verified.csv"), _csv_bytes(
        ["photo_a", "photo_b", "confidence_ab", "confidence_ba", "inliers_ab", "inliers_ba"],
        [(a, b, fmt(e[0]), fmt(e[1]), e[2], e[3]) for (a, b), e in sorted(pairs.items())]))
    graph = {
        "format": FORMAT, "version": VERSION, "threshold": threshold,
        "conf": conf.to_dict(), "extractor": extractor_conf.to_dict(),
        "photos": names,
        "edges": [{"a": a, "b": b, "inliers": inl, "confidence": round(c, 6),
                   "confidence_ab": None if ab is None else round(ab, 6),
                   "confidence_ba": None if ba is None else round(ba, 6), "joins": bool(u), "duplicate": bool(d)}
                  for a, b, inl, c, ab, ba, u, d in edge_rows],
        "groups": groups,
        "duplicates": [{"photo": n, "duplicate_of": d} for n, d in sorted(dup_of.items())],
        "unusable": [{"photo": n, "problem": p} for n, p in rep.failed],
        "pairs_verified": rep.pairs_verified, "pairs_total": rep.pairs_total,
    }
    from common.files import write_json

    write_json(os.path.join(out, "graph.json"), graph)
    sec["graph"] = time.perf_counter() - t

    # 6. contact sheets
    t = time.perf_counter()
    _write_sheets(out, groups, paths, edge_rows, dup_of, threshold, progress)
    sec["sheets"] = time.perf_counter() - t
    sec["total"] = time.perf_counter() - t_start
    for k in sec:
        sec[k] = round(sec[k], 3)
    write_json(os.path.join(out, "report.json"), rep.to_dict())
    return rep


__all__ = ["CollectionConf", "CollectionReport", "combine", "extract_task", "group_photos", "photo_items",
           "query_task", "run_collection"]
