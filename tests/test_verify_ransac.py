"""verify.ransac / ransac_many: exact recovery, determinism, bad input, spread, batch == single."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

import verify
from verify import PRESETS, RansacConf, Verification, pair_seed, ransac, ransac_many

MODELS = {
    "affine": np.array([[1.1, 0.2, 30.0], [-0.1, 0.9, -20.0], [0.0, 0.0, 1.0]]),
    "similarity": np.array([[0.9, -0.3, 10.0], [0.3, 0.9, 5.0], [0.0, 0.0, 1.0]]),
    "homography": np.array([[1.1, 0.2, 30.0], [-0.1, 0.9, -20.0], [1e-4, -2e-4, 1.0]]),
}


def _apply(H, pts):
    h = np.c_[pts, np.ones(len(pts))] @ H.T
    return h[:, :2] / h[:, 2:3]


def _planted(model, n=300, outlier_fraction=0.4, noise=0.0, seed=0):
    """Correspondences of a known model with outliers at known rows."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 1000, (n, 2))
    dst = _apply(MODELS[model], src) + rng.normal(0, noise, (n, 2)) * (noise > 0)
    out = rng.random(n) < outlier_fraction
    dst[out] = rng.uniform(0, 1000, (int(out.sum()), 2))
    # A random outlier may land on the model by chance; those are inliers.
    out &= np.linalg.norm(dst - _apply(MODELS[model], src), axis=1) > 5.0
    return src, dst, out


@pytest.mark.parametrize("model", list(MODELS))
def test_exact_recovery_with_planted_outliers(model):
    src, dst, out = _planted(model)
    v = ransac(src, dst, model=model, residual_threshold=2.0, seed=1)
    assert isinstance(v, Verification) and v.model_type == model
    np.testing.assert_allclose(v.model, MODELS[model], atol=1e-8)
    np.testing.assert_array_equal(v.inliers, ~out)
    assert v.num_inliers == int((~out).sum())
    assert v.inliers.dtype == bool and v.inliers.shape == (len(src),)
    assert 0 < v.trials <= RansacConf().max_trials
    np.testing.assert_allclose(v.transform(src[~out]), dst[~out], atol=1e-6)


@pytest.mark.parametrize("model", list(MODELS))
def test_recovery_with_noise_and_quality(model):
    src, dst, out = _planted(model, n=400, outlier_fraction=0.6, noise=0.5, seed=3)
    # Quality correlated with correctness, as a descriptor ratio would be.
    quality = np.where(out, 0.0, 1.0) + np.random.default_rng(0).random(len(src))
    v = ransac(src, dst, model=model, residual_threshold=3.0, seed=0, quality=quality)
    assert v.num_inliers >= 0.95 * (~out).sum()
    assert not (v.inliers & out).any()
    np.testing.assert_allclose(v.transform(src[~out]), _apply(MODELS[model], src[~out]), atol=1.0)


def test_prosac_needs_fewer_trials_with_good_quality():
    src, dst, out = _planted("homography", n=500, outlier_fraction=0.85, seed=4)
    quality = (~out).astype(float)
    plain = ransac(src, dst, model="homography", residual_threshold=2.0, seed=0)
    sorted_ = ransac(src, dst, model="homography", residual_threshold=2.0, seed=0, quality=quality)
    assert sorted_.num_inliers == plain.num_inliers == int((~out).sum())
    assert sorted_.trials < plain.trials
    ignored = ransac(src, dst, model="homography", residual_threshold=2.0, seed=0, quality=quality, prosac=False)
    assert ignored.trials == plain.trials


def test_deterministic_for_a_seed():
    src, dst, _ = _planted("homography", n=200, outlier_fraction=0.7, noise=1.0, seed=5)
    a = ransac(src, dst, model="homography", residual_threshold=3.0, seed=123)
    b = ransac(src, dst, model="homography", residual_threshold=3.0, seed=123)
    np.testing.assert_array_equal(a.model, b.model)
    np.testing.assert_array_equal(a.inliers, b.inliers)
    assert a.trials == b.trials
    # The seed does drive the sampling: a few raw samples differ from seed to seed.
    raw = {ransac(src, dst, model="homography", residual_threshold=3.0, seed=s, min_trials=3, max_trials=3,
                  local_optimization=0, final_refit=0).num_inliers for s in range(8)}
    assert len(raw) > 1


def test_adaptive_trials_stop_early_and_respect_bounds():
    src, dst, _ = _planted("affine", outlier_fraction=0.0)
    v = ransac(src, dst, residual_threshold=1.0, min_trials=25)
    assert v.trials == 25  # all inliers: stop at the minimum
    src, dst, _ = _planted("affine", n=100, outlier_fraction=0.95, seed=6)
    v = ransac(src, dst, residual_threshold=1.0, max_trials=300)
    assert v.trials == 300


