"""The extractor on real photos: selection, keypoint mapping, descriptors, scoring, PCA."""

import numpy as np
import pytest

from delf.conf import ExtractorConf
from delf.extractor import Extractor, level_sizes
from delf.image import ImageError
from delf.pca import PCA

from .conftest import SAMPLES, need_data

PHOTO = SAMPLES / "lund_01.jpg"


@pytest.fixture(scope="module")
def feats(small_extractor):
    return small_extractor.extract(PHOTO)


def test_features_shape_and_norms(feats, small_conf):
    assert len(feats) == small_conf.max_features
    assert feats.descriptors.shape == (small_conf.max_features, 40)
    np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-5)
    assert feats.image_size == (640, 480)
    # Keypoints in original pixels, inside the photo, spread over it.
    x, y = feats.locations.T
    assert x.min() >= 0 and x.max() <= 639 and y.min() >= 0 and y.max() <= 479
    assert x.max() - x.min() > 320 and y.max() - y.min() > 240
    # Scales are relative to the original photo (640 px, limited to 320 first).
    np.testing.assert_allclose(np.unique(feats.scales), [0.5 * s for s in small_conf.scales], rtol=1e-6)


def test_selection_is_the_global_top_by_score(small_extractor, small_conf):
    """Selecting from all locations of all levels by hand gives the same set."""
    from delf.image import load_image

    rgb = load_image(PHOTO)
    all_scores = []
    for _, level in small_extractor.pyramid(rgb):
        all_scores.append(np.linalg.norm(small_extractor.backbone(level), axis=2).ravel())
    all_scores = np.sort(np.concatenate(all_scores))[::-1]
    got = small_extractor.extract(rgb)
    np.testing.assert_allclose(got.scores, all_scores[: small_conf.max_features], rtol=1e-5)
    assert (np.diff(got.scores) <= 0).all()  # sorted, best first


def test_abs_threshold_and_fewer_features(small_conf):
    ex = Extractor(small_conf.replace(abs_threshold=1e9))
    f = ex.extract(PHOTO)
    assert len(f) == 0 and f.descriptors.shape == (0, 40)
    ex = Extractor(small_conf.replace(max_features=50))
    f = ex.extract(PHOTO)
    assert len(f) == 50


def test_keypoints_follow_the_photo_when_it_is_resized(small_extractor):
    """The same photo at half size gives keypoints at the same original places:
    a scaled copy (x2) matched by descriptor lands near the original keypoint."""
    from delf.image import load_image
    import cv2

    rgb = load_image(PHOTO)
    a = small_extractor.extract(rgb)
    small = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)
    b = small_extractor.extract(small)
    assert b.image_size == (320, 240)
    sim = a.descriptors @ b.descriptors.T
    i, j = np.nonzero((sim == sim.max(axis=1, keepdims=True)) & (sim == sim.max(axis=0, keepdims=True)))
    err = np.linalg.norm(a.locations[i] - 2 * b.locations[j] - 0.5, axis=1)
    assert np.median(err) < 8, np.median(err)


def test_deterministic_and_random_scoring(small_conf, feats, small_extractor):
    again = small_extractor.extract(PHOTO)
    np.testing.assert_array_equal(again.locations, feats.locations)
    np.testing.assert_array_equal(again.descriptors, feats.descriptors)
    rnd = Extractor(small_conf.replace(scoring="random")).extract(PHOTO)
    assert len(rnd) == len(feats)
    assert not np.array_equal(np.sort(rnd.scores), np.sort(feats.scores))
    overlap = len({tuple(p) for p in rnd.locations.round(1)} & {tuple(p) for p in feats.locations.round(1)})
    assert overlap < 0.8 * len(feats)


