"""Evaluation code (Revisited AP, mP@k, GAP), the confidence model and the
ranking rule, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import average_precision, evaluate_rankings, positive_ranks, precision_at, protocol
from verify.confidence import FEATURES, FEATURES_V2, NONNEGATIVE, NONPOSITIVE, Calibration, feature_matrix, fit_logistic
from verify.rerank import rank_key


def test_ap_by_hand_with_junk():
    # Ranking a j b c d: positives {a, c, e} (e never retrieved), junk {j}.
    # Junk removed: a(0) b(1) c(2) d(3); positives at ranks 0 and 2 out of 3.
    ranks = positive_ranks(["a", "j", "b", "c", "d"], {"a", "c", "e"}, {"j"})
    assert ranks.tolist() == [0, 2]
    # Trapezoids: (1 + 1)/2 * 1/3 + (1/2 + 2/3)/2 * 1/3
    expected = (1.0 + 1.0) / 2 / 3 + (0.5 + 2 / 3) / 2 / 3
    assert average_precision(ranks, 3) == pytest.approx(expected)
    assert expected == pytest.approx(0.527777, abs=1e-5)
    # revisitop's mP@k: precision at min(k, position of the last retrieved positive).
    assert precision_at(ranks, (1, 5, 10)) == pytest.approx([1.0, 2 / 3, 2 / 3])


def test_ap_perfect_and_empty():
    assert average_precision([0, 1, 2], 3) == pytest.approx(1.0)
    assert average_precision([], 4) == 0.0
    with pytest.raises(ValueError):
        average_precision([0], 0)


def test_medium_and_hard_protocols():
    q = {"query": "q", "bbx": [0, 0, 1, 1], "easy": ["e1", "e2"], "hard": ["h1"], "junk": ["j"]}
    gnd = {"database": ["e1", "e2", "h1", "j", "x"], "queries": [q]}
    assert protocol(q, "medium") == ({"e1", "e2", "h1"}, {"j"})
    assert protocol(q, "hard") == ({"h1"}, {"j", "e1", "e2"})
    # Hard: e1, j, e2 are removed, so h1 is first.
    res = evaluate_rankings(gnd, {"q": ["e1", "j", "h1", "x", "e2"]})
    assert res["hard"]["map"] == pytest.approx(100.0)
    # Medium: j removed -> e1(0) h1(1) x(2) e2(3): (1 + 1 + 2*(1 + (2/2 + 3/4)/2 ... computed below
    r = [0, 1, 3]
    exp = sum(((1.0 if k == 0 else j / k) + (j + 1) / (k + 1)) / 2 / 3 for j, k in enumerate(r))
    assert res["medium"]["map"] == pytest.approx(round(100 * exp, 2))


def test_gap_by_hand():
    from evaluation.metrics import global_average_precision

    # Sorted by confidence: correct(0.9), wrong not-a-landmark(0.8), correct(0.5), wrong landmark(0.1).
    preds = [(0.5, True, True), (0.9, True, True), (0.8, False, False), (0.1, False, True)]
    # 3 queries show a landmark; precision at ranks 1 and 3: 1/1 and 2/3.
    assert global_average_precision(preds) == pytest.approx((1.0 + 2 / 3) / 3)


def test_rank_key_orders_by_inliers_then_votes_then_order():
    inliers = np.array([5, 12, 12, -1, 0, 12])
    votes = np.array([40, 10, 30, 90, 50, 30])
    scores = np.array([30.0, 5.0, 20.0, 80.0, 40.0, 20.0])
    # 12 inliers: votes 30 (rows 2 and 5 tie on everything: keep their order), then 10;
    # then 5, then 0; the unverified candidate (-1) last despite its votes.
    assert rank_key(inliers, votes, scores).tolist() == [2, 5, 1, 0, 4, 3]


def _cal(coef=(1.5, 1.0, 1.0, -0.5, 0.8, 0.3, -0.5)):
    return Calibration(coef=coef, intercept=-2.0, mean=(2.0, 0.2, 0.3, 3.0, 1.0, 1.0, 0.5),
                       scale=(1.0, 0.1, 0.2, 1.0, 1.0, 1.0, 1.0), threshold=0.6, min_inliers=5)


def test_confidence_monotone_in_inliers():
    cal = _cal()
    putative = 80
    inl = np.arange(0, putative + 1)
    # Spread that grows with the inliers, as it does in practice.
    spread = np.minimum(inl / 100.0, 1.0)
    c = cal.confidence(inl, np.full_like(inl, putative), spread)
    assert (np.diff(c) >= 0).all()
    assert (c[:5] == 0).all() and c[-1] > 0.9
    assert ((0 <= c) & (c <= 1)).all()


def test_fit_keeps_evidence_coefficients_nonnegative():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.3).astype(float)
    inl = np.where(y == 1, rng.integers(10, 60, n), rng.integers(5, 14, n))
    put = inl + rng.integers(5, 100, n)
    # Make spread anti-correlated with matching in this sample: the fit must not turn it negative.
    spread = np.where(y == 1, rng.uniform(0.0, 0.2, n), rng.uniform(0.1, 0.3, n))
    x = feature_matrix(inl, put, spread)
    coef, b, mean, scale = fit_logistic(x, y)
    for f, c in zip(FEATURES, coef):
        if f in NONNEGATIVE:
            assert c >= 0, f
        if f in NONPOSITIVE:
            assert c <= 0, f
    k = len(FEATURES_V2)  # scale_change is 0 here: a version 2 model over the other columns
    assert coef[k:].tolist() == [0.0]
    cal = Calibration(tuple(coef[:k]), b, tuple(mean[:k]), tuple(scale[:k]), min_inliers=5)
    p = cal.confidence(inl, put, spread)
    # It separates the two classes it was fitted on.
    assert p[y == 1].mean() > 0.7 > 0.3 > p[y == 0].mean()


def test_calibration_round_trip_and_bad_files(tmp_path):
    cal = _cal()
    path = tmp_path / "c.json"
    cal.save(str(path))
    back = Calibration.load(str(path))
    assert back == cal
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a confidence calibration"):
        Calibration.load(str(path))
    path.write_text("not json")
    with pytest.raises(ValueError, match="unreadable"):
        Calibration.load(str(path))
    with pytest.raises(FileNotFoundError, match="delf calibrate"):
        Calibration.load(str(tmp_path / "missing.json"))


def test_shipped_calibration_loads_and_was_not_fitted_on_oxford():
    from engine.calibration import THRESHOLD_FLOOR

    cal = Calibration.load()
    assert THRESHOLD_FLOOR <= cal.threshold < 1.0
    assert not any("oxford" in s.lower() for s in cal.fitted_on.get("sources", []))


def test_sift_reference_matching_by_hand():
    """The RootSIFT reference's matcher: mutual nearest neighbours with Lowe's ratio 0.8."""
    from evaluation.sift import SIFT_RATIO
    from verify.matching import match_descriptors

    d = np.eye(4, dtype=np.float32)
    q = np.array([[1, 0, 0, 0], [0.7, 0.7, 0, 0], [0, 0, 0.99, 0.14]], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    m = match_descriptors(q, d, ratio=SIFT_RATIO, mutual=True).pairs
    # Query 0 matches 0 clearly; query 1 is ambiguous (ratio test fails); query 2 matches 2.
    assert m.tolist() == [[0, 0], [2, 2]]


def test_reject_summary_margin_and_true_accepts():
    """`delf evaluate reject`'s figures from per-query records: the margin is the least confident accepted
    right answer minus the most confident photo of another place."""
    from evaluation.reject import summary

    recs = [{"kind": "not_a_match", "confidence": c} for c in (0.1, 0.25, 0.0)]
    recs += [{"kind": "oxford", "confidence": c, "top1_positive": ok}
             for c, ok in ((0.9, True), (0.4, True), (0.2, True), (0.95, False))]
    s = summary(recs, threshold=0.3)
    assert s["false_accepts"] == 0 and s["not_a_match_queries"] == 3
    assert s["accepted_right"] == 2 and s["true_accept_rate"] == 0.5  # 0.2 is below it, 0.95 is not a positive
    assert s["margin"] == pytest.approx(0.4 - 0.25) and s["max_not_a_match_confidence"] == 0.25
    s = summary(recs, threshold=0.2)
    assert s["false_accepts"] == 1 and s["margin"] == pytest.approx(0.2 - 0.25)  # negative: they overlap
    assert summary(recs[:3], threshold=0.3)["margin"] is None


def test_roxford_report_lines_give_every_way_of_ranking():
    from evaluation.roxford import report_lines

    m = {"map": 67.07, "mp@1": 100.0, "mp@5": 76.67, "mp@10": 65.24}
    h = {"map": 23.74, "mp@1": 50.0, "mp@5": 31.67, "mp@10": 23.33}

    def way(e, d, mm, hh, ratio):
        return {"expand": e, "diffuse": d, "medium": {"map": mm}, "hard": {"map": hh}, "expanded_queries": 4,
                "positives_in_top100": 0.862, "timing_ms": {"ratio": ratio}}

    res = {"medium": m, "hard": h, "no_rerank": {"medium": {"map": 56.06}, "hard": {"map": 11.51}},
           "positives_in_top100": 0.681, "timing_ms": {"search": 66.8, "verify": 4.7},
           "expansion": way(1, 0, 67.3, 23.96, 2.03), "diffusion": way(0, 3, 75.79, 30.6, 1.23),
           "expansion_diffusion": way(1, 3, 76.31, 31.3, 1.68)}
    lines = report_lines(res)
    assert lines[0].split()[:3] == ["Medium:", "mAP", "67.07"] and "(no re-ranking: mAP  11.51)" in lines[1]
    assert lines[2] == "per query: search 66.8 ms, verify 4.7 ms"
    assert "Hard mAP 23.96" in lines[3] and lines[3].endswith("time 2.03x")
    assert lines[4].startswith("diffusion over the match graph (from results with >= 3 unique inliers): "
                               "Medium mAP 75.79, Hard mAP 30.60; positives in the top 100 0.681 -> 0.862")
    assert lines[5].startswith("expansion and diffusion") and lines[5].endswith("time 1.68x") and len(lines) == 6
