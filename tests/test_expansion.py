"""Spatially verified query expansion on real photos (the bundled walk through Lund):
what the first look misses is found through a confident match, never from an
unconfident one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import Engine
from engine.demo import sample_photos
from engine.expansion import expanded_features, expansion_sources


@pytest.fixture(scope="module")
def lund(tmp_path_factory, small_extractor):
    photos = sample_photos()
    idx = tmp_path_factory.mktemp("expansion") / "lund.idx"
    Engine.build(idx, photos[:-1], extractor=small_extractor).close()
    # Two candidates per search: the first look verifies only the two nearest photos of the walk.
    # Expansion alone: diffusion (tests/test_diffusion.py) would bring the same photos through the graph.
    engine = Engine.open(idx, candidates=2, extractor=small_extractor, diffuse=0)
    yield engine, photos
    engine.close()


def test_a_positive_beyond_the_candidates_is_found_through_a_confident_match(lund):
    engine, photos = lund
    plain = engine.search(photos[-1], expand=0)
    expanded = engine.search(photos[-1], expand=2)
    first = [r.name for r in plain.results]
    assert first == ["lund_09.jpg", "lund_08.jpg"] and plain.expanded_from == []
    assert expanded.expanded_from == first
    # The first round's confident results keep their places...
    assert [r.name for r in expanded.results[:2]] == first
    # ...and photos farther along the walk, not even candidates of the first look, are verified and
    # confidently matched through them.
    new = [r for r in expanded.results if r.name not in first]
    assert new and all(r.verified for r in new)
    assert any(r.confidence >= engine.threshold and r.inliers >= 20 for r in new)
    assert expanded.match == plain.match and expanded.confidence == plain.confidence


def test_an_unconfident_answer_is_not_expanded(lund):
    import skimage.data

    engine, _ = lund
    image = skimage.data.astronaut()
    plain = engine.search(image, name="astronaut", expand=0)
    expanded = engine.search(image, name="astronaut", expand=3)
    assert not plain.match and expansion_sources(plain, 3) == []
    assert expanded.expanded_from == []
    assert [(r.name, r.inliers) for r in expanded.results] == [(r.name, r.inliers) for r in plain.results]


def test_expanded_features_lie_inside_the_query_where_the_model_maps_them(lund):
    engine, photos = lund
    feats = engine.extractor.extract(photos[-1])
    plain = engine.search(feats, name="q", expand=0)
    source = plain.results[0]
    ef = expanded_features(engine.index, feats, [source])
    w, h = feats.image_size
    extra = ef.locations
    # As many as the query has at most: the second search costs about what the first did.
    assert 50 < len(extra) <= len(feats)
    assert (extra[:, 0] >= 0).all() and (extra[:, 0] <= w - 1).all() and (extra[:, 1] >= 0).all() \
        and (extra[:, 1] <= h - 1).all()
    # Mapped forward again by the verified model, they land on the source photo's own keypoints.
    xy, desc = engine.index.photo_features(source.name)
    fwd = np.c_[extra, np.ones(len(extra))] @ np.asarray(source.verification.model).T
    fwd = fwd[:, :2] / fwd[:, 2:3]
    dist = np.linalg.norm(fwd[:, None, :] - xy[None, :, :], axis=2).min(axis=1)
    assert dist.max() < 1e-2
    assert np.allclose(np.linalg.norm(ef.descriptors, axis=1), 1.0, atol=1e-4)
    # Two sources share the budget.
    two = expanded_features(engine.index, feats, plain.results[:2], budget=100)
    assert len(two) <= 100


def test_search_command_expands_and_reports_it(lund, tmp_path):
    from tools.cli import main

    engine, photos = lund
    out = tmp_path / "a.json"
    assert main(["search", engine.index_dir, photos[-1], "--candidates", "2", "--expand", "2", "--top", "6",
                 "--json", str(out)]) == 0
    q = json.loads(out.read_text())["queries"][0]
    assert q["expanded_from"] == ["lund_09.jpg", "lund_08.jpg"] and len(q["results"]) > 2
    assert main(["search", engine.index_dir, photos[-1], "--candidates", "2", "--no-expand", "--json", str(out)]) == 0
    q = json.loads(out.read_text())["queries"][0]
    assert "expanded_from" not in q and len(q["results"]) == 2


def test_leave_one_out_scores_each_photo_against_its_label(tmp_path, small_extractor):
    """evaluation.loo on real photos: four of the Lund walk and the four views of two UKBench objects."""
    from delf.extract import extract_to_h5
    from evaluation.loo import leave_one_out
    from index import IndexConf, build_index

    from .conftest import need_data

    uk = need_data("ukbench", "images")
    items = [(p, f"lund/{i}.jpg") for i, p in enumerate(sample_photos()[5:9])]
    items += [(str(uk / f"ukbench{k:05d}.jpg"), f"uk/{k}.jpg") for k in range(8)]
    labels = {n: ("lund" if n.startswith("lund") else f"object{int(n[3:-4]) // 4}") for _, n in items}
    feats = tmp_path / "f.h5"
    extract_to_h5(items, str(feats), extractor=small_extractor, progress=False)
    build_index(tmp_path / "i", [feats], IndexConf(n_trees=4, build_threads=1))
    res = leave_one_out(str(feats), str(tmp_path / "i"), labels, (0, 1), candidates=10, progress=False,
                        log=lambda m: None)
    assert set(res) == {"0", "1"} and res["0"]["queries"] == 12
    # Every photo's own kind comes first: the Lund photos find each other, each object its views.
    assert res["0"]["map"] > 80 and res["0"]["positives_in_top100"] == 1.0
    assert res["0"]["expanded_queries"] == 0 and res["1"]["expanded_queries"] > 0


def test_no_expansion_unless_the_best_result_is_a_match():
    """Results are ranked by inliers: a lower one may be more confident than the best. Expanding
    from it would move it first and turn a "no match" into a match, so nothing expands then."""
    from verify.estimate import Verification
    from verify.rerank import Answer, Result

    model = np.eye(3)

    def result(name, inliers, confidence):
        v = Verification(model=model, inliers=np.ones(inliers, bool), num_inliers=inliers, spread=0.3, trials=1)
        return Result(name=name, votes=inliers, score=float(inliers), vote_rank=0, putative=inliers,
                      inliers=inliers, spread=0.3, unique_inliers=inliers, confidence=confidence, verification=v)

    unsure = Answer("q", [result("a", 40, 0.90), result("b", 30, 0.95)], threshold=0.92)
    assert not unsure.match and expansion_sources(unsure, 3) == []
    sure = Answer("q", [result("a", 40, 0.97), result("b", 30, 0.90), result("c", 20, 0.93)], threshold=0.92)
    assert [r.name for r in expansion_sources(sure, 3)] == ["a", "c"]
    assert [r.name for r in expansion_sources(sure, 1)] == ["a"]
