"""`delf evaluate collection`: batch matching of landmarks/ + ukbench/ against their labels."""

from __future__ import annotations

import itertools
import os
import time

from .metrics import adjusted_rand_index

DEFAULT_OUT = os.path.join("out", "evaluate", "collection")
# Folders of ../shared/data used together, and the column of their labels.csv naming the place.
SETS = (("landmarks", "scene"), ("ukbench", "object"))


def collection_inputs(data: str) -> tuple[list, dict]:
    """(path, name) of every photo of the evaluation sets and {name: label}."""
    from delf.image import list_images

    from common.labels import load_labels

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
    from engine.collection import run_collection

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


__all__ = ["collection_inputs", "evaluate_collection", "score"]
