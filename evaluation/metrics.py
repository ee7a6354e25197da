"""The Revisited Oxford/Paris protocol (Radenovic et al., CVPR 2018): ground
truth, Medium/Hard positives, junk removal, trapezoidal AP and mP@k, as the
revisitop code computes them."""

from __future__ import annotations

import json
import os
from collections import Counter
from math import comb

import numpy as np

KAPPAS = (1, 5, 10)


def load_gnd(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such ground-truth file")
    try:
        with open(path) as f:
            g = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ground truth ({exc})") from None
    if not isinstance(g, dict) or "database" not in g or "queries" not in g:
        raise ValueError(f"{path}: expected keys 'database' and 'queries' (Revisited Oxford layout)")
    for i, q in enumerate(g["queries"]):
        missing = [k for k in ("query", "bbx", "easy", "hard", "junk") if k not in q]
        if missing:
            raise ValueError(f"{path}: query {i} lacks {', '.join(missing)}")
    return g


def protocol(q: dict, setup: str) -> tuple[set, set]:
    """(positives, junk) of a ground-truth query under ``setup`` 'medium' or 'hard'."""
    if setup == "medium":
        return set(q["easy"]) | set(q["hard"]), set(q["junk"])
    if setup == "hard":
        return set(q["hard"]), set(q["junk"]) | set(q["easy"])
    raise ValueError(f"setup must be 'medium' or 'hard', got {setup!r}")


def positive_ranks(ranking, positives: set, junk: set) -> np.ndarray:
    """0-based ranks of the positives once junk is removed from ``ranking``."""
    ranks, r = [], 0
    for name in ranking:
        if name in junk:
            continue
        if name in positives:
            ranks.append(r)
        r += 1
    return np.array(ranks, np.int64)


def average_precision(ranks, n_positives: int, interpolation: str = "trapezoid") -> float:
    """AP of a ranking: ``ranks`` are the sorted 0-based positions of the
    retrieved positives, junk already removed; positives never retrieved count
    as missed. ``trapezoid``: the revisited protocol's AP (revisitop
    ``compute_ap``); ``step``: the plain non-interpolated AP (mean precision at
    each positive)."""
    if n_positives <= 0:
        raise ValueError("AP needs at least one positive")
    if interpolation not in ("trapezoid", "step"):
        raise ValueError(f"interpolation must be 'trapezoid' or 'step', got {interpolation!r}")
    ap = 0.0
    step = 1.0 / n_positives
    for j, rank in enumerate(np.asarray(ranks, np.int64)):
        p1 = (j + 1) / (rank + 1)
        if interpolation == "step":
            ap += p1 * step
            continue
        p0 = 1.0 if rank == 0 else j / rank
        ap += (p0 + p1) * step / 2.0
    return ap


def precision_at(ranks, kappas=KAPPAS) -> list[float]:
    """revisitop's mP@k for one query: precision at min(k, rank of the last retrieved positive)."""
    pos = np.asarray(ranks, np.int64) + 1
    if len(pos) == 0:
        return [0.0 for _ in kappas]
    out = []
    for k in kappas:
        kq = min(int(pos.max()), k)
        out.append(float((pos <= kq).sum()) / kq)
    return out


def evaluate_rankings(gnd: dict, rankings: dict, kappas=KAPPAS) -> dict:
    """mAP and mP@k (percent) for Medium and Hard, plus per-query figures.
    ``rankings`` maps query name -> list of database names, best first (names
    without extension, as in the ground truth); queries without positives in a
    setup are left out of its mean."""
    out = {}
    per_query = {}
    for setup in ("medium", "hard"):
        aps, prs = [], []
        for q in gnd["queries"]:
            name = q["query"]
            if name not in rankings:
                continue
            pos, junk = protocol(q, setup)
            if not pos:
                continue
            ranks = positive_ranks(rankings[name], pos, junk)
            ap = average_precision(ranks, len(pos))
            pr = precision_at(ranks, kappas)
            aps.append(ap)
            prs.append(pr)
            per_query.setdefault(name, {})[setup] = {"ap": round(100 * ap, 2),
                                                     **{f"p@{k}": round(100 * p, 2) for k, p in zip(kappas, pr)}}
        d = {"map": round(100 * float(np.mean(aps)), 2) if aps else float("nan"), "queries": len(aps)}
        for j, k in enumerate(kappas):
            d[f"mp@{k}"] = round(100 * float(np.mean([p[j] for p in prs])), 2) if prs else float("nan")
        out[setup] = d
    out["per_query"] = per_query
    return out


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


__all__ = ["KAPPAS", "adjusted_rand_index", "average_precision", "global_average_precision", "evaluate_rankings", "load_gnd", "positive_ranks", "precision_at",
           "protocol"]
