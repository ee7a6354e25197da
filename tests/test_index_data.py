"""The index on descriptors of real photos (../shared/data/landmarks): a photo
of a scene finds photos of that scene first, and Annoy at the default settings
agrees with the exact search. OpenCV SIFT, projected to 40-D, stands in for the
CNN features to keep this test fast; the index does not care where unit
vectors come from."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from delf.features import Features
from index import Index, IndexConf, SearchConf, build_index_from_features

from .conftest import need_data
from .test_index_util import unit

DIM = 40


@pytest.fixture(scope="module")
def landmark_features():
    import cv2

    root = need_data("landmarks")
    with open(root / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    by_scene: dict[str, list[str]] = {}
    for r in rows:
        by_scene.setdefault(r["scene"], []).append(r["image"])
    chosen = {s: sorted(by_scene[s])[:5] for s in ("castle", "herzjesu", "sceaux", "lund")}
    sift = cv2.SIFT_create(nfeatures=400)
    proj = np.linalg.qr(np.random.default_rng(0).standard_normal((128, DIM)))[0].astype(np.float32)
    feats, scene_of = {}, {}
    for scene, names in chosen.items():
        for name in names:
            img = cv2.imread(str(root / "images" / name), cv2.IMREAD_GRAYSCALE)
            assert img is not None, name
            s = 480 / max(img.shape)
            small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            kps, d = sift.detectAndCompute(small, None)
            d = np.sqrt(d / np.maximum(d.sum(1, keepdims=True), 1e-6))  # RootSIFT
            xy = np.array([k.pt for k in kps], np.float32) / s
            feats[name] = Features(xy, unit(d @ proj), np.ones(len(kps)), np.ones(len(kps)),
                                   (img.shape[1], img.shape[0]))
            scene_of[name] = scene
    return feats, scene_of, chosen


def test_real_photos_find_their_scene(tmp_path, landmark_features):
    feats, scene_of, chosen = landmark_features
    queries = [names[0] for names in chosen.values()]
    db = {n: f for n, f in feats.items() if n not in queries}
    conf = {"backbone": "sift-test", "pca_dim": DIM, "descriptor_dim": DIM}
    build_index_from_features(tmp_path / "lm.idx", db.items(), conf, IndexConf(n_trees=8, build_threads=1))
    with Index(tmp_path / "lm.idx") as idx:
        for q in queries:
            exact = idx.search(feats[q], SearchConf(mode="exact", top_n=4))
            annoy = idx.search(feats[q], SearchConf(mode="annoy", top_n=4))
            assert [scene_of[n] for n in exact.names[:2]] == [scene_of[q]] * 2
            assert annoy.names[:2] == exact.names[:2]
            assert len(set(annoy.names) & set(exact.names)) >= 3
