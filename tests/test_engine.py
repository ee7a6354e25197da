"""The public Engine on the bundled photos of Lund: build, search (path, array,
Features), labels, match, add and remove, all through the one object scripts use."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine
from engine.demo import sample_photos
from engine.searching import SearchSettings, answer_query


@pytest.fixture(scope="module")
def lund(tmp_path_factory, small_extractor):
    photos = sample_photos()
    idx = tmp_path_factory.mktemp("engine") / "lund.idx"
    engine = Engine.build(idx, photos[:-1], extractor=small_extractor)
    yield engine, photos
    engine.close()


def test_build_and_search_a_held_out_photo(lund, small_extractor):
    engine, photos = lund
    assert len(engine.photos) == len(photos) - 1
    ans = engine.search(photos[-1], top=3)
    assert ans.match and ans.best.name == "lund_09.jpg" and len(ans.results) == 3
    assert ans.query == "lund_10.jpg" and ans.confidence >= engine.threshold
    # The same answer from the photo's pixels and from its Features: one pipeline.
    feats = small_extractor.extract(photos[-1])
    by_feats = engine.search(feats, name="q")
    by_pixels = engine.search(small_extractor.load(photos[-1]), name="q")
    ref = answer_query(engine.index, feats, "q", SearchSettings().resolved(), expand=engine.conf.expand,
                       diffuse=engine.conf.diffuse)
    for a in (by_feats, by_pixels):
        assert [(r.name, r.inliers) for r in a.results] == [(r.name, r.inliers) for r in ref.results]


def test_exclude_labels_and_unknown_place(lund, tmp_path):
    engine, photos = lund
    first = engine.search(photos[-1]).best.name
    assert engine.search(photos[-1], exclude=[first]).best.name != first
    labels = tmp_path / "labels.csv"
    labels.write_text("photo,place\n" + "".join(f"lund_{i:02d}.jpg,lund\n" for i in range(1, 10)))
    labelled = Engine.open(engine.index_dir, labels=str(labels), extractor=engine.extractor)
    ans = labelled.search(photos[-1])
    assert ans.label == "lund" and all(r.label == "lund" for r in ans.results)
    import skimage.data

    other = labelled.search(skimage.data.astronaut(), name="astronaut")
    assert not other.match and other.label is None
    labelled.close()


def test_match_two_photos(lund):
    engine, photos = lund
    pair = engine.match(photos[8], photos[9])
    assert pair.inliers > 20 and pair.confidence >= engine.threshold and pair.model.shape == (3, 3)
    p1, p2 = pair.inlier_points
    assert len(p1) == len(p2) == pair.inliers
    # An affine model maps the inliers within RANSAC's 20 px.
    proj = np.c_[p1, np.ones(len(p1))] @ pair.model.T
    assert np.median(np.linalg.norm(proj[:, :2] - p2, axis=1)) < 20


def test_add_and_remove_keep_the_index_current(lund):
    engine, photos = lund
    assert engine.add([photos[-1]]) == ["lund_10.jpg"]
    assert engine.search(photos[-1]).best.name == "lund_10.jpg"
    assert engine.remove(["lund_10.jpg"]) == ["lund_10.jpg"]
    assert "lund_10.jpg" not in engine.photos
    assert engine.search(photos[-1]).best.name != "lund_10.jpg"
    with pytest.raises(ValueError, match="no photo named"):
        engine.remove(["nonexistent.jpg"])
    # Features extracted beforehand (as `delf serve` does) are added under the given name.
    feats = engine.extractor.extract(photos[-1])
    assert engine.add([("held_out.jpg", feats)]) == ["held_out.jpg"]
    assert engine.search(feats).best.name == "held_out.jpg"
    engine.remove(["held_out.jpg"])


def test_errors_name_the_file(lund, tmp_path):
    engine, _ = lund
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        engine.search(str(tmp_path / "missing.jpg"))
    with pytest.raises(FileNotFoundError, match="no.idx"):
        Engine.open(tmp_path / "no.idx")
    with pytest.raises(ValueError, match="candidates"):
        Engine.open(engine.index_dir, candidates=0)
