"""The Revisited Oxford/Paris protocol (Radenovic et al., CVPR 2018): ground
truth, Medium/Hard positives, junk removal, trapezoidal AP and mP@k, as the
revisitop code computes them."""

from __future__ import annotations

import json
import os

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


def average_precision(ranks, n_positives: int) -> float:
    """Trapezoidal AP (revisitop ``compute_ap``): ``ranks`` are the sorted 0-based
    positions of the retrieved positives, junk already removed; positives never
    retrieved count as missed."""
    if n_positives <= 0:
        raise ValueError("AP needs at least one positive")
    ap = 0.0
    step = 1.0 / n_positives
    for j, rank in enumerate(np.asarray(ranks, np.int64)):
        p0 = 1.0 if rank == 0 else j / rank
        p1 = (j + 1) / (rank + 1)
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


__all__ = ["KAPPAS", "average_precision", "evaluate_rankings", "load_gnd", "positive_ranks", "precision_at",
           "protocol"]