def test_attention_scoring_uses_the_head(tmp_path, small_conf):
    from delf.attention import AttentionHead

    rng = np.random.default_rng(1)
    head = AttentionHead(
        rng.normal(size=(112, 512)).astype(np.float32) * 0.1, np.zeros(512, np.float32),
        np.ones(512, np.float32), np.zeros(512, np.float32), np.zeros(512, np.float32),
        np.ones(512, np.float32), rng.normal(size=(512, 1)).astype(np.float32) * 0.1, np.zeros(1, np.float32),
    )
    path = str(tmp_path / "head.npz")
    head.save(path)
    ex = Extractor(small_conf.replace(scoring="attention", attention_weights=path))
    f = ex.extract(PHOTO)
    assert (f.scores > 0).all()  # softplus
    # The scores are the head's output at the selected cells.
    from delf.image import load_image

    rgb = load_image(PHOTO)
    best = max(AttentionHead.load(path)(ex.backbone(level)).max() for _, level in ex.pyramid(rgb))
    assert f.scores[0] == pytest.approx(best, rel=1e-5)
    with pytest.raises(FileNotFoundError, match="delf train attention"):
        Extractor(small_conf.replace(scoring="attention", attention_weights=str(tmp_path / "none.npz")))


def test_array_inputs(small_extractor):
    from delf.image import load_image

    rgb = load_image(PHOTO)
    gray = rgb.mean(axis=2).astype(np.uint8)
    assert len(small_extractor.extract(gray)) > 0
    as_float = small_extractor.extract(rgb.astype(np.float32) / 255.0)
    np.testing.assert_allclose(as_float.scores, small_extractor.extract(rgb).scores, rtol=1e-4)
    with pytest.raises(ImageError, match="float images"):
        small_extractor.extract(rgb.astype(np.float32))
    with pytest.raises(ImageError, match="too small"):
        small_extractor.extract(rgb[:10, :10])


def test_pyramid_levels_follow_the_conf():
    conf = ExtractorConf(max_image_size=1024)
    levels = level_sizes(2048, 1536, conf)
    assert [round(s, 4) for s, _, _ in levels] == [round(s / 2, 4) for s in conf.scales]
    assert levels[4][1:] == (1024, 768)
    # Levels too small for a feature map are dropped.
    assert [s for s, _, _ in level_sizes(60, 48, conf)] == list(conf.scales[1:])  # 0.25 -> 15x12 px


def test_pca_round_trip_and_projection(tmp_path):
    rng = np.random.default_rng(0)
    # Data with a clear 5-D structure in 112-D.
    basis = np.linalg.qr(rng.normal(size=(112, 5)))[0].T
    x = rng.normal(size=(2000, 5)) * [10, 5, 3, 2, 1] @ basis + rng.normal(size=(2000, 112)) * 0.01
    pca = PCA.fit(x, dim=8)
    assert pca.components.shape == (8, 112)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(pca.variances[:5], np.array([100, 25, 9, 4, 1]), rtol=0.15)
    path = str(tmp_path / "pca.npz")
    pca.save(path)
    back = PCA.load(path)
    np.testing.assert_array_equal(back.components, pca.components)
    y = back.apply(x, 5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    # Five dims keep the geometry: cosine similarities match those of the centred data.
    xc = x - x.mean(axis=0)
    xc /= np.linalg.norm(xc, axis=1, keepdims=True)
    np.testing.assert_allclose(y[:50] @ y[:50].T, xc[:50] @ xc[:50].T, atol=0.01)
    with pytest.raises(ValueError, match="components"):
        back.apply(x, 9)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.npz"):
        PCA.load(str(tmp_path / "bad.npz"))


def test_shipped_pca_was_fitted_on_lite0_descriptors():
    from delf.extractor import default_pca_path

    pca = PCA.load(default_pca_path("lite0"))
    assert pca.input_dim == 112 and pca.max_dim == 112  # all of Lite0's 112 dimensions
    assert (np.diff(pca.variances) <= 1e-7).all()


def test_matching_the_same_scene_beats_other_scenes(small_extractor):
    """Mutual nearest neighbours between two views of Lund cathedral outnumber
    those between Lund and an unrelated landmark (the point of the features)."""
    other = need_data("landmarks", "images") / "berlin_01.jpg"
    a, b, c = (small_extractor.extract(p) for p in (SAMPLES / "lund_01.jpg", SAMPLES / "lund_02.jpg", other))

    def mutual(f, g):
        s = f.descriptors @ g.descriptors.T
        return int(((s == s.max(axis=1, keepdims=True)) & (s == s.max(axis=0, keepdims=True)) & (s > 0.8)).sum())

    assert mutual(a, b) > 1.5 * mutual(a, c)
