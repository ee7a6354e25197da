"""`delf evaluate reject`: photos of places the Oxford database does not hold
(landmarks/ and ukbench/) must be answered "no match"; the Oxford queries must
be accepted with a right top-1. The margin is the lowest confidence of an
accepted right answer minus the highest confidence of a photo of another
place: how far apart the two kinds stand. A second calibration
(``compare``, e.g. an older model) is scored on the very same searches."""

from __future__ import annotations

import os

from .metrics import global_average_precision, protocol
from .roxford import _log_default, conf_key, crop_query, database_features, database_index, oxford_layout



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


def _decide(cal, results) -> float:
    """Confidence of the best of ``results`` (verify.rerank.Result) under ``cal``, on the same verification."""
    from engine.calibration import result_features

    rs = [r for r in results if r.verified]
    if not rs or rs[0] is not results[0]:
        return 0.0
    return float(cal.score(result_features(rs), [r.unique_inliers for r in rs])[0])


def summary(per_query: list, threshold: float) -> dict:
    """False accepts, true-accept rate, margin and GAP of per-query records
    (``confidence``; Oxford ones with ``top1_positive``)."""
    nam = [p for p in per_query if p["kind"] == "not_a_match"]
    oxf = [p for p in per_query if p["kind"] == "oxford"]
    false_acc = [p for p in nam if p["confidence"] >= threshold]
    right_acc = [p for p in oxf if p["top1_positive"] and p["confidence"] >= threshold]
    worst = max(nam, key=lambda p: p["confidence"]) if nam else None
    least = min(right_acc, key=lambda p: p["confidence"]) if right_acc else None
    preds = [(p["confidence"], False, False) for p in nam] + [(p["confidence"], p["top1_positive"], True) for p in oxf]
    return {
        "false_accepts": len(false_acc), "not_a_match_queries": len(nam),
        "true_accept_rate": round(len(right_acc) / max(len(oxf), 1), 4),
        "accepted_right": len(right_acc), "oxford_queries": len(oxf),
        "margin": round(least["confidence"] - worst["confidence"], 4) if least and worst else None,
        "min_accepted_right_confidence": least["confidence"] if least else None,
        "gap": round(global_average_precision(preds), 4) if oxf else None,
        "threshold": threshold,
        "max_not_a_match_confidence": worst["confidence"] if worst else None,
        "max_not_a_match": worst,
        "false_accepted": false_acc,
    }


def evaluate_reject(data: str, work: str, conf=None, verify_top: int = 100, threshold: float | None = None,
                    db_features: str | None = None, progress: bool = True, log=_log_default,
                    calibration=None, compare=None) -> dict:
    """``calibration``: the model searched with (None: the shipped one);
    ``compare``: another Calibration, scored on the same answers (its own
    default threshold) and reported under "compare"."""
    from tqdm import tqdm

    from delf.extract import extract_to_h5
    from delf.extractor import make_extractor
    from delf.featio import FeatureFile
    from engine import Engine

    oxford = os.path.join(data, "oxford")
    gnd, jpg, qdir = oxford_layout(oxford)
    os.makedirs(work, exist_ok=True)
    extractor = make_extractor(conf)
    feats_path = database_features(jpg, gnd["database"], work, extractor, db_features, progress, log)
    from verify.confidence import Calibration

    idx_path = database_index(feats_path, work, log, graph=(calibration or Calibration.load()).uses_graph)
    items = not_a_match_photos(data)
    qpath = os.path.join(work, f"not-a-match-{conf_key(extractor.resolved_conf())}.h5")
    log(f"not-a-match query features: {qpath}")
    rep = extract_to_h5(items, qpath, extractor=extractor, progress=progress)
    if rep.failed:
        log(rep.summary())
    per_query, other = [], []
    with Engine.open(idx_path, calibration=calibration, candidates=verify_top, threshold=threshold,
                     extractor=extractor) as engine, FeatureFile(qpath) as qf:
        settings = engine.settings
        for path, name in tqdm(items, desc="not-a-match", unit="query", disable=None if progress else True):
            if name not in qf:
                continue
            ans = engine.search(qf[name], name=name)
            b = ans.best
            per_query.append({"query": name, "kind": "not_a_match", "decision": "match" if ans.match else "no match",
                              "confidence": round(ans.confidence, 4), "top1": b.name if b else None,
                              "top1_inliers": b.inliers if b else 0})
            if compare is not None:
                other.append({**per_query[-1], "confidence": round(_decide(compare, ans.results), 4)})
        for q in gnd["queries"]:
            name = q["query"]
            feats = extractor.extract(crop_query(os.path.join(qdir, f"{name}.jpg"), q["bbx"]), name)
            ans = engine.search(feats, name=name)
            pos, junk = protocol(q, "medium")
            top = next((r for r in ans.results if r.name[:-4] not in junk), None)
            ok = bool(top is not None and top.name[:-4] in pos)
            acc = bool(top is not None and top.confidence >= settings.threshold)
            per_query.append({"query": name, "kind": "oxford", "decision": "match" if acc else "no match",
                              "confidence": round(top.confidence if top else 0.0, 4),
                              "top1": top.name if top else None, "top1_positive": ok,
                              "top1_inliers": top.inliers if top else 0})
            if compare is not None:
                # The old model scores the same ranked results; its top-1 is the same photo.
                rs = [r for r in ans.results if r.verified]
                c = 0.0
                if top is not None and top.verified:
                    from engine.calibration import result_features

                    c = float(compare.score(result_features(rs), [r.unique_inliers for r in rs])[rs.index(top)])
                other.append({**per_query[-1], "confidence": round(c, 4)})
            log(f"{name}: top-1 {per_query[-1]['top1']} positive={ok} confidence {per_query[-1]['confidence']:.3f}"
                + (f" (compared model {other[-1]['confidence']:.3f})" if compare is not None else ""))
    res = summary(per_query, settings.threshold)
    if compare is not None:
        res["compare"] = {**summary(other, compare.threshold), "calibration": compare.to_dict(),
                          "per_query": other}
    res["calibration"] = settings.calibration.to_dict()
    return {
        **res,
        "per_query": per_query,
        "setup": {"data": os.path.abspath(data), "oxford_queries": len(gnd["queries"]),
                  "database_photos": len(gnd["database"]), "verify_top": verify_top,
                  "extractor_conf": extractor.resolved_conf()},
    }


__all__ = ["evaluate_reject", "not_a_match_photos"]
