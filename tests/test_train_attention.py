"""`delf train attention` and the feature-map cache, on real photos
(a handful of UKBench objects, small copies, a few epochs: fast)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.conftest import SAMPLES, need_data


@pytest.fixture(scope="module")
def handful(tmp_path_factory):
    """Six UKBench photos of three objects, with a labels CSV."""
    from common.labels import labelled_photos

    root = need_data("ukbench")
    rows = list(csv.reader(open(root / "labels.csv")))[1:]
    picked = [r for r in rows if r[1] in ("object00", "object01", "object02")]
    picked = [r for k, r in enumerate(picked) if k % 4 < 2]
    labels = tmp_path_factory.mktemp("labels") / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([["image", "object"]] + picked)
    photos = labelled_photos(str(root / "images"), str(labels))
    assert len(photos) == 6 and len({p.label for p in photos}) == 3
    return photos


def small_train_conf(**kw):
    from engine.training.attention import TrainConf
    from engine.training.data import AugmentConf

    base = dict(seed=3, epochs=6, batch_size=4, lr=1e-2, val_fraction=0.0,
                augment=AugmentConf(copies=2, min_side=128, max_side=192))
    base.update(kw)
    return TrainConf(**base)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("augcache"))


def train(photos, out, cache_dir, backbone, curve=None, **kw):
    from engine.training.attention import train_attention

    return train_attention(photos, str(out), cache_dir, small_train_conf(**kw), backbone=backbone,
                           curve=curve, progress=False, log=lambda m: None)


def test_training_lowers_the_loss_and_writes_loadable_weights(handful, cache_dir, small_extractor, tmp_path):
    from delf.attention import AttentionHead
    from delf.extractor import Extractor

    out = tmp_path / "head.npz"
    curve = tmp_path / "curve.png"
    result = train(handful, out, cache_dir, small_extractor.backbone, curve=str(curve))
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    head = AttentionHead.load(str(out))
    # By default the head sees the 112 normalised channels only.
    assert head.conv1_w.shape == (112, 512) and head.conv2_w.shape == (512, 1) and head.lognorm is None
    assert np.all(head.bn_var > 0)
    # The attention itself was trained, not only the classifier behind it.
    from engine.training.attention import _init_params

    init = _init_params(np.random.default_rng(np.random.SeedSequence([3, 1])), 112, 3)
    assert np.abs(head.conv2_w - init["conv2_w"]).max() > 1e-3
    assert np.abs(head.conv1_w - init["conv1_w"]).max() > 1e-3
    # The trained head scores a real photo through the extractor.
    ex = Extractor(small_extractor.conf.replace(scoring="attention", attention_weights=str(out)))
    feats = ex.extract(str(SAMPLES / "lund_01.jpg"))
    assert len(feats.scores) == ex.conf.max_features
    assert np.all(np.isfinite(feats.scores)) and np.all(feats.scores > 0)
    assert feats.scores.std() > 0  # not a constant: the head learnt something location-specific


def test_same_seed_same_weights_and_resume_matches(handful, cache_dir, small_extractor, tmp_path):
    from delf.attention import AttentionHead

    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    bb = small_extractor.backbone
    train(handful, a, cache_dir, bb, epochs=3)
    train(handful, b, cache_dir, bb, epochs=3)
    ha, hb = AttentionHead.load(str(a)), AttentionHead.load(str(b))
    for k in ("conv1_w", "conv1_b", "bn_mean", "bn_var", "conv2_w", "conv2_b"):
        np.testing.assert_array_equal(getattr(ha, k), getattr(hb, k))
    # A run of 2 epochs resumed to 3 ends where the straight run did.
    ckpt = str(tmp_path / "c.ckpt.npz")
    from engine.training.attention import train_attention

    train_attention(handful, str(c), cache_dir, small_train_conf(epochs=2), backbone=bb, checkpoint=ckpt,
                    progress=False, log=lambda m: None)
    resumed = train_attention(handful, str(c), cache_dir, small_train_conf(epochs=3), backbone=bb,
                              checkpoint=ckpt, progress=False, log=lambda m: None)
    assert len(resumed.history) == 3
    np.testing.assert_array_equal(AttentionHead.load(str(c)).conv2_w, ha.conv2_w)
    # Another seed gives other weights.
    d = tmp_path / "d.npz"
    train(handful, d, cache_dir, bb, epochs=1, seed=4)
    assert not np.array_equal(AttentionHead.load(str(d)).conv1_w, ha.conv1_w)


def test_labels_errors_name_the_file(tmp_path):
    from common.labels import labelled_photos

    images = need_data("ukbench", "images")
    bad = tmp_path / "labels.csv"
    bad.write_text("image,object\nno_such_photo.jpg,object00\n")
    with pytest.raises(FileNotFoundError, match="no_such_photo.jpg"):
        labelled_photos(str(images), str(bad))
    bad.write_text("ukbench00000.jpg\n")
    with pytest.raises(ValueError, match="labels.csv"):
        labelled_photos(str(images), str(bad))
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        labelled_photos(str(images), str(tmp_path / "missing.csv"))


def test_folders_as_classes():
    from common.labels import labelled_photos

    wxbs = need_data("wxbs")
    photos = labelled_photos(str(wxbs), "folders")
    assert {p.label for p in photos if p.label.endswith("kremlin")} == {"WGABS/kremlin"}
    assert len({p.label for p in photos}) == 33


def test_feature_map_cache_rebuilds_the_extractors_features(small_extractor, tmp_path):
    from delf.featio import FeatureFile
    from engine.training.fmaps import FeatureMapCache, cached_maps, features_from_cache

    ex = small_extractor
    path = str(SAMPLES / "lund_02.jpg")
    direct = ex.extract(path)
    rgb = ex.load(path)
    # Without the cache's float16 rounding the rebuild is exact.
    again = ex.features_from_maps(ex.feature_maps(rgb), (rgb.shape[1], rgb.shape[0]))
    np.testing.assert_array_equal(again.locations, direct.locations)
    np.testing.assert_array_equal(again.descriptors, direct.descriptors)
    cache = FeatureMapCache(tmp_path / "maps", ex.conf)
    cached_maps(ex, cache, path, "lund_02.jpg")
    levels, size = cache.get("lund_02.jpg")
    assert size == direct.image_size
    rebuilt = ex.features_from_maps(levels, size)
    # float16 maps: the same keypoints (up to ties), descriptors within rounding.
    same = {tuple(p) for p in direct.locations.round(1)} & {tuple(p) for p in rebuilt.locations.round(1)}
    assert len(same) >= 0.97 * len(direct.locations)
    assert np.abs(rebuilt.descriptors[:50] - direct.descriptors[:50]).max() < 0.02
    # A features file from the cache carries the extractor's conf, like delf extract's.
    out = tmp_path / "f.h5"
    report = features_from_cache([path], tmp_path / "maps", out, ex.conf, progress=False)
    assert report.extracted == ["lund_02.jpg"]
    with FeatureFile(out) as ff:
        assert ff.conf["scales"] == list(ex.conf.scales)
        np.testing.assert_allclose(ff["lund_02.jpg"].locations, rebuilt.locations)


def test_survival_labels_follow_the_true_homography(handful, cache_dir, small_extractor):
    from engine.training.data import AugmentedMaps, survival_labels

    conf = small_train_conf()
    store = AugmentedMaps(cache_dir, "lite0", None, conf.augment, conf.seed)
    bb = small_extractor.backbone
    photo = handful[0]
    maps, geo = store.get(photo, bb), store.geometry(photo)
    # A copy against itself: every cell survives where it is.
    same = survival_labels(maps[0], geo[0], maps[0], geo[0], bb.grid, 12.0)
    assert np.all(same == 1)
    # Against the other copy under the true homography, many (not all) survive;
    # with a wrong homography (the other copy's shifted by 40 px) hardly any do.
    true = survival_labels(maps[0], geo[0], maps[1], geo[1], bb.grid, 12.0)
    shifted = (np.array([[1, 0, 40], [0, 1, 0], [0, 0, 1]]) @ geo[1][0], geo[1][1], geo[1][2])
    wrong = survival_labels(maps[0], geo[0], maps[1], shifted, bb.grid, 12.0)
    rate = lambda t: np.mean(t[t >= 0] == 1)  # noqa: E731
    assert 0.1 < rate(true) < 1.0
    assert rate(wrong) < 0.5 * rate(true)


def test_homography_objective_trains_without_labels(handful, cache_dir, small_extractor, tmp_path):
    import dataclasses

    photos = [dataclasses.replace(p, label="-") for p in handful]
    result = train(photos, tmp_path / "s.npz", cache_dir, small_extractor.backbone, objective="homography", epochs=4)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0], losses


def _auc(scores, targets):
    s, y = scores[targets >= 0], targets[targets >= 0]
    ranks = np.argsort(np.argsort(s)) + 1
    npos, nneg = int((y == 1).sum()), int((y == 0).sum())
    return (ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def test_shipped_head_predicts_which_cells_survive_a_warp(small_extractor):
    """The shipped head (self-supervised, README) on photos it never saw:
    cells it scores high survive a random warp and colour change more often
    than those it scores low, better than the feature norm does."""
    import skimage.data

    from delf.attention import AttentionHead, default_head_path
    from delf.extractor import Extractor
    from engine.training.data import AugmentConf, augment, survival_labels

    head = AttentionHead.load(default_head_path("lite0"))
    bb = small_extractor.backbone
    conf = AugmentConf(min_side=320, max_side=480)
    head_auc, norm_auc = [], []
    for name in ("astronaut", "chelsea", "coffee"):
        rgb = getattr(skimage.data, name)()
        rng = np.random.default_rng(0)
        (a, ha), (b, hb) = augment(rgb, rng, conf), augment(rgb, rng, conf)
        ma, mb = bb(a), bb(b)
        y = survival_labels(ma, (ha, a.shape[1], a.shape[0]), mb, (hb, b.shape[1], b.shape[0]), bb.grid, 12.0)
        head_auc.append(_auc(head(ma).ravel(), y))
        norm_auc.append(_auc(np.linalg.norm(ma, axis=2).ravel(), y))
    assert min(head_auc) > 0.6, head_auc
    assert np.mean(head_auc) > np.mean(norm_auc) + 0.03, (head_auc, norm_auc)
    # --scoring attention without --attention-weights uses the shipped head.
    ex = Extractor(small_extractor.conf.replace(scoring="attention"))
    f = ex.extract(skimage.data.coffee())
    assert np.all(f.scores > 0) and ex.resolved_conf()["attention_sha256"]


def test_head_without_norm_input_scores_direction_only(handful, cache_dir, small_extractor, tmp_path):
    import skimage.data

    from delf.attention import AttentionHead

    fmap = small_extractor.backbone(skimage.data.coffee()[:160, :160])
    heads = {}
    for norm_input in (False, True):
        out = tmp_path / f"{norm_input}.npz"
        train(handful, out, cache_dir, small_extractor.backbone, epochs=1, norm_input=norm_input)
        heads[norm_input] = AttentionHead.load(str(out))
    assert heads[False].lognorm is None and heads[False].conv1_w.shape == (112, 512)
    # With norm_input: one more input row, the standardised log norm, and its statistics stored.
    assert heads[True].conv1_w.shape == (113, 512) and heads[True].in_channels == 112
    assert heads[True].lognorm[1] > 0
    # Scaling every cell leaves a direction-only head's scores unchanged...
    np.testing.assert_allclose(heads[False](fmap * 3.0), heads[False](fmap), rtol=1e-4, atol=1e-5)
    # ...while a head that sees the norm changes them.
    assert np.abs(heads[True](fmap * 3.0) - heads[True](fmap)).max() > 1e-3


@pytest.fixture(scope="module")
def scenes():
    """Three photos of the Strecha castle courtyard (its fountain), two of the Herz-Jesu church."""
    from common.labels import labelled_photos

    root = need_data("landmarks")
    photos = labelled_photos(str(root / "images"), str(root / "labels.csv"))
    pick = [p for p in photos if p.label == "castle"][:3] + [p for p in photos if p.label == "herzjesu"][:2]
    assert len(pick) == 5
    return pick


def test_inlier_evidence_follows_the_true_geometry(small_extractor):
    """A photo and a warped copy of it (known homography) verify as a pair:
    the cells counted as seen are those the true homography keeps inside the
    copy, and the inlier cells sit where it says; a photo of another scene
    only adds false matches."""
    from engine.training.data import AugmentConf, augment
    from engine.training.inliers import PairConf, gather_evidence, photo_cells

    ex = small_extractor
    rgb = ex.load(str(SAMPLES / "lund_01.jpg"))
    copy, h = augment(rgb, np.random.default_rng(5), AugmentConf(min_side=300, max_side=320, min_area=0.5))
    other = ex.load(str(need_data("landmarks", "images") / "strecha_fountain-P11_0000.jpg"))
    conf = PairConf(cells=400)
    cells = []
    for k, img in enumerate((rgb, copy, other)):
        cells.append(photo_cells(ex, ex.feature_maps(img), (img.shape[1], img.shape[0]), conf,
                                 np.random.default_rng(k)))
    ev, stats = gather_evidence(cells, [(0, 1)], [(0, 2), (1, 2)], conf)
    assert stats["verified_pairs"] == 1 and stats["false_matches"] > 0
    a = cells[0]
    q = np.c_[a.locations, np.ones(len(a.locations))] @ h.T
    q = q[:, :2] / q[:, 2:3]
    inside = (q[:, 0] >= 0) & (q[:, 0] < copy.shape[1]) & (q[:, 1] >= 0) & (q[:, 1] < copy.shape[0])
    seen = ev.seen[0] > 0
    assert np.mean(seen == inside) > 0.9, (seen.mean(), inside.mean())
    # Inlier cells land inside the copy under the true homography (up to the
    # 20 px RANSAC threshold: the copy's border reflects the photo).
    inl = np.flatnonzero(ev.inliers[0] > 0)
    assert len(inl) >= conf.min_inliers
    w, h = copy.shape[1], copy.shape[0]
    near = (q[:, 0] > -20) & (q[:, 0] < w + 20) & (q[:, 1] > -20) & (q[:, 1] < h + 20)
    assert np.all(near[inl]) and np.mean(inside[inl]) > 0.9
    t = ev.targets(0)
    assert np.all((t == -1) | ((t >= 0) & (t <= 1)))
    assert np.all(t[inl] > 0) and np.mean(t[seen & (ev.inliers[0] == 0)] == 0) == 1.0
    # The other scene's photo has only false matches: every target it has is 0.
    t2 = ev.targets(2)
    assert np.any(t2 == 0) and np.all(t2 <= 0)


def test_inliers_objective_trains_and_is_deterministic(scenes, small_extractor, small_conf, tmp_path):
    from delf.attention import AttentionHead
    from engine.training.attention import train_attention
    from engine.training.inliers import PairConf

    conf = small_train_conf(objective="inliers", epochs=5, batch_size=2, norm_input=True,
                            pairs=PairConf(cells=500, min_inliers=8))
    runs = []
    for k in range(2):
        out = tmp_path / f"i{k}.npz"
        logs = []
        result = train_attention(scenes, str(out), str(tmp_path / "maps"), conf, backbone=small_extractor.backbone,
                                 progress=False, log=logs.append, pyramid=small_conf)
        runs.append(AttentionHead.load(str(out)))
        losses = [r["train_loss"] for r in result.history]
        assert losses[-1] < losses[0], losses
        assert any("same-label pairs verified" in m and not m.startswith("inlier targets: 0 of") for m in logs), logs
    np.testing.assert_array_equal(runs[0].conv1_w, runs[1].conv1_w)
    np.testing.assert_array_equal(runs[0].conv2_w, runs[1].conv2_w)
    assert runs[0].lognorm is not None


def test_cli_trains_an_inliers_head(scenes, tmp_path, capsys):
    """`delf train attention --objective inliers` end to end on four real
    photos of two places (the default pyramid, few cells, two epochs)."""
    from delf.attention import AttentionHead
    from tools.cli import main

    root = need_data("landmarks")
    labels = tmp_path / "labels.csv"
    picked = scenes[:2] + scenes[3:5]
    labels.write_text("image,scene\n" + "".join(f"{p.name},{p.label}\n" for p in picked))
    out = tmp_path / "head.npz"
    args = ["train", "attention", "--objective", "inliers", "--images", str(root / "images"), "--labels",
            str(labels), "--out", str(out), "--epochs", "2", "--cells", "600", "--partners", "1",
            "--distractors", "1", "--val-fraction", "0", "--norm-input", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "verified inliers of same-label pairs" in printed and "accuracy" not in printed
    head = AttentionHead.load(str(out))
    assert head.in_channels == 112 and head.lognorm is not None
    assert (tmp_path / "head.png").read_bytes()[:4] == b"\x89PNG"
    assert main(args[:-1] + ["--cells", "0", "--quiet"]) != 0
    assert "--cells must be >= 1" in capsys.readouterr().err


def test_cells_are_every_keypoint_the_extractor_can_keep(small_extractor):
    """cells_from_maps gives every cell with the location, raw vector and
    scale that features_from_maps gives the cells it keeps."""
    ex = small_extractor.with_pyramid()
    ex.conf = ex.conf.replace(max_features=100_000)
    rgb = ex.load(str(SAMPLES / "lund_03.jpg"))
    levels = ex.feature_maps(rgb)
    size = (rgb.shape[1], rgb.shape[0])
    raw, locs, scales = ex.cells_from_maps(levels, size)
    assert len(raw) == sum(m.shape[0] * m.shape[1] for *_, m in levels)
    feats = ex.features_from_maps(levels, size)
    assert len(feats.locations) == len(locs)
    order = np.lexsort((locs[:, 1], locs[:, 0], scales))
    forder = np.lexsort((feats.locations[:, 1], feats.locations[:, 0], feats.scales))
    np.testing.assert_allclose(locs[order], feats.locations[forder], atol=1e-3)
    np.testing.assert_allclose(ex.describe(raw[order]), feats.descriptors[forder], atol=1e-5)
