"""Putative matching (ratio test, mutual check, distance bound) and the match picture."""

from __future__ import annotations

import os

import numpy as np
import pytest

from verify.matching import MATCH_PRESETS, MatchConf, match_descriptors
from .conftest import need_data



def _unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _brute_force(d1, d2, ratio, mutual, max_distance):
    dist = np.linalg.norm(d1[:, None, :].astype(np.float64) - d2[None, :, :], axis=2)
    order = np.argsort(dist, axis=1)
    out = []
    for i in range(len(d1)):
        j = order[i, 0]
        first = dist[i, j]
        second = dist[i, order[i, 1]] if d2.shape[0] > 1 else np.inf
        if ratio is not None and not first < ratio * second:
            continue
        if max_distance is not None and not first < max_distance:
            continue
        if mutual and np.argmin(dist[:, j]) != i:
            continue
        out.append((i, j))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def test_handmade_ratio_mutual_and_distance():
    d2 = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.0, 0.1, 1]])
    d1 = _unit([
        [1, 0.05, 0],  # 0 -> 0, distinctive
        [0.05, 1, 0],  # 1 -> 1, distinctive
        [0, 0.05, 1],  # 2 -> 2 or 3: nearly tied, fails the ratio test
        [0.9, 0.05, 0],  # 3 -> 0 as well, but 0 is closer to d1[0]: not mutual
        [-1, 0, 0],  # 4 -> far from everything (distance > 0.8)
    ])
    m = match_descriptors(d1, d2, ratio=0.8, mutual=False)
    assert [tuple(p) for p in m.pairs] == [(0, 0), (1, 1), (3, 0)]  # 4 is equally far from 1, 2, 3
    m = match_descriptors(d1, d2, ratio=0.8, mutual=True)
    assert [tuple(p) for p in m.pairs] == [(0, 0), (1, 1)]
    m = match_descriptors(d1, d2, conf="delf")
    assert (4, 1) not in [tuple(p) for p in m.pairs] and (4, 0) not in [tuple(p) for p in m.pairs]
    assert np.all(m.distances < 0.8)
    # Distances and ratios are those of the brute force.
    m = match_descriptors(d1, d2, ratio=None, mutual=False)
    ref = np.sort(np.linalg.norm(d1[:, None] - d2[None], axis=2), axis=1)
    # float32 expansion |a|^2 + |b|^2 - 2ab: about 1e-4 relative on small distances.
    np.testing.assert_allclose(m.distances, ref[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.ratios, ref[:, 0] / ref[:, 1], rtol=1e-4)
    np.testing.assert_allclose(m.quality, -m.ratios)


@pytest.mark.parametrize("ratio, mutual, max_distance", [(0.9, True, None), (0.8, False, None),
                                                          (None, True, None), (None, False, 0.8),
                                                          (0.95, True, 1.0)])
def test_random_sets_match_brute_force(ratio, mutual, max_distance):
    rng = np.random.default_rng(0)
    d2 = _unit(rng.normal(size=(300, 16)))
    d1 = _unit(np.r_[d2[:150] + rng.normal(0, 0.15, (150, 16)), rng.normal(size=(100, 16))])
    m = match_descriptors(d1, d2, ratio=ratio, mutual=mutual, max_distance=max_distance, block_rows=64)
    np.testing.assert_array_equal(m.pairs, _brute_force(d1, d2, ratio, mutual, max_distance))
    assert m.pairs.dtype == np.int64 and m.distances.dtype == np.float32 and len(m) == len(m.distances)


def test_edge_cases_and_errors():
    d = _unit(np.eye(4))
    empty = np.zeros((0, 4), np.float32)
    for a, b in [(empty, d), (d, empty), (empty, empty)]:
        m = match_descriptors(a, b)
        assert m.pairs.shape == (0, 2) and len(m) == 0
    one = match_descriptors(d[:2], d[:1], ratio=0.5, mutual=True)  # single candidate: no ratio possible
    assert [tuple(p) for p in one.pairs] == [(0, 0)] and one.ratios[0] == 0.0
    twins = match_descriptors(d[:1], np.r_[d[:1], d[:1]], mutual=False, ratio=None)
    assert twins.ratios[0] == 1.0  # two equally near neighbours: maximally ambiguous
    with pytest.raises(ValueError, match="dimensions"):
        match_descriptors(d, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        match_descriptors(np.full((2, 4), np.nan), d)
    with pytest.raises(ValueError, match="shape"):
        match_descriptors(np.zeros(4), d)
    with pytest.raises(ValueError, match="unknown MatchConf key"):
        match_descriptors(d, d, ration=0.8)
    with pytest.raises(ValueError, match="ratio"):
        MatchConf(ratio=1.5)
    with pytest.raises(ValueError, match="preset"):
        match_descriptors(d, d, conf="nope")
    assert MATCH_PRESETS["delf"].max_distance == 0.8


def test_real_rootsift_matches_agree_with_ground_truth():
    """RootSIFT on graf img1 -> img2: the ratio test keeps matches the true H mostly explains."""
    cv2 = pytest.importorskip("cv2")
    folder = need_data() / "homography" / "graf"
    feats = []
    for name in ("img1.jpg", "img2.jpg"):
        gray = cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE)
        kps, desc = cv2.SIFT_create(nfeatures=800).detectAndCompute(gray, None)
        desc = np.sqrt(desc / desc.sum(axis=1, keepdims=True))
        feats.append((np.array([k.pt for k in kps]), desc))
    H = np.loadtxt(folder / "H1to2p")
    (l1, d1), (l2, d2) = feats
    strict = match_descriptors(d1, d2, ratio=0.8, mutual=True)
    loose = match_descriptors(d1, d2, ratio=None, mutual=False)
    p = np.c_[l1[strict.pairs[:, 0]], np.ones(len(strict))] @ H.T
    err = np.linalg.norm(p[:, :2] / p[:, 2:] - l2[strict.pairs[:, 1]], axis=1)
    assert len(strict) > 100
    assert np.mean(err < 5) > 0.8
    assert len(loose) == len(d1) > len(strict)


def test_draw_matches_png_round_trip(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from common.files import write_png
    from verify.draw import draw_matches, read_image

    a = np.zeros((40, 60, 3), np.uint8)
    b = np.full((50, 30, 3), 200, np.uint8)
    pts1 = np.array([[5.0, 5.0], [50.0, 30.0], [np.nan, 1.0]])
    pts2 = np.array([[10.0, 10.0], [20.0, 40.0], [1.0, 1.0]])
    canvas = draw_matches(a, b, pts1, pts2, inliers=[True, False, True], draw_outliers=True)
    assert canvas.shape == (50, 60 + 8 + 30, 3) and canvas.dtype == np.uint8
    assert canvas[5, 5].any()  # an inlier end point was drawn on the black photo
    titled = draw_matches(a, b, pts1, pts2, title="3 inliers")
    assert titled.shape[0] > canvas.shape[0]
    out = tmp_path / "sub" / "m.png"
    write_png(out, canvas)
    back = read_image(out)
    np.testing.assert_array_equal(back, canvas)
    assert not [f for f in os.listdir(out.parent) if f.startswith(".tmp-")]
    with pytest.raises(ValueError, match="same length"):
        draw_matches(a, b, pts1, pts2[:2])
    with pytest.raises(ValueError, match="inliers"):
        draw_matches(a, b, pts1, pts2, inliers=[True])
    with pytest.raises(ValueError, match="RGB"):
        draw_matches(np.zeros((4, 4, 2), np.uint8), b, pts1, pts2)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="decode"):
        read_image(tmp_path / "junk.png")
    del cv2
