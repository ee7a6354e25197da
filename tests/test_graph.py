"""The database's match graph (engine.graph) and the version 3 confidence
that reads "same place" from it, on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index import IndexConf
from tests.conftest import need_data
from verify.confidence import SUPPORT_MIN_INLIERS, Calibration, graph_context, graph_model_path

EXACT = IndexConf(kind="annoy", build_threads=1)  # searched exhaustively below 200,000 descriptors


def _ukbench(*numbers):
    return [str(need_data("ukbench", "images", f"ukbench{i:05d}.jpg")) for i in numbers]


def test_graph_context_reads_same_place_from_the_links():
    u = [40, 30, 25, 12, 22]
    same = np.zeros((5, 5), bool)
    same[0, 1] = True  # one direction is enough
    same[0, 3] = same[3, 0] = True
    other, sup = graph_context(u, same, support_min=20)
    # 0 is linked to 1 (30 >= 20: support) and 3 (12 < 20: no support, but not another place either);
    # 3 is supported by 0, and its strongest other place is 1 (not linked to 3).
    assert list(sup) == [30, 40, 0, 40, 0]
    assert list(other) == [25, 25, 40, 30, 40]
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        graph_context(u, np.zeros((4, 4), bool))


def test_the_version_3_file_embeds_the_shipped_pair_model_and_is_monotone(tmp_path):
    cal = Calibration.load(graph_model_path())
    assert cal.version == 3 and cal.uses_graph and cal.uses_context and cal.support_min == SUPPORT_MIN_INLIERS
    # Its pair model is the shipped version 1 model: graph edges are what `delf match` calls matches.
    v1 = Calibration.load()
    assert cal.pair == v1 and cal.pair_model is cal.pair and v1.pair_model is v1
    assert cal.pair_confidence([30], [100], [0.2])[0] == v1.confidence([30], [100], [0.2])[0]
    coef = dict(zip(cal.features, cal.coef))
    assert all(coef[f] > 0 for f in ("log_inliers", "spread", "log_margin", "log_support"))
    base = dict(inliers=[30], putative=[100], spread=[0.2], other_place=[10], same_place=[0])
    c0 = cal.confidence(**base)[0]
    for key, value in (("inliers", [40]), ("spread", [0.3]), ("other_place", [5]), ("same_place", [25])):
        assert cal.confidence(**{**base, key: value})[0] > c0, key
    # Saved and loaded again it is the same model; without its pair model it is refused.
    cal.save(str(tmp_path / "v3.json"))
    assert Calibration.load(tmp_path / "v3.json") == cal
    d = json.loads((tmp_path / "v3.json").read_text())
    del d["pair"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="pair model"):
        Calibration.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def lund_feats():
    """{name: path} of Lund photos 1, 4 and 6 and four UKBench photos."""
    from engine.demo import sample_photos

    photos = sample_photos()
    return {str(p).rsplit("/", 1)[-1]: str(p) for p in [photos[i] for i in (0, 3, 5)] + _ukbench(0, 4, 8, 12)}


def test_the_graph_links_photos_of_one_place_and_stays_current(tmp_path, small_extractor, lund_feats):
    from engine import Engine
    from engine.graph import GRAPH_FILE, MatchGraph

    first = [p for n, p in lund_feats.items() if n != "lund_06.jpg"]
    with Engine.build(tmp_path / "idx", first, extractor=small_extractor, index_conf=EXACT, graph=True) as engine:
        g = MatchGraph.load(engine.index_dir)
        assert g.searched == set(n for n in lund_feats if n != "lund_06.jpg")
        links = g.links(engine.settings.calibration.pair_model)
        assert links["lund_01.jpg"] == {"lund_04.jpg"} and links["lund_04.jpg"] == {"lund_01.jpg"}
        assert not any(n.startswith("ukbench") and any(m.startswith("lund") for m in ms) for n, ms in links.items())
        # Each row keeps the fitted model's scale change (what a version 4 pair model reads), as the search had it.
        row = [i for i in range(len(g)) if (g.src[i], g.dst[i]) == ("lund_01.jpg", "lund_04.jpg")]
        ans = engine.search(lund_feats["lund_01.jpg"], expand=0, diffuse=0, exclude=["lund_01.jpg"])
        hit = next(r for r in ans.results if r.name == "lund_04.jpg")
        assert len(row) == 1 and g.scale[row[0]] == pytest.approx(hit.scale_change) and hit.scale_change < 1
        # Adding a photo searches the index with it: its links appear, the old rows stay.
        engine.add([lund_feats["lund_06.jpg"]])
        g2 = MatchGraph.load(engine.index_dir)
        assert g2.searched == g.searched | {"lund_06.jpg"}
        links2 = g2.links(engine.settings.calibration.pair_model)
        assert "lund_06.jpg" in links2["lund_04.jpg"] and "lund_04.jpg" in links2["lund_06.jpg"]
        bound = g2.bound(engine.settings.calibration.pair_model)
        same = bound.same_place(["lund_04.jpg", "ukbench00000.jpg", "lund_06.jpg"])
        assert same.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
        # Removing a photo: it never comes back as a candidate, so its rows cannot count.
        engine.remove(["lund_06.jpg"])
        ans = engine.search(lund_feats["lund_01.jpg"], expand=0)
        assert "lund_06.jpg" not in [r.name for r in ans.results]
        # Compaction rewrites the segments of the same build: the graph is still read.
        from index import compact_index

        compact_index(engine.index_dir)
        assert MatchGraph.load(engine.index_dir).searched == g2.searched
    # A graph file of the older version (rows without their scale change) is not read, and adding photos
    # leaves it alone rather than start a partial graph; only a build makes a new one.
    import numpy as np

    from engine.graph import stale
    from engine.graph_update import update_graph

    path = tmp_path / "idx" / GRAPH_FILE
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k != "scale"}
    np.savez(path, **{**old, "version": 1})
    before = path.read_bytes()
    with Engine.open(tmp_path / "idx", extractor=small_extractor) as engine:
        assert MatchGraph.load(engine.index_dir) is None and stale(engine.index_dir)
        engine.add([lund_feats["lund_06.jpg"]])
        assert path.read_bytes() == before
        with pytest.raises(ValueError, match="older version"):
            update_graph(engine.index, [("lund_06.jpg", lund_feats["lund_06.jpg"])])
    # A damaged graph file is not read either (the search goes on without it).
    path.write_bytes(b"not a graph")
    with Engine.open(tmp_path / "idx", extractor=small_extractor) as engine:
        assert MatchGraph.load(engine.index_dir) is None
        ans = engine.search(lund_feats["lund_01.jpg"], expand=0, exclude=["lund_01.jpg"])
        assert ans.best.name == "lund_04.jpg" and all(r.via is None for r in ans.results)
    # A rebuilt index is another build: its old graph is not read.
    with Engine.build(tmp_path / "idx", first[:3], extractor=small_extractor, index_conf=EXACT, overwrite=True,
                      graph=False) as engine:
        assert (tmp_path / "idx" / GRAPH_FILE).exists() and MatchGraph.load(engine.index_dir) is None


def test_a_second_photo_linked_in_the_graph_raises_the_version_3_confidence(tmp_path, small_extractor,
                                                                           lund_feats):
    """Lund photo 1 against photos 4 and 6 of Lund among unrelated UKBench photos. With the match graph,
    photo 6 (linked to photo 4 in the database) supports photo 4; without it, photo 6 counts as another
    place and narrows photo 4's margin: the same verification is less confident."""
    from engine import Engine

    cal = Calibration.load(graph_model_path())
    db = [p for n, p in lund_feats.items() if n != "lund_01.jpg"]
    answers = {}
    for with_graph in (True, False):
        with Engine.build(tmp_path / f"idx{with_graph}", db, extractor=small_extractor, index_conf=EXACT,
                          calibration=cal, graph=with_graph) as engine:
            answers[with_graph] = engine.search(lund_feats["lund_01.jpg"], expand=0)
    linked, unlinked = answers[True], answers[False]
    assert linked.best.name == unlinked.best.name == "lund_04.jpg"
    assert linked.best.unique_inliers == unlinked.best.unique_inliers
    second = linked.results[1]
    assert second.name == "lund_06.jpg" and second.unique_inliers >= SUPPORT_MIN_INLIERS
    assert linked.best.same_place == second.unique_inliers and unlinked.best.same_place == 0
    assert unlinked.best.other_place == second.unique_inliers > linked.best.other_place
    assert linked.match and linked.confidence > unlinked.confidence + 0.05


