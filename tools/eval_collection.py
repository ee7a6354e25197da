"""`delf evaluate collection`: batch matching of landmarks/ + ukbench/ against their labels."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from math import comb

DEFAULT_OUT = os.path.join("out", "evaluate", "collection")
# Folders of ../shared/data used together, and the column of their labels.csv naming the place.
SETS = (("landmarks", "scene"), ("ukbench", "object"))


def register(ev) -> None:
    from .cmd_collection import add_collection_args

    p = ev.add_parser(
        "collection", help="batch matching of landmarks/ + ukbench/ (202 photos): pair precision/recall, ARI, speed",
        description="Runs `delf collection` on landmarks/images and ukbench/images together and scores the "
                    "confident edges (pair_precision, pair_recall against same-label pairs) and the groups "
                    "(adjusted Rand index against the labels; group-pair precision/recall), with the throughput "
                    "of the whole run (photos_per_minute: honest only for a run from scratch, see 'resumed') and "
                    "the share of pairs verified.",
    )
    p.add_argument("--data", required=True, help="folder with landmarks/ and ukbench/ (each with images/ and labels.csv)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder of the collection run (default: %(default)s)")
    add_collection_args(p)
    p.set_defaults(func=run)


def collection_inputs(data: str) -> tuple[list, dict]:
    """(path, name) of every photo of the evaluation sets and {name: label}."""
    from delf.image import list_images

    from .searching import load_labels

    items, labels = [], {}
    for folder, _column in SETS:
        images = os.path.join(data, folder, "images")
        if not os.path.isdir(images):
            raise FileNotFoundError(f"{images}: no such folder (give --data the folder holding {folder}/)")
        lab = load_labels(os.path.join(data, folder, "labels.csv"))
        for path, name in list_images([images]):
            full = f"{folder}/images/{name}"
            if name not in lab:
                raise ValueError(f"{path}: no label in {os.path.join(data, folder, 'labels.csv')}")
            items.append((path, full))
            labels[full] = f"{folder}:{lab[name]}"
    return items, labels


def adjusted_rand_index(truth, pred) -> float:
    """Hubert and Arabie's adjusted Rand index of two labellings of the same items."""
    truth, pred = list(truth), list(pred)
    n = len(truth)
    if n != len(pred):
        raise ValueError("both labellings must cover the same items")
    if n < 2:
        return 1.0
    both = sum(comb(v, 2) for v in Counter(zip(truth, pred)).values())
    a = sum(comb(v, 2) for v in Counter(truth).values())
    b = sum(comb(v, 2) for v in Counter(pred).values())
    expected = a * b / comb(n, 2)
    best = (a + b) / 2
    return 1.0 if best == expected else (both - expected) / (best - expected)


def score(graph: dict, labels: dict) -> dict:
    """Edge and group quality of a collection graph (graph.json) against labels."""
    photos = [p for p in graph["photos"] if p in labels]
    same_total = sum(1 for a, b in itertools.combinations(photos, 2) if labels[a] == labels[b])
    edges = [(e["a"], e["b"]) for e in graph["edges"] if e["a"] in labels and e["b"] in labels]
    tp = sum(1 for a, b in edges if labels[a] == labels[b])
    group_of = {p: gi for gi, g in enumerate(graph["groups"]) for p in g}
    co = [(a, b) for g in graph["groups"] for a, b in itertools.combinations(sorted(g), 2)
          if a in labels and b in labels]
    co_tp = sum(1 for a, b in co if labels[a] == labels[b])
    wrong = sorted(((a, b) for a, b in edges if labels[a] != labels[b]))
    return {
        "pair_precision": round(tp / len(edges), 4) if edges else 1.0,
        "pair_recall": round(tp / same_total, 4) if same_total else 1.0,
        "ari": round(adjusted_rand_index([labels[p] for p in photos], [group_of[p] for p in photos]), 4),
        "group_pair_precision": round(co_tp / len(co), 4) if co else 1.0,
        "group_pair_recall": round(co_tp / same_total, 4) if same_total else 1.0,
        "edges": len(edges), "same_label_pairs": same_total,
        "groups": sum(1 for g in graph["groups"] if len(g) > 1),
        "singletons": sum(1 for g in graph["groups"] if len(g) == 1),
        "labels": len(set(labels[p] for p in photos)),
        "wrong_edges": [list(w) for w in wrong[:20]],
    }


def evaluate_collection(data: str, out: str, conf=None, extractor_conf=None, work=None, client=None,
                        calibration=None, progress: bool = True) -> dict:
    from .collection import run_collection

    items, labels = collection_inputs(data)
    t0 = time.perf_counter()
    rep = run_collection(items, out, conf, extractor_conf, work=work, client=client, calibration=calibration,
                         progress=progress)
    seconds = time.perf_counter() - t0
    import json

    with open(os.path.join(out, "graph.json")) as f:
        graph = json.load(f)
    res = score(graph, labels)
    res.update({
        "photos": rep.photos, "unusable": len(rep.failed),
        "photos_per_minute": round(rep.photos / (seconds / 60.0), 2),
        "pairs_verified": rep.pairs_verified, "pairs_total": rep.pairs_total,
        "pairs_verified_fraction": round(rep.pairs_verified / max(rep.pairs_total, 1), 4),
        "threshold": rep.threshold, "resumed": rep.resumed,
        "seconds": rep.seconds, "workers": len(client.scheduler_info()["workers"]) if client is not None else 0,
        "conf": graph["conf"], "out": out,
    })
    return res


def run(args) -> int:
    from verify.confidence import Calibration

    from .cmd_collection import collection_conf_from_args, dask_client
    from .common import write_json
    from .confargs import conf_from_args

    cal = Calibration.load(args.calibration) if args.calibration else None
    with dask_client(args) as client:
        res = evaluate_collection(args.data, args.out, collection_conf_from_args(args), conf_from_args(args),
                                  work=args.work, client=client, calibration=cal, progress=not args.quiet)
    print(f"pair_precision {res['pair_precision']:.4f}  pair_recall {res['pair_recall']:.4f}  ari {res['ari']:.4f}  "
          f"groups {res['groups']} (+{res['singletons']} single photos, {res['labels']} labels)  "
          f"threshold {res['threshold']:g}")
    print(f"pairs verified {res['pairs_verified']} of {res['pairs_total']} ({100 * res['pairs_verified_fraction']:.1f}%)"
          f"  {res['photos_per_minute']:.1f} photos/minute{' (resumed run: not a from-scratch time)' if res['resumed'] else ''}")
    if args.json:
        write_json(args.json, res)
    return 0
