"""Each Numba kernel of verify/ against a plain NumPy reference (and its own ``py_func``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verify import adaptive_trials
from verify import kernels as K


def _apply(H, pts):
    h = np.c_[pts, np.ones(len(pts))] @ H.T
    return h[:, :2] / h[:, 2:3]


def _random_homography(rng):
    H = np.eye(3)
    H[:2, :2] += rng.normal(0, 0.15, (2, 2))
    H[:2, 2] = rng.normal(0, 0.3, 2)
    H[2, :2] = rng.normal(0, 0.05, 2)
    return H


# ---------------------------------------------------------------- trial count


@pytest.mark.parametrize(
    "ratio, size, conf, expected",
    [
        # ceil(log(0.01) / log(1 - 0.5^3)) = ceil(4.60517 / 0.133531) = ceil(34.49) = 35
        (0.5, 3, 0.99, 35),
        # ceil(log(0.001) / log(1 - 0.5^4)) = ceil(6.90776 / 0.0645385) = ceil(107.03) = 108
        (0.5, 4, 0.999, 108),
        # ceil(log(0.001) / log(1 - 0.8^2)) = ceil(6.90776 / 1.02165) = ceil(6.76) = 7
        (0.8, 2, 0.999, 7),
        # ceil(log(0.05) / log(1 - 0.1^3)) = ceil(2.99573 / 0.0010005) = ceil(2994.2) = 2995
        (0.1, 3, 0.95, 2995),
    ],
)
def test_adaptive_trials_hand_computed(ratio, size, conf, expected):
    assert adaptive_trials(ratio, size, conf, 0, 100_000) == expected
    assert K.adaptive_trials.py_func(ratio, size, conf, 0, 100_000) == expected


def test_adaptive_trials_bounds_and_edges():
    assert adaptive_trials(0.5, 3, 0.99, min_trials=50, max_trials=1000) == 50  # 35 < min
    assert adaptive_trials(0.5, 3, 0.99, min_trials=0, max_trials=20) == 20  # 35 > max
    assert adaptive_trials(0.0, 3, 0.99, 0, 777) == 777  # no inliers yet: keep sampling
    assert adaptive_trials(1.0, 4, 0.999, 3, 777) == 3  # all inliers: the minimum
    assert adaptive_trials(1e-9, 4, 0.999, 0, 5000) == 5000  # underflow of w^s must not divide by 0
    for bad in [(-0.1, 3, 0.9), (1.1, 3, 0.9), (0.5, 3, 1.0), (0.5, 3, 0.0), (0.5, 0, 0.9)]:
        with pytest.raises(ValueError):
            adaptive_trials(*bad)


def test_adaptive_trials_monotone():
    prev = 10**9
    for w in np.linspace(0.05, 1.0, 40):
        n = adaptive_trials(float(w), 4, 0.999, 0, 10**9)
        assert n <= prev
        prev = n


# ---------------------------------------------------------------- random numbers


def test_rng_deterministic_and_in_range():
    a = K.rng_init(np.uint64(42))
    b = K.rng_init(np.uint64(42))
    xs = [K.rng_below(a, 7) for _ in range(2000)]
    ys = [K.rng_below(b, 7) for _ in range(2000)]
    assert xs == ys
    assert set(xs) == set(range(7))
    counts = np.bincount(xs, minlength=7)
    assert counts.min() > 2000 / 7 * 0.7  # roughly uniform
    c = K.rng_init(np.uint64(43))
    assert [K.rng_below(c, 1000) for _ in range(20)] != [K.rng_below(K.rng_init(np.uint64(42)), 1000)
                                                          for _ in range(20)]
    # Python reference of the same generator.
    st = K.rng_init.py_func(np.uint64(42))
    assert [K.rng_below.py_func(st, 7) for _ in range(50)] == xs[:50]


def test_draw_distinct():
    state = K.rng_init(np.uint64(1))
    out = np.empty(4, dtype=np.int64)
    for _ in range(200):
        K.draw_distinct(state, 0, 5, 4, out, 0)
        assert len(set(out.tolist())) == 4 and out.min() >= 0 and out.max() < 5
    out[0] = 9
    K.draw_distinct(state, 0, 4, 3, out, 1)  # keeps out[0], draws three others distinct from it
    assert out[0] == 9 and len(set(out.tolist())) == 4


def test_pair_seeds_differ():
    seeds = {int(K.pair_seed(np.uint64(5), np.uint64(i))) for i in range(100)}
    assert len(seeds) == 100


# ---------------------------------------------------------------- minimal solvers


def _split(src, dst):
    return (np.ascontiguousarray(src[:, 0]), np.ascontiguousarray(src[:, 1]),
            np.ascontiguousarray(dst[:, 0]), np.ascontiguousarray(dst[:, 1]))


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_fit_affine3(impl):
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.normal(size=(3, 2))
        A = np.eye(3)
        A[:2] = rng.normal(size=(2, 3))
        dst = _apply(A, src)
        H = np.empty((3, 3))
        f = K.fit_affine3 if impl == "jit" else K.fit_affine3.py_func
        assert f(*_split(src, dst), np.arange(3), H)
        # NumPy reference: solve [x y 1] X = [u v]
        ref = np.linalg.solve(np.c_[src, np.ones(3)], dst).T
        np.testing.assert_allclose(H[:2], ref, atol=1e-9)
        np.testing.assert_allclose(H, A, atol=1e-9)


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_fit_similarity2(impl):
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.normal(size=(2, 2))
        s, th = rng.uniform(0.3, 3), rng.uniform(-np.pi, np.pi)
        S = np.array([[s * np.cos(th), -s * np.sin(th), rng.normal()],
                      [s * np.sin(th), s * np.cos(th), rng.normal()], [0, 0, 1]])
        dst = _apply(S, src)
        H = np.empty((3, 3))
        f = K.fit_similarity2 if impl == "jit" else K.fit_similarity2.py_func
        assert f(*_split(src, dst), np.arange(2), H)
        np.testing.assert_allclose(H, S, atol=1e-9)


def _dlt_reference(src, dst):
    """Textbook DLT: the right singular vector of the 2N x 9 system."""
    rows = []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    h = np.linalg.svd(np.array(rows))[2][-1]
    return (h / h[8]).reshape(3, 3)


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_fit_homography4(impl):
    rng = np.random.default_rng(2)
    for _ in range(20):
        src = rng.uniform(-1, 1, (4, 2))
        Ht = _random_homography(rng)
        dst = _apply(Ht, src)
        H = np.empty((3, 3))
        f = K.fit_homography4 if impl == "jit" else K.fit_homography4.py_func
        assert f(*_split(src, dst), np.arange(4), H)
        np.testing.assert_allclose(H, Ht / Ht[2, 2], atol=1e-8)
        np.testing.assert_allclose(H, _dlt_reference(src, dst), atol=1e-8)


def test_fit_homography4_collinear_is_rejected():
    src = np.array([[0.0, 0], [1, 1], [2, 2], [0, 1]])
    H = np.empty((3, 3))
    assert not K.fit_homography4(*_split(src, src), np.arange(4), H)


def test_solve_inplace_matches_numpy():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(8, 8))
    b = rng.normal(size=8)
    x = b.copy()
    assert K.solve_inplace(A.copy(), x, 8)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), atol=1e-10)
    x = b.copy()
    assert K.solve_inplace.py_func(A.copy(), x, 8)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), atol=1e-10)
    assert not K.solve_inplace(np.zeros((8, 8)), b.copy(), 8)


# ---------------------------------------------------------------- least squares


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_fit_affine_lsq_matches_lstsq(impl):
    rng = np.random.default_rng(4)
    src = rng.normal(size=(40, 2))
    dst = rng.normal(size=(40, 2))
    w = rng.uniform(0, 2, 40)
    w[::5] = 0
    H = np.empty((3, 3))
    f = K.fit_affine_lsq if impl == "jit" else K.fit_affine_lsq.py_func
    assert f(*_split(src, dst), w, H)
    sw = np.sqrt(w)[:, None]
    ref = np.linalg.lstsq(np.c_[src, np.ones(40)] * sw, dst * sw, rcond=None)[0].T
    np.testing.assert_allclose(H[:2], ref, atol=1e-10)


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_fit_similarity_lsq_matches_lstsq(impl):
    rng = np.random.default_rng(5)
    src = rng.normal(size=(30, 2))
    dst = rng.normal(size=(30, 2))
    w = rng.uniform(0, 2, 30)
    H = np.empty((3, 3))
    f = K.fit_similarity_lsq if impl == "jit" else K.fit_similarity_lsq.py_func
    assert f(*_split(src, dst), w, H)
    # u = a x - b y + tx, v = b x + a y + ty: linear in (a, b, tx, ty)
    A = np.zeros((60, 4))
    A[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(30), np.zeros(30)]
    A[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(30), np.ones(30)]
    sw = np.repeat(np.sqrt(w), 2)
    a, b, tx, ty = np.linalg.lstsq(A * sw[:, None], dst.ravel() * sw, rcond=None)[0]
    np.testing.assert_allclose(H, [[a, -b, tx], [b, a, ty], [0, 0, 1]], atol=1e-10)


def test_fit_homography_lsq_matches_svd_dlt():
    rng = np.random.default_rng(6)
    src = rng.uniform(-1, 1, (50, 2))
    dst = _apply(_random_homography(rng), src) + rng.normal(0, 0.01, (50, 2))
    w = np.ones(50)
    H = np.empty((3, 3))
    assert K.fit_homography_lsq(*_split(src, dst), w, H)
    np.testing.assert_allclose(H, _dlt_reference(src, dst), atol=1e-8)
    H2 = np.empty((3, 3))
    assert K.fit_homography_lsq.py_func(*_split(src, dst), w, H2)
    np.testing.assert_allclose(H2, H, atol=1e-10)


def test_smallest_eigenvector_matches_eigh():
    rng = np.random.default_rng(7)
    for _ in range(5):
        B = rng.normal(size=(9, 9))
        M = B @ B.T
        v = np.empty(9)
        K.smallest_eigenvector(M.copy(), v)
        ref = np.linalg.eigh(M)[1][:, 0]
        assert abs(abs(v @ ref) - 1.0) < 1e-8


def test_refine_homography_reduces_geometric_error():
    rng = np.random.default_rng(8)
    Ht = _random_homography(rng)
    src = rng.uniform(-1, 1, (80, 2))
    dst = _apply(Ht, src) + rng.normal(0, 0.01, (80, 2))
    H = _dlt_reference(src, dst)
    H0 = H.copy()
    w = np.ones(80)
    assert K.refine_homography(*_split(src, dst), w, H, 5, np.empty((8, 8)), np.empty(8))

    def cost(M):
        return float(((_apply(M, src) - dst) ** 2).sum())

    assert cost(H) <= cost(H0) + 1e-15
    # At the optimum the gradient vanishes: a numeric check on each parameter.
    for k in range(8):
        for eps in (1e-6, -1e-6):
            P = H.copy()
            P.flat[k] += eps
            assert cost(P) >= cost(H) - 1e-12


# ---------------------------------------------------------------- residuals, scores, checks


@pytest.mark.parametrize("model_id", [K.AFFINE, K.HOMOGRAPHY])
def test_residuals_and_scores_match_numpy(model_id):
    rng = np.random.default_rng(9)
    H = _random_homography(rng)
    if model_id == K.AFFINE:
        H[2] = [0, 0, 1]
    src = rng.uniform(-1, 1, (64, 2))
    dst = _apply(H, src) + rng.normal(0, 0.05, (64, 2))
    ref = ((_apply(H, src) - dst) ** 2).sum(axis=1)
    out = np.empty(64)
    K.residuals_sq(model_id, H, *_split(src, dst), out)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    out2 = np.empty(64)
    K.residuals_sq.py_func(model_id, H, *_split(src, dst), out2)
    np.testing.assert_allclose(out2, ref, rtol=1e-12)
    thr2 = 0.004
    msac = np.minimum(ref, thr2).sum()
    assert K.msac_score(model_id, H, *_split(src, dst), thr2, np.inf) == pytest.approx(msac, rel=1e-12)
    assert K.msac_score.py_func(model_id, H, *_split(src, dst), thr2, np.inf) == pytest.approx(msac, rel=1e-12)
    assert K.msac_full(model_id, H, *_split(src, dst), thr2, out) == pytest.approx(msac, rel=1e-12)
    # Early exit: anything returned above the bound only has to exceed it.
    assert K.msac_score(model_id, H, *_split(src, dst), thr2, msac / 2) > msac / 2
    w = np.empty(64)
    cnt = K.count_inliers(model_id, H, *_split(src, dst), thr2, out, w, False)
    assert cnt == int((ref < thr2).sum())
    np.testing.assert_array_equal(w > 0, ref < thr2)
    K.count_inliers(model_id, H, *_split(src, dst), thr2, out, w, True)
    np.testing.assert_allclose(w, np.where(ref < thr2, (1 - ref / thr2) ** 2, 0.0), rtol=1e-12)


def test_points_behind_the_camera_are_outliers():
    H = np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0.5]])  # z <= 0 for x >= 0.5
    src = np.array([[0.0, 0.0], [1.0, 0.0]])
    out = np.empty(2)
    K.residuals_sq(K.HOMOGRAPHY, H, *_split(src, src), out)
    assert math.isfinite(out[0]) and math.isinf(out[1])


def test_sample_checks():
    idx = np.arange(4)
    tri = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1.2]])
    mirrored = tri * [-1, 1]
    line = np.array([[0.0, 0], [1, 1], [2, 2], [3, 3.0]])
    assert K.sample_ok(K.AFFINE, *_split(tri, tri), idx, False)
    assert not K.sample_ok(K.AFFINE, *_split(tri, mirrored), idx, False)
    assert K.sample_ok(K.AFFINE, *_split(tri, mirrored), idx, True)
    assert not K.sample_ok(K.AFFINE, *_split(line, tri), idx, True)
    assert K.sample_ok(K.HOMOGRAPHY, *_split(tri, tri * 2), idx, False)
    assert not K.sample_ok(K.HOMOGRAPHY, *_split(tri, mirrored), idx, False)
    assert K.sample_ok(K.HOMOGRAPHY, *_split(tri, mirrored), idx, True)
    twisted = tri[[0, 1, 3, 2]]  # a bow-tie: no homography maps a convex quad to it
    assert not K.sample_ok(K.HOMOGRAPHY, *_split(tri, twisted), idx, True)
    dup = np.array([[0.0, 0], [0, 0]])
    assert not K.sample_ok(K.SIMILARITY, *_split(dup, tri[:2]), idx[:2], False)
    assert K.sample_ok(K.SIMILARITY, *_split(tri[:2], tri[:2]), idx[:2], False)
    for f in (K.sample_ok.py_func,):
        assert not f(K.AFFINE, *_split(tri, mirrored), idx, False)


def test_model_ok_scale_and_reflection():
    A = np.diag([2.0, 2.0, 1.0])
    assert K.model_ok(K.AFFINE, A, 0.01, 100.0, False)
    assert not K.model_ok(K.AFFINE, A, 0.01, 3.9, False)  # det 4 above max_scale^2
    assert not K.model_ok(K.AFFINE, np.diag([-1.0, 1.0, 1.0]), 0.01, 100.0, False)
    assert K.model_ok(K.AFFINE, np.diag([-1.0, 1.0, 1.0]), 0.01, 100.0, True)
    assert not K.model_ok(K.HOMOGRAPHY, np.zeros((3, 3)), 0.0, 1.0, False)
    bad = np.eye(3)
    bad[0, 0] = np.nan
    assert not K.model_ok(K.AFFINE, bad, 0.0, 1e9, False)


def test_usable_and_spans_plane():
    rng = np.random.default_rng(10)
    pts = rng.normal(size=(10, 2))
    line = np.c_[np.arange(10.0), 2 * np.arange(10.0) + 1]
    same = np.ones((10, 2))
    assert K.usable(pts, pts, K.AFFINE) and K.usable(pts, pts, K.HOMOGRAPHY)
    assert not K.usable(line, pts, K.AFFINE) and not K.usable(pts, line, K.HOMOGRAPHY)
    assert K.usable(line, line, K.SIMILARITY)  # two distinct points are enough for a similarity
    assert not K.usable(same, pts, K.SIMILARITY)
    assert not K.usable(pts[:3], pts[:3], K.HOMOGRAPHY)


def test_normalisation_reference():
    rng = np.random.default_rng(11)
    pts = rng.uniform(0, 1000, (100, 2))
    cx, cy, s = K.normalisation(pts[:, 0].copy(), pts[:, 1].copy())
    c = pts.mean(axis=0)
    np.testing.assert_allclose([cx, cy], c)
    assert s == pytest.approx(np.sqrt(2) / np.linalg.norm(pts - c, axis=1).mean())


def test_grid_spread_reference():
    rng = np.random.default_rng(12)
    pts = rng.uniform(0, 640, (200, 2))
    mask = rng.random(200) < 0.3
    cells = {(int(x // 80), int(y // 80)) for x, y in pts[mask]}
    assert K.grid_spread(pts, mask, 640.0, 640.0, 8) == pytest.approx(len(cells) / 64)
    assert K.grid_spread.py_func(pts, mask, 640.0, 640.0, 8) == pytest.approx(len(cells) / 64)
    assert K.grid_spread(pts, np.zeros(200, bool), 640.0, 640.0, 8) == 0.0
    corner = np.array([[0.0, 0.0], [10.0, 10.0]])
    # Without a size the bounding box of the points is the photo: opposite corners -> 2 cells.
    assert K.grid_spread(corner, np.ones(2, bool), 0.0, 0.0, 8) == pytest.approx(2 / 64)


def test_quality_order_is_a_stable_descending_sort_up_to_1024_levels():
    rng = np.random.default_rng(13)
    q = rng.integers(0, 50, 500).astype(float)  # ties galore, fewer values than levels
    np.testing.assert_array_equal(K.quality_order(q), np.argsort(-q, kind="stable"))
    np.testing.assert_array_equal(K.quality_order.py_func(q), np.argsort(-q, kind="stable"))
    q = rng.normal(size=2000)
    order = K.quality_order(q)
    assert sorted(order.tolist()) == list(range(2000))
    assert np.all(np.diff(np.floor((q.max() - q[order]) * 1023 / np.ptp(q))) >= 0)
    np.testing.assert_array_equal(K.quality_order(np.ones(5)), np.arange(5))
    assert K.quality_order(np.zeros(0)).shape == (0,)