def test_an_unknown_place_whose_two_best_photos_are_alike_stays_below_the_version_3_threshold(tmp_path):
    """A Sceaux castle photo against a database without Sceaux: a Berlin (WxBS Charlottenburg) photo and a
    Lund photo verify about equally well, and the database does not link them (they do not verify against
    each other): two places as strong as each other, so no match."""
    from engine import Engine

    cal = Calibration.load(graph_model_path())
    db = [str(need_data("wxbs", "WGLBS", "charlottenburg", "02.jpg")),
          str(need_data("landmarks", "images", "lund_24.jpg"))] + _ukbench(0, 4)
    query = str(need_data("landmarks", "images", "sceaux_100_7103.jpg"))
    with Engine.build(tmp_path / "idx", db, index_conf=EXACT, calibration=cal) as engine:
        ans = engine.search(query, expand=0)
        from engine.graph import MatchGraph

        assert len(MatchGraph.load(engine.index_dir).searched) == 4  # built because the calibration reads it
    best, second = ans.results[:2]
    assert {best.name, second.name} == {"02.jpg", "lund_24.jpg"}
    assert best.unique_inliers >= 10 and second.unique_inliers >= 0.8 * best.unique_inliers
    assert best.other_place == second.unique_inliers and best.same_place == 0
    assert not ans.match and ans.confidence < cal.threshold
    alone = cal.confidence([best.unique_inliers], [best.putative], [best.spread], [0], [0])[0]
    assert alone > ans.confidence + 0.05
