"""The whole job on real photos, at the default settings the confidence was
calibrated for: `delf demo` end to end, a real photo of another place
rejected, `delf search` on the command line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import need_data


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from engine.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    lines = []
    res = run_demo(str(out), log=lines.append)
    return out, res, lines


def test_demo_end_to_end(demo):
    out, res, lines = demo
    answers = res["answers"]
    match, astro = answers["lund_10.jpg"], answers["astronaut (scikit-image)"]
    assert match.match and match.best.name.startswith("lund_")
    assert match.best.confidence >= match.threshold
    assert not astro.match and astro.confidence < astro.threshold
    # The picture is a real PNG of two photos side by side, and the answers JSON says the same.
    from verify.draw import read_image

    pic = read_image(res["written"]["picture"])
    assert pic.shape[1] > 1000 and pic.std() > 10
    with open(res["written"]["answers"]) as f:
        saved = json.load(f)
    assert [q["decision"] for q in saved["queries"]] == ["match", "no match"]
    text = "\n".join(lines)
    assert "MATCH" in text and "no match" in text


def test_a_real_photo_of_another_place_is_rejected(demo):
    """A UKBench object photo against the Lund index: candidates get votes and a few inliers, no match."""
    from delf.extractor import make_extractor
    from index import Index
    from engine.searching import SearchSettings, answer_query

    photo = need_data("ukbench", "images", "ukbench00004.jpg")
    out, res, _ = demo
    extractor = make_extractor()
    with Index(os.path.join(out, "index")) as index:
        ans = answer_query(index, extractor.extract(str(photo)), "ukbench00004.jpg", SearchSettings().resolved())
    assert len(ans.results) > 0  # the index did answer
    assert not ans.match
    assert all(r.confidence < ans.threshold for r in ans.results)


def test_answer_ranks_by_inliers_and_confidence_follows(demo):
    out, res, _ = demo
    ans = res["answers"]["lund_10.jpg"]
    # Verified results rank by inliers; diffusion (on by default) lifts a result linked to a stronger one
    # in the match graph, never above that one: the others keep their order by inliers.
    inl = [r.inliers for r in ans.results if r.verified and r.via is None]
    assert inl == sorted(inl, reverse=True)
    by_name = {r.name: r for r in ans.results}
    for pos, r in enumerate(ans.results):
        if r.via is not None:
            assert ans.results.index(by_name[r.via]) < pos and by_name[r.via].inliers >= max(r.inliers, 0)
    # At equal putative matches and spread, more inliers never means less confidence.
    conf = np.array([r.confidence for r in ans.results])
    assert ((conf >= 0) & (conf <= 1)).all()


def test_search_cli_json_and_draw(demo, tmp_path):
    from tools.cli import main
    from engine.demo import sample_photos

    out, _, _ = demo
    photos = sample_photos()
    js = tmp_path / "answers.json"
    draw = tmp_path / "draw"
    rc = main(["search", os.path.join(out, "index"), photos[-1], "--top", "3", "--json", str(js),
               "--draw", str(draw), "--db-images", os.path.dirname(photos[-1])])
    assert rc == 0
    d = json.loads(js.read_text())
    q = d["queries"][0]
    assert q["query"] == "lund_10.jpg" and q["decision"] == "match" and len(q["results"]) == 3
    assert q["results"][0]["inliers"] >= q["results"][1]["inliers"]
    assert os.path.isfile(draw / "lund_10_01.png")


def test_search_cli_bad_query_reported(demo, tmp_path, capsys):
    from tools.cli import main

    out, _, _ = demo
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a photo")
    rc = main(["search", os.path.join(out, "index"), str(bad)])
    err = capsys.readouterr().err
    # Nothing usable in the batch: status 2, the photo named once with its problem.
    assert rc == 2 and [line for line in err.splitlines() if line.strip()] == [f"{bad}: not an image (unrecognised format)"]


def test_search_cli_labels_predict_the_best_matchs_label(demo, tmp_path):
    from tools.cli import main
    from engine.demo import sample_photos

    out, res, _ = demo
    best = res["answers"]["lund_10.jpg"].best.name
    labels = tmp_path / "labels.csv"
    rows = ["image,place"] + [f"{os.path.basename(p)},{'the-best' if os.path.basename(p) == best else 'lund'}"
                              for p in sample_photos()[:-1]]
    labels.write_text("\n".join(rows) + "\n")
    js = tmp_path / "answers.json"
    rc = main(["search", os.path.join(out, "index"), sample_photos()[-1], "--labels", str(labels), "--json", str(js)])
    assert rc == 0
    q = json.loads(js.read_text())["queries"][0]
    assert q["predicted_label"] == "the-best" and q["label_confidence"] >= q["threshold"]
    assert q["results"][0]["label"] == "the-best" and q["results"][1]["label"] == "lund"


def test_edge_keypoints_do_not_verify_unrelated_photos(tmp_path):
    """Two WxBS photos of one size and of different places (a foggy field, a Kyiv skyline):
    their edge keypoints (receptive fields mostly zero padding) match each other and verify
    an identity transform with dozens of "inliers" unless edge-to-edge correspondences are
    left out (RerankConf.border). The real pair of the field keeps its inliers."""
    from delf.extractor import make_extractor
    from index import Index, IndexConf, build_index_from_features
    from engine.searching import SearchSettings, answer_query
    from verify.rerank import RerankConf

    field1 = need_data("wxbs", "WGALBS", "zanky", "01.jpg")
    field2 = need_data("wxbs", "WGALBS", "zanky", "02.jpg")
    kyiv = need_data("wxbs", "WLABS", "kyiv", "02.jpg")
    extractor = make_extractor()
    feats = {p.parent.name + "/" + p.name: extractor.extract(str(p)) for p in (field1, field2, kyiv)}
    query = feats.pop("zanky/01.jpg")
    # The uncompressed ("annoy") index: its exhaustive search of this small segment gives the exact
    # edge-to-edge neighbours the rule is about.
    build_index_from_features(str(tmp_path / "index"), feats.items(), extractor.resolved_conf(),
                              IndexConf(kind="annoy"))
    with Index(str(tmp_path / "index")) as index:
        plain = answer_query(index, query, "zanky/01.jpg", SearchSettings(rerank=RerankConf(border=0)).resolved())
        fixed = answer_query(index, query, "zanky/01.jpg", SearchSettings().resolved())
    by_name = lambda ans: {r.name: r for r in ans.results}  # noqa: E731
    k0, k1 = by_name(plain)["kyiv/02.jpg"], by_name(fixed)["kyiv/02.jpg"]
    # Without the rule: many inliers, nearly all on the edges, under a near-identity model.
    assert k0.unique_inliers >= 25
    m = k0.verification.inliers
    from verify.rerank import near_border

    assert near_border(k0.query_xy[m], query.image_size, 24).mean() > 0.9
    assert np.allclose(k0.verification.model[:2, :2], np.eye(2), atol=0.05)
    # With it: the unrelated photo falls to a handful and is not accepted; the real pair stays a match.
    assert k1.unique_inliers < k0.unique_inliers / 3
    assert k1.confidence < fixed.threshold
    f0, f1 = by_name(plain)["zanky/02.jpg"], by_name(fixed)["zanky/02.jpg"]
    assert fixed.best.name == "zanky/02.jpg"
    assert f1.unique_inliers >= 0.8 * f0.unique_inliers


def test_border_pairs_by_hand():
    from verify.rerank import border_pairs

    q = np.array([[0, 50], [50, 50], [99, 10], [5, 5]], float)
    d = np.array([[0, 0], [0, 0], [150, 10], [100, 100]], float)
    # photo sizes: query 100x100, database 200x200; margin 8 px
    got = border_pairs(q, (100, 100), d, np.array([[200, 200]] * 4), 8.0)
    assert got.tolist() == [True, False, False, False]
    d2 = d.copy()
    d2[2] = [199, 10]
    assert border_pairs(q, (100, 100), d2, (200, 200), 8.0).tolist() == [True, False, True, False]
    assert not border_pairs(q, (100, 100), d, (200, 200), 0.0).any()
