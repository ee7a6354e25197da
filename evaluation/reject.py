"""`delf evaluate reject`: photos of places the Oxford database does not hold
(landmarks/ and ukbench/) must be answered "no match"; the Oxford queries must
be accepted with a right top-1."""

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


def evaluate_reject(data: str, work: str, conf=None, verify_top: int = 100, threshold: float | None = None,
                    db_features: str | None = None, progress: bool = True, log=_log_default) -> dict:
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
    idx_path = database_index(feats_path, work, log)
    items = not_a_match_photos(data)
    qpath = os.path.join(work, f"not-a-match-{conf_key(extractor.resolved_conf())}.h5")
    log(f"not-a-match query features: {qpath}")
    rep = extract_to_h5(items, qpath, extractor=extractor, progress=progress)
    if rep.failed:
        log(rep.summary())
    per_query, preds = [], []
    with Engine.open(idx_path, candidates=verify_top, threshold=threshold, extractor=extractor) as engine, \
            FeatureFile(qpath) as qf:
        settings = engine.settings
        for path, name in tqdm(items, desc="not-a-match", unit="query", disable=None if progress else True):
            if name not in qf:
                continue
            ans = engine.search(qf[name], name=name)
            b = ans.best
            per_query.append({"query": name, "kind": "not_a_match", "decision": "match" if ans.match else "no match",
                              "confidence": round(ans.confidence, 4), "top1": b.name if b else None,
                              "top1_inliers": b.inliers if b else 0})
            preds.append((ans.confidence, False, False))
        accepted_true = 0
        for q in gnd["queries"]:
            name = q["query"]
            feats = extractor.extract(crop_query(os.path.join(qdir, f"{name}.jpg"), q["bbx"]), name)
            ans = engine.search(feats, name=name)
            pos, junk = protocol(q, "medium")
            top = next((r for r in ans.results if r.name[:-4] not in junk), None)
            ok = bool(top is not None and top.name[:-4] in pos)
            acc = bool(top is not None and top.confidence >= settings.threshold)
            accepted_true += ok and acc
            per_query.append({"query": name, "kind": "oxford", "decision": "match" if acc else "no match",
                              "confidence": round(top.confidence if top else 0.0, 4),
                              "top1": top.name if top else None, "top1_positive": ok,
                              "top1_inliers": top.inliers if top else 0})
            preds.append((top.confidence if top else 0.0, ok, True))
            log(f"{name}: top-1 {per_query[-1]['top1']} positive={ok} confidence {per_query[-1]['confidence']:.3f}")
    nam = [p for p in per_query if p["kind"] == "not_a_match"]
    false_acc = [p for p in nam if p["decision"] == "match"]
    worst = max(nam, key=lambda p: p["confidence"]) if nam else None
    return {
        "false_accepts": len(false_acc), "not_a_match_queries": len(nam),
        "true_accept_rate": round(accepted_true / max(len(gnd["queries"]), 1), 4),
        "gap": round(global_average_precision(preds), 4),
        "threshold": settings.threshold,
        "max_not_a_match_confidence": worst["confidence"] if worst else None,
        "max_not_a_match": worst,
        "false_accepted": false_acc,
        "per_query": per_query,
        "setup": {"data": os.path.abspath(data), "oxford_queries": len(gnd["queries"]),
                  "database_photos": len(gnd["database"]), "verify_top": verify_top,
                  "extractor_conf": extractor.resolved_conf()},
    }


__all__ = ["evaluate_reject", "not_a_match_photos"]
