"""Diffusion over the database's match graph (engine.diffusion), on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from index import IndexConf
from tests.conftest import need_data
from verify.rerank import Answer, Result

EXACT = IndexConf(kind="annoy", build_threads=1)  # searched exhaustively below 200,000 descriptors


@pytest.fixture(scope="module")
def lund_index(tmp_path_factory, small_extractor):
    """Lund photos 1-9 and ten UKBench photos, indexed with their match graph; Lund photo 10 is the query."""
    from engine import Engine
    from engine.demo import sample_photos

    photos = sample_photos()
    uk = [str(need_data("ukbench", "images", f"ukbench{i:05d}.jpg")) for i in range(0, 40, 4)]
    path = tmp_path_factory.mktemp("diffusion") / "idx"
    Engine.build(path, photos[:-1] + uk, extractor=small_extractor, index_conf=EXACT).close()
    return path, photos[-1]


def test_a_positive_outside_the_candidates_is_found_through_a_confident_match(lund_index, small_extractor):
    """With two candidates verified, Lund photo 7 is not among them; Lund photo 8 is, matches, and verified
    against photo 7 when photo 7 was indexed: diffusion ranks photo 7 right after it, and only then."""
    from engine import Engine

    path, query = lund_index
    with Engine.open(path, candidates=2, extractor=small_extractor) as engine:
        plain = engine.search(query, expand=0, diffuse=0)
        walked = engine.search(query, expand=0, diffuse=3)
    names = [r.name for r in plain.results]
    assert names == ["lund_09.jpg", "lund_08.jpg"] and plain.match
    assert [r.name for r in walked.results[:2]] == names
    third = walked.results[2]
    assert third.name == "lund_07.jpg" and third.via == "lund_08.jpg" and not third.verified
    assert third.confidence == 0.0 and walked.results[1].confidence >= walked.threshold
    # Every photo diffusion adds is of the query's place: the graph links no UKBench photo to Lund.
    assert {r.name[:5] for r in walked.results} == {"lund_"}
    assert walked.match and walked.confidence == plain.confidence
    # `delf search` prints where it came from; its JSON says it too.
    from engine.searching import format_answer

    line = format_answer(walked, 3)[-1].split()
    assert line[0] == "3" and line[2] == "-" and line[-2:] == ["(via", "lund_08.jpg)"]
    assert walked.to_dict()["results"][2]["via"] == "lund_08.jpg"


def test_diffusion_reorders_the_verified_results_by_their_links(lund_index, small_extractor):
    from engine import Engine
    from engine.graph import MatchGraph

    path, query = lund_index
    with Engine.open(path, extractor=small_extractor) as engine:
        plain = engine.search(query, expand=0, diffuse=0)
        walked = engine.search(query, expand=0, diffuse=3)
        weights = MatchGraph.load(path).weights(engine.settings.calibration.pair_model)
    inl = {r.name: r.inliers for r in plain.results}
    assert sorted(r.name for r in walked.results) == sorted(r.name for r in plain.results)
    # Each photo ranks by its strongest path: its own inliers, or min(source's inliers, link's) over the
    # verified results with >= 3 unique inliers it is linked to; ties keep the old order.
    sources = [r for r in plain.results if r.verified and r.unique_inliers >= 3]
    key = {}
    for r in plain.results:
        paths = [min(s.inliers, weights.get(s.name, {})[r.name]) for s in sources
                 if r.name in weights.get(s.name, {})]
        key[r.name] = max([inl[r.name]] + paths)
    assert [key[r.name] for r in walked.results] == sorted(key.values(), reverse=True)
    moved = [r.name for r in walked.results[:8]] != [r.name for r in plain.results[:8]]
    assert moved and walked.best.name == plain.best.name


def test_no_match_stays_no_match(tmp_path):
    """A photo of a place the database does not hold: diffusion may reorder its weak results, but no
    path is stronger than its source, so the best result and the decision stay."""
    from engine import Engine

    db = [str(need_data("wxbs", "WGLBS", "charlottenburg", "02.jpg")),
          str(need_data("landmarks", "images", "lund_24.jpg")),
          str(need_data("landmarks", "images", "lund_25.jpg"))] + \
        [str(need_data("ukbench", "images", f"ukbench{i:05d}.jpg")) for i in (0, 1, 4)]
    query = str(need_data("landmarks", "images", "sceaux_100_7103.jpg"))
    with Engine.build(tmp_path / "idx", db, index_conf=EXACT) as engine:
        plain = engine.search(query, expand=0, diffuse=0)
        walked = engine.search(query, expand=0, diffuse=1)
    assert not plain.match and not walked.match
    assert walked.best.name == plain.best.name and walked.confidence == plain.confidence


def test_diffuse_by_hand():
    from engine.diffusion import diffuse

    def res(name, inliers, unique=None):
        return Result(name=name, votes=1, score=1.0, vote_rank=0, putative=50, inliers=inliers, spread=0.2,
                      unique_inliers=inliers if unique is None else unique, confidence=0.0)

    ans = Answer(query="q", results=[res("a", 40), res("b", 12), res("c", 9), res("d", 2)], threshold=0.5)
    weights = {"a": {"c": 30, "x": 50, "gone": 80}, "c": {"b": 100}, "d": {"y": 100}}
    out = diffuse(ans, weights, exclude=("gone",), min_source=3)
    # c: min(40, 30) = 30 via a; x: min(40, 50) = 40 via a (new, after a on the tie); b: min(9, 100) = 9 < 12
    # stays; d (2 unique inliers) lends nothing; left-out photos are never walked to.
    assert [(r.name, r.via) for r in out.results] == [("a", None), ("x", "a"), ("c", "a"), ("b", None), ("d", None)]
    assert not out.results[1].verified and np.isclose(out.results[1].confidence, 0.0)
    assert diffuse(ans, {}) is ans and diffuse(ans, weights, min_source=100) is ans
