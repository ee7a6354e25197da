"""`delf calibrate`'s two searches per photo and the threshold rule they feed:
the default threshold is set on searches with the query's place left out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import need_data
from engine.calibration import (THRESHOLD_FLOOR, CalibrationData, LabelledPhoto, collect, cross_validate, fit,
                                null_confidences, place_folds, with_graph_context)
from verify.confidence import feature_matrix


@pytest.fixture(scope="module")
def collected(tmp_path_factory, small_conf):
    """Four Lund photos and two views each of two UKBench objects, searched as `delf calibrate` does."""
    from delf.extract import extract_to_h5
    from engine.demo import sample_photos
    from engine.searching import SearchSettings

    work = tmp_path_factory.mktemp("calibrate")
    photos = [LabelledPhoto(p, f"lund/{i}.jpg", "lund") for i, p in enumerate(sample_photos()[:4])]
    for obj, views in (("ukb0", (0, 1)), ("ukb1", (4, 5))):
        for v in views:
            path = need_data("ukbench", "images", f"ukbench{v:05d}.jpg")
            photos.append(LabelledPhoto(str(path), f"ukbench/{v}.jpg", obj))
    feats = str(work / "features.h5")
    report = extract_to_h5([(p.path, p.name) for p in photos], feats, small_conf, progress=False)
    assert not report.failed
    data = collect(photos, feats, str(work), SearchSettings(), progress=False, log=lambda *_: None)
    return photos, data, work


def test_collect_searches_each_photo_with_and_without_its_place(collected):
    photos, data, work = collected
    label = [p.label for p in photos]
    assert data.n_queries == len(photos) and data.null_queries == len(photos)
    # First search: the query itself never comes back, the other photos of its place do, and match.
    per_query = np.bincount(data.query.astype(int), minlength=len(photos))
    assert (per_query <= len(photos) - 1).all()
    lund = np.isin(data.query, [i for i, l in enumerate(label) if l == "lund"])
    assert data.y[lund].sum() >= 4 and data.inliers[lund & (data.y == 1)].max() >= 20
    # Second search: only photos outside the query's place can be candidates.
    null_per_query = np.bincount(data.null_query.astype(int), minlength=len(photos))
    for i, l in enumerate(label):
        assert null_per_query[i] <= sum(x != l for x in label)
    assert null_per_query.sum() > 0
    # A Lund photo's best photo of another place is far weaker than its own place.
    lund_null = np.isin(data.null_query, [i for i, l in enumerate(label) if l == "lund"])
    assert data.null_inliers[lund_null].max(initial=0) < data.inliers[lund & (data.y == 1)].max() / 2
    # Each search's best result is marked (the fit's examples), and each query row knows its place.
    assert np.bincount(data.query[data.best].astype(int), minlength=len(photos)).max() == 1
    assert data.best.sum() == len(np.unique(data.query)) and data.null_best.sum() == len(np.unique(data.null_query))
    assert list(data.query_labels) == label
    # The examples are saved for a refit, not-a-match searches included.
    back = CalibrationData.load(str(work / "calibration-examples.npz"))
    assert back.null_queries == data.null_queries
    assert np.array_equal(back.null_x, data.null_x) and np.array_equal(back.x, data.x)
    assert np.array_equal(back.best, data.best) and list(back.query_labels) == label


def test_version_3_reads_margin_and_support_from_the_graph_of_the_first_searches(collected):
    """The graph is what the product builds (each photo's first search, links where the pair model says
    match): the Lund photos link to each other and to nothing else, so a Lund query's best result is
    supported by a second Lund photo and its margin is taken over the UKBench photos only."""
    from verify.confidence import FEATURES, Calibration

    photos, data, work = collected
    pair = Calibration.load()  # the shipped version 1 model
    ctx = with_graph_context(data, pair)
    back = CalibrationData.load(str(work / "calibration-examples.npz"))
    assert list(back.names) == list(data.names) and list(back.query_names) == [p.name for p in photos]
    m, s = FEATURES.index("log_margin"), FEATURES.index("log_support")
    label = {p.name: p.label for p in photos}
    checked = 0
    for q in range(4):  # the Lund queries
        rows = np.flatnonzero(data.query == q)
        names = list(data.names[rows])
        lund = [i for i, n in zip(rows, names) if label[n] == "lund"]
        other = [i for i, n in zip(rows, names) if label[n] != "lund"]
        best = rows[0]
        assert label[data.names[best]] == "lund"
        strong_second = [i for i in lund[1:] if data.inliers[i] >= 20]
        if strong_second:
            assert ctx.x[best, s] == pytest.approx(np.log1p(max(data.inliers[i] for i in strong_second)))
            checked += 1
        want = np.log1p(data.inliers[best]) - np.log1p(max([data.inliers[i] for i in other], default=0))
        assert ctx.x[best, m] == pytest.approx(want)
        assert ctx.x[best, m] >= data.x[best, m]  # other Lund photos no longer narrow the margin
    assert checked >= 2
    # The not-a-match searches keep their photos: no Lund photo, so nothing links to a Lund query's results.
    assert np.array_equal(ctx.null_x[:, :4], data.null_x[:, :4])


def test_threshold_is_set_on_the_not_a_match_searches(collected):
    _, data, _ = collected
    # Few wrong photos reach 5 inliers among 8 small photos: count every verified candidate.
    cal, rep = fit(data, min_inliers=0, max_false_accept_rate=0.0, version=2)
    p = null_confidences(cal, data)
    # With no false accept allowed, the threshold is the 0.01 step above every not-a-match confidence.
    assert cal.threshold == pytest.approx(max(THRESHOLD_FLOOR, math.floor(p.max() / 0.01 + 1e-9) * 0.01 + 0.01))
    assert rep["not_a_match_queries"] == data.null_queries
    assert rep["not_a_match_queries_accepting"] == 0


def _examples(rng, n_q, wrong_hi):
    """Synthetic examples: each query has a right photo and five wrong ones, their inliers and spread overlapping."""
    x, y, inl, q = [], [], [], []
    for i in range(n_q):
        n = np.r_[rng.integers(10, 80), rng.integers(5, 25, 5)]
        spread = np.r_[rng.uniform(0.05, 0.5), rng.uniform(0.02, 0.2, 5)]
        x.append(feature_matrix(n, n * 2, spread))
        y.append(np.r_[1.0, np.zeros(5)])
        inl.append(n)
        q.append(np.full(6, i))
    x, y, inl, q = map(np.concatenate, (x, y, inl, q))
    # The not-a-match searches: every query meets wrong photos, a few of them much stronger (wrong_hi).
    nn = rng.integers(5, 25, n_q)
    nn[:len(wrong_hi)] = wrong_hi
    null = dict(null_x=feature_matrix(nn, nn * 2, np.full(n_q, 0.2)), null_inliers=nn.astype(float),
                null_query=np.arange(n_q), null_queries=n_q)
    return CalibrationData(x, y, inl.astype(float), q, n_q), CalibrationData(x, y, inl.astype(float), q, n_q, **null)


def test_threshold_rule_by_hand():
    rng = np.random.default_rng(3)
    without, with_null = _examples(rng, 200, wrong_hi=[70, 65, 60])
    cal0, rep0 = fit(without, max_false_accept_rate=0.01, version=2)
    cal1, rep1 = fit(with_null, max_false_accept_rate=0.01, version=2)
    # The not-a-match photos are negative examples too: the strong ones pull the confidence of their kind down.
    assert rep1["examples_fitted"] == rep0["examples_fitted"] + 200
    # 1% of 200 queries = 2 may accept: the third-strongest not-a-match photo (60 inliers) sets the threshold.
    p = null_confidences(cal1, with_null)
    third = np.sort(p)[::-1][2]
    assert cal1.threshold == pytest.approx(max(THRESHOLD_FLOOR, math.floor(third / 0.01 + 1e-9) * 0.01 + 0.01))
    assert rep1["not_a_match_queries_accepting"] == 2
    # Version 1 fits every candidate of the first searches only (the null ones just set the threshold),
    # on inliers and spread, with the old floor of 0.5.
    v0, _ = fit(without, max_false_accept_rate=0.01, version=1)
    v1, r1 = fit(with_null, max_false_accept_rate=0.01, version=1)
    assert v0.version == v1.version == 1 and v0.coef == v1.coef and v0.intercept == v1.intercept
    assert v1.coef[2:] == (0.0, 0.0) and v1.threshold >= 0.5
    p1 = null_confidences(v1, with_null)
    assert v1.threshold == pytest.approx(max(0.5, math.floor(np.sort(p1)[::-1][2] / 0.01 + 1e-9) * 0.01 + 0.01))
    # Without not-a-match searches the wrong candidates of the first search set it, and the report says nothing of them.
    assert "not_a_match_queries" not in rep0


def test_version_4_fits_the_candidates_and_the_not_a_match_bests_over_inliers_spread_and_scale():
    """Wrong photos that reach as many inliers as right ones, but on a model that zooms 3-8x: version 4
    learns to discount the zoom; version 1, blind to it, must set its threshold higher and accepts fewer
    right photos."""
    rng = np.random.default_rng(5)
    n_q = 200
    x, y, inl, q, best = [], [], [], [], []
    for i in range(n_q):
        n = np.r_[rng.integers(12, 40), rng.integers(5, 30, 3)]
        scale = np.r_[rng.uniform(0.0, 0.5), rng.uniform(1.1, 2.1, 3)]
        x.append(feature_matrix(n, n * 3, np.full(4, 0.1), scale_change=scale))
        y.append(np.r_[1.0, 0.0, 0.0, 0.0])
        inl.append(n)
        q.append(np.full(4, i))
        best.append(np.arange(4) == np.argmax(n))
    nn = rng.integers(5, 30, n_q)
    null = dict(null_x=feature_matrix(nn, nn * 3, np.full(n_q, 0.1), scale_change=rng.uniform(1.1, 2.1, n_q)),
                null_inliers=nn.astype(float), null_query=np.arange(n_q), null_queries=n_q)
    x, y, inl, q, best = map(np.concatenate, (x, y, inl, q, best))
    data = CalibrationData(x, y, inl.astype(float), q, n_q, best=best, **null)
    v4, r4 = fit(data, max_false_accept_rate=0.01, version=4)
    v1, r1 = fit(data, max_false_accept_rate=0.01, version=1)
    assert v4.version == 4 and v1.version == 1
    # Every candidate of the first searches with >= 5 inliers, and the best of each not-a-match search.
    assert r4["examples_fitted"] == int((inl >= 5).sum()) + n_q
    coef = dict(zip(v4.features, v4.coef))
    assert coef["scale_change"] < 0 and coef["log_inliers"] > 0
    assert coef["inlier_ratio"] == coef["log_putative"] == 0.0
    # The same 1% rule: at most 2 of the 200 not-a-match searches accept.
    assert r4["not_a_match_queries_accepting"] <= 2 and r1["not_a_match_queries_accepting"] <= 2
    assert r4["right_best_accepted"] > r1["right_best_accepted"] + 20


def test_place_folds_keep_each_place_in_one_fold():
    labels = np.array(["a"] * 30 + ["b"] * 4 + ["c"] * 4 + ["d"] * 2 + ["e"] * 2 + ["f"] * 2 + ["g"] * 12)
    folds = place_folds(labels, k=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    for f in folds:
        others = np.setdiff1d(np.arange(len(labels)), f)
        assert not set(labels[f]) & set(labels[others])
    # The biggest place fills a fold alone; the rest are dealt to the smaller folds.
    assert sorted(len(f) for f in folds) == [12, 14, 30]
    with pytest.raises(ValueError, match="at least 5 places"):
        place_folds(labels[:34], k=5)


def test_cross_validation_fits_without_the_held_out_places():
    rng = np.random.default_rng(5)
    _, data = _examples(rng, 200, wrong_hi=[70, 65, 60])
    data.best = np.tile(np.r_[True, np.zeros(5, bool)], 200)  # the right photo leads each answer
    data.query_labels = np.array([f"p{i // 10}" for i in range(200)])
    cv = cross_validate(data, k=5, version=2)
    assert cv["not_a_match_queries"] == 200 and len(cv["thresholds"]) == 5
    # Every query's right photo is its best result: each is counted once, in the fold that holds its place.
    assert cv["queries_whose_best_is_right"] == 200
    # The three strong not-a-match photos (queries 0-2, place p0) raise the threshold only of the folds
    # fitted on them; the fold that holds them is measured with a threshold fitted without them, and they pass.
    held = [i for i, f in enumerate(place_folds(data.query_labels, 5)) if 0 in f][0]
    assert cv["thresholds"][held] < min(t for i, t in enumerate(cv["thresholds"]) if i != held)
    assert cv["not_a_match_queries_accepting"] >= 3
    data.query_labels = None
    with pytest.raises(ValueError, match="place of each query"):
        cross_validate(data)