def test_reflection_rejected_by_default():
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 100, (50, 2))
    dst = src * [-1.0, 1.0] + [200.0, 0.0]
    assert not ransac(src, dst, model="affine", residual_threshold=1.0)
    assert not ransac(src, dst, model="homography", residual_threshold=1.0)
    v = ransac(src, dst, model="affine", residual_threshold=1.0, allow_reflection=True)
    np.testing.assert_allclose(v.model, [[-1, 0, 200], [0, 1, 0], [0, 0, 1]], atol=1e-9)
    v = ransac(src, dst, model="homography", residual_threshold=1.0, allow_reflection=True)
    assert v.num_inliers == 50


def test_scale_bounds():
    rng = np.random.default_rng(8)
    src = rng.uniform(0, 100, (50, 2))
    dst = src * 20.0
    assert not ransac(src, dst, model="similarity", residual_threshold=1.0)  # zoom 20 > max_scale 10
    assert ransac(src, dst, model="similarity", residual_threshold=1.0, max_scale=25.0).num_inliers == 50
    assert not ransac(src, dst / 400.0, model="affine", residual_threshold=0.01)  # zoom 0.05 < min_scale


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("model, n", [("affine", 2), ("similarity", 1), ("homography", 3), ("affine", 0)])
def test_too_few_points_give_an_empty_verification(model, n):
    src = np.arange(2 * n, dtype=float).reshape(n, 2) * [1, 3]
    v = ransac(src, src, model=model)
    assert v.model is None and not v and v.num_inliers == 0 and v.trials == 0
    assert v.inliers.shape == (n,) and not v.inliers.any() and v.spread == 0.0


