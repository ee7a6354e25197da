"""Leave-one-out retrieval on labelled non-Oxford photos: each photo searches
an index of all the others (itself excluded, as if not indexed), and its
ranking is scored against the photos of its label. Settings of the search
(e.g. query expansion) are chosen here, never on Oxford."""

from __future__ import annotations

import time

import numpy as np

from .metrics import average_precision


def full_ranking(index, feats, settings, answer, names: list) -> list:
    """Every indexed photo, best first: the answer's results, then the rest by
    the votes of ``feats`` (the query that searched last), then photos without a vote."""
    head = [r.name for r in answer.results]
    seen = set(head)
    votes = index.search(feats, settings.search.replace(top_n=max(len(names), 1)), exclude=[answer.query]).names
    rest = [n for n in votes if n not in seen]
    seen |= set(rest)
    return head + rest + [n for n in names if n not in seen]


def leave_one_out(features: str, index_dir: str, labels: dict, expand_values=(0,), candidates: int = 100,
                  progress: bool = True, log=print, diffuse_values=(0,)) -> dict:
    """mAP (trapezoidal AP, percent), positives in the top 100 and search time per
    query, for each ``expand`` value, over every photo of ``features`` that has a
    label and at least one other photo of its label in the index at ``index_dir``."""
    from tqdm import tqdm

    from delf.featio import FeatureFile
    from index import Index
    from verify.rerank import RerankConf

    from engine.searching import SearchSettings, search_query

    settings = SearchSettings(rerank=RerankConf(verify_top=candidates)).resolved()
    out = {}
    with Index(index_dir) as index, FeatureFile(features) as ff:
        names = [n for n in index.photos() if n in labels]
        queries = [n for n in names if sum(labels[m] == labels[n] for m in names) > 1]
        for expand, diffuse in [(e, d) for d in diffuse_values for e in expand_values]:
            aps, top100, ms, expanded = [], [], [], 0
            tag = str(expand) if not diffuse else f"{expand}/diffuse {diffuse}"
            for q in tqdm(queries, desc=f"expand {tag}", unit="query", disable=None if progress else True):
                feats = ff[q]
                t0 = time.perf_counter()
                ans, last = search_query(index, feats, q, settings, exclude=[q], expand=expand, diffuse=diffuse)
                ms.append((time.perf_counter() - t0) * 1000)
                expanded += bool(ans.expanded_from)
                ranking = [n for n in full_ranking(index, last, settings, ans, names) if n != q]
                pos = {m for m in names if m != q and labels[m] == labels[q]}
                ranks = [i for i, n in enumerate(ranking) if n in pos]
                aps.append(average_precision(ranks, len(pos)))
                top100.append(sum(1 for r in ranks if r < 100) / len(pos))
            out[tag] = {"map": round(100 * float(np.mean(aps)), 2),
                        "positives_in_top100": round(float(np.mean(top100)), 4),
                        "ms_per_query": round(float(np.mean(ms)), 1), "queries": len(queries),
                        "expanded_queries": expanded}
            log(f"expand {tag}: mAP {out[tag]['map']:.2f}, positives in top 100 "
                f"{out[tag]['positives_in_top100']:.4f}, {out[tag]['ms_per_query']:.0f} ms per query, "
                f"{expanded} of {len(queries)} queries expanded")
    return out




def evaluate_loo(data: str, work: str, expand_values=(0, 1), conf=None, candidates: int = 100,
                 progress: bool = True, log=print, diffuse_values=(0,)) -> dict:
    """`delf evaluate loo`: the photos of landmarks/ and ukbench/ (extracted once into
    WORK/features.h5, indexed once in WORK/index), each searching all the others."""
    import os

    from delf.extract import extract_to_h5
    from delf.extractor import make_extractor
    from index import IndexConf, build_index, index_info

    from .collection import collection_inputs
    from .roxford import conf_key, database_graph

    items, labels = collection_inputs(data)
    os.makedirs(work, exist_ok=True)
    extractor = make_extractor(conf)
    key = conf_key(extractor.resolved_conf())
    features = os.path.join(work, f"loo-{key}.h5")
    rep = extract_to_h5(items, features, extractor=extractor, progress=progress)
    for path, problem in rep.failed:
        log(f"{path}: {problem}")
    index_dir = os.path.join(work, f"loo-{key}.idx")
    # Reused only when it is of the default kind (one kept from before a change of default is rebuilt).
    if not os.path.isfile(os.path.join(index_dir, "manifest.json")) \
            or index_info(index_dir)["kind"] != IndexConf().kind:
        build_index(index_dir, [features], IndexConf(build_threads=1), overwrite=True)
    if any(diffuse_values):
        database_graph(index_dir, features, log)
    res = leave_one_out(features, index_dir, labels, expand_values, candidates, progress, log, diffuse_values)
    return {"expand": res, "setup": {"data": os.path.abspath(data), "features": features, "index": index_dir,
                                     "candidates": candidates, "extractor_conf": extractor.resolved_conf()}}


__all__ = ["evaluate_loo", "full_ranking", "leave_one_out"]