def test_nan_inf_and_shapes_raise():
    good = np.random.default_rng(0).uniform(0, 10, (10, 2))
    for bad in (np.nan, np.inf, -np.inf):
        x = good.copy()
        x[3, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            ransac(x, good)
        with pytest.raises(ValueError, match="NaN or infinite"):
            ransac(good, x)
    with pytest.raises(ValueError, match="same length"):
        ransac(good, good[:9])
    for shape in [(10,), (10, 3), (2, 10, 2)]:
        with pytest.raises(ValueError, match="shape"):
            ransac(np.zeros(shape), good)
    with pytest.raises(ValueError):
        ransac([["a", "b"]] * 10, good)
    with pytest.raises(ValueError, match="quality"):
        ransac(good, good, quality=np.ones(9))
    with pytest.raises(ValueError, match="quality"):
        ransac(good, good, quality=np.full(10, np.nan))
    with pytest.raises(ValueError, match="seed"):
        ransac(good, good, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        ransac(good, good, seed=1.5)
    with pytest.raises(ValueError, match="src_size"):
        ransac(good, good, src_size=(0, 10))


def test_duplicate_and_collinear_points():
    line = np.c_[np.arange(20.0), 3 * np.arange(20.0)]
    for model in ("affine", "homography"):
        v = ransac(line, line, model=model)
        assert v.model is None and v.inliers.shape == (20,)
    # A similarity is well defined on collinear points.
    v = ransac(line, line * 2, model="similarity", residual_threshold=0.5)
    assert v.num_inliers == 20
    same = np.ones((15, 2))
    for model in verify.MODELS:
        assert ransac(same, same, model=model).model is None
    # Only three distinct points among many duplicates: no homography, and no hang.
    pts = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 30, axis=0)
    v = ransac(pts, pts + 5, model="homography", max_trials=5000)
    assert v.model is None and v.trials == 5000
    # Duplicated rows of an otherwise good set do not get in the way.
    src, dst, out = _planted("affine", n=100, outlier_fraction=0.3)
    v = ransac(np.r_[src, src], np.r_[dst, dst], residual_threshold=1.0)
    np.testing.assert_allclose(v.model, MODELS["affine"], atol=1e-8)
    assert v.num_inliers == 2 * int((~out).sum())


def test_integer_and_float32_input():
    src, dst, _ = _planted("affine", outlier_fraction=0.0)
    v = ransac(src.astype(np.float32), dst.astype(np.float32), residual_threshold=1.0)
    np.testing.assert_allclose(v.model, MODELS["affine"], atol=1e-3)
    v = ransac(np.round(src).astype(int), np.round(src).astype(int) + 3, residual_threshold=0.5)
    np.testing.assert_allclose(v.model, [[1, 0, 3], [0, 1, 3], [0, 0, 1]], atol=1e-9)


# ---------------------------------------------------------------- conf


def test_conf_defaults_presets_and_unknown_keys():
    c = RansacConf()
    assert (c.model, c.residual_threshold, c.confidence) == ("affine", 20.0, 0.999)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.model = "homography"
    with pytest.raises(ValueError, match="unknown RansacConf key"):
        RansacConf.from_dict({"modle": "affine"})
    with pytest.raises(ValueError, match="unknown RansacConf key"):
        ransac(np.zeros((5, 2)), np.zeros((5, 2)), max_trails=10)
    with pytest.raises(ValueError, match="model"):
        RansacConf(model="projective")
    for bad in ({"residual_threshold": 0}, {"residual_threshold": float("nan")}, {"confidence": 1.0},
                {"min_trials": 5, "max_trials": 4}, {"max_trials": 0}, {"min_scale": 2.0, "max_scale": 1.0},
                {"grid": 0}, {"prosac": "yes"}, {"local_optimization": -1}):
        with pytest.raises(ValueError):
            RansacConf(**bad)
    assert RansacConf.from_dict(c.to_dict()) == c
    assert PRESETS["homography"].model == "homography"
    src, dst, _ = _planted("homography", n=100, outlier_fraction=0.2)
    v = ransac(src, dst, conf="homography")
    np.testing.assert_allclose(v.model, MODELS["homography"], atol=1e-8)
    v2 = ransac(src, dst, conf={"model": "homography", "residual_threshold": 3.0})
    np.testing.assert_array_equal(v.model, v2.model)
    with pytest.raises(ValueError, match="preset"):
        ransac(src, dst, conf="nope")


# ---------------------------------------------------------------- spread


def test_spread_with_and_without_image_sizes():
    rng = np.random.default_rng(9)
    src = rng.uniform(0, 100, (200, 2))  # the top-left tenth of a 1000 x 1000 photo
    dst = src + 450.0
    v = ransac(src, dst, model="similarity", residual_threshold=1.0, src_size=(1000, 1000),
               dst_size=(1000, 1000))
    assert v.spread_src == pytest.approx(1 / 64)  # one cell of 125 px
    assert v.spread_dst == pytest.approx(4 / 64)  # 450..550 straddles cells 3 and 4 on each axis
    assert v.spread == pytest.approx(1 / 64)
    v = ransac(src, dst, model="similarity", residual_threshold=1.0)
    assert v.spread > 0.9  # without sizes the bounding box of the matches is the photo
    assert verify.grid_spread(src, None, (100, 100), grid=2) == 1.0
    assert verify.grid_spread(src, np.zeros(200, bool)) == 0.0


# ---------------------------------------------------------------- batch


def _batch_pairs():
    pairs = []
    for i, (model, frac) in enumerate([("affine", 0.3), ("affine", 0.7), ("affine", 0.0), ("affine", 0.5)]):
        src, dst, _ = _planted(model, n=80 + 40 * i, outlier_fraction=frac, noise=0.5, seed=10 + i)
        pairs.append((src, dst))
    pairs.append((np.zeros((2, 2)), np.zeros((2, 2))))  # too few points
    line = np.c_[np.arange(9.0), np.arange(9.0)]
    pairs.append((line, line))  # degenerate
    return pairs


def test_batch_equals_single():
    pairs = _batch_pairs()
    rng = np.random.default_rng(0)
    quality = [rng.random(len(s)) for s, _ in pairs]
    sizes = [(1000, 1000)] * len(pairs)
    many = ransac_many([s for s, _ in pairs], [d for _, d in pairs], residual_threshold=2.0, seed=77,
                       quality=quality, dst_size=sizes)
    assert len(many) == len(pairs)
    for i, ((s, d), v) in enumerate(zip(pairs, many)):
        one = ransac(s, d, residual_threshold=2.0, seed=pair_seed(77, i), quality=quality[i], dst_size=sizes[i])
        assert (v.model is None) == (one.model is None)
        if one.model is not None:
            np.testing.assert_array_equal(v.model, one.model)
        np.testing.assert_array_equal(v.inliers, one.inliers)
        assert (v.num_inliers, v.trials, v.spread_src, v.spread_dst) == \
               (one.num_inliers, one.trials, one.spread_src, one.spread_dst)
    assert many[4].model is None and many[5].model is None
    assert many[4].inliers.shape == (2,) and many[5].inliers.shape == (9,)


def test_batch_concatenated_layout_and_determinism():
    pairs = _batch_pairs()[:4]
    src = np.concatenate([s for s, _ in pairs])
    dst = np.concatenate([d for _, d in pairs])
    offsets = np.cumsum([0] + [len(s) for s, _ in pairs])
    a = ransac_many(src, dst, offsets, residual_threshold=2.0, seed=5)
    b = ransac_many([s for s, _ in pairs], [d for _, d in pairs], residual_threshold=2.0, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.model, y.model)
        np.testing.assert_array_equal(x.inliers, y.inliers)
    assert ransac_many([], [], seed=1) == []
    with pytest.raises(ValueError, match="offsets"):
        ransac_many(src, dst, offsets[::-1])
    with pytest.raises(ValueError, match="offsets"):
        ransac_many(src, dst, offsets[:-1])
    with pytest.raises(ValueError, match="pair 1"):
        ransac_many([src[:10], src[:10]], [dst[:10], dst[:9]])
    with pytest.raises(ValueError, match="sequences"):
        ransac_many(src, dst)


def test_verify_does_not_import_the_extractor_or_index():
    import subprocess

    code = ("import sys, numpy as np, verify, verify.draw; "
            "verify.ransac(np.random.rand(20, 2), np.random.rand(20, 2)); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('delf', 'index', 'tensorflow', 'tools')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
