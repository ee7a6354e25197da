"""`delf collection`: grouping rules and scores by hand; on real photos, a run
killed with SIGKILL and resumed, and a run on a local Dask cluster, both end
with exactly the files of an uninterrupted single-process run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, need_data
from engine.collection import CollectionConf, combine, group_photos, photo_items
from evaluation.collection import adjusted_rand_index, score

# Files that must be identical between runs (report.json holds timings).
OUTPUTS = ("edges.csv", "groups.csv", "graph.json", "verified.csv", "sheets/index.html")
SMALL = ["--scales", "0.7071,1.0", "--max-image-size", "320", "--max-features", "300"]


# ---------------------------------------------------------------- pure functions


def _clique(prefix, n):
    names = [f"{prefix}{i}" for i in range(n)]
    return names, [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def test_triangle_rule_keeps_one_bad_edge_from_merging_two_places():
    a, ea = _clique("a", 4)
    b, eb = _clique("b", 4)
    bad = ("a0", "b0")
    names = sorted(a + b + ["c0", "d0"])
    # c0: linked to one photo only; d0: linked to a2 and b2 (no triangle), more confidently to b2.
    edges = ea + eb + [bad, ("a1", "c0"), ("a2", "d0"), ("b2", "d0")]
    conf = {("a2", "d0"): 0.5, ("b2", "d0"): 0.9}
    groups, used = group_photos(names, edges, "triangle", confidence=conf)
    assert groups == [["a0", "a1", "a2", "a3", "c0"], ["b0", "b1", "b2", "b3", "d0"]]
    assert bad not in used and ("a1", "c0") in used and ("a2", "d0") not in used
    merged, _ = group_photos(names, edges, "none")
    assert merged == [names]
    # Two photos linked only to each other still form a group; duplicates always join.
    groups, _ = group_photos(["x", "y", "z"], [("x", "y")], "triangle", joined=[("y", "z")])
    assert groups == [["x", "y", "z"]]


def test_edge_confidence_is_the_better_direction():
    assert combine([0.3, 0.8, 10, 25]) == (0.8, 25)
    assert combine([0.9, None, 40, -1]) == (0.9, 40)
    assert combine([None, 0.5, -1, 12]) == (0.5, 12)


def test_evaluation_inputs_carry_one_label_per_place():
    """`delf evaluate collection` reads landmarks/ and ukbench/ with their labels files as given:
    Strecha's entry, fountain and castle photos are one place."""
    from evaluation.collection import collection_inputs

    items, labels = collection_inputs(str(need_data()))
    assert len(items) == len(labels) == 202
    assert labels["landmarks/images/strecha_entry-P10_0000.jpg"] == labels[
        "landmarks/images/strecha_fountain-P11_0000.jpg"] == "landmarks:castle"
    assert len({v for v in labels.values() if v.startswith("ukbench:")}) == 14


def test_adjusted_rand_index_by_hand():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    # scikit-learn's documented example: index 1, expected 2 * 1 / 6, max 1.5.
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx((1 - 1 / 3) / (1.5 - 1 / 3))
    # Index 2, expected 6 * 3 / 15, max 4.5.
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3)
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    assert adjusted_rand_index(list("aabbcc"), list("abcabc")) < 0


def test_score_by_hand():
    labels = {"p1": "x", "p2": "x", "p3": "x", "q1": "y", "q2": "y"}
    graph = {"photos": sorted(labels), "groups": [["p1", "p2", "q1"], ["p3"], ["q2"]],
             "edges": [{"a": "p1", "b": "p2"}, {"a": "p2", "b": "q1"}]}
    s = score(graph, labels)
    assert s["pair_precision"] == 0.5 and s["pair_recall"] == pytest.approx(round(1 / 4, 4))
    assert s["group_pair_precision"] == pytest.approx(round(1 / 3, 4)) and s["wrong_edges"] == [["p2", "q1"]]


def test_conf_and_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="verify_top"):
        CollectionConf(verify_top=0)
    with pytest.raises(ValueError, match="refine"):
        CollectionConf(refine="magic")
    with pytest.raises(FileNotFoundError, match="no such photo or folder"):
        photo_items([tmp_path / "missing"])
    with pytest.raises(ValueError, match="no photos"):
        photo_items([tmp_path])


# ---------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Nine real photos (two landmark scenes, one UKBench object) and an exact
    copy of one of them, in one folder."""
    land = need_data("landmarks", "images")
    uk = need_data("ukbench", "images")
    root = tmp_path_factory.mktemp("collection")
    d = root / "photos"
    d.mkdir()
    picks = [land / f"strecha_fountain-P11_000{i}.jpg" for i in range(3)] + \
            [land / f"strecha_Herz-Jesus-P8_000{i}.jpg" for i in range(3)] + \
            [uk / f"ukbench0000{i}.jpg" for i in range(4, 7)]
    for p in picks:
        shutil.copy(p, d / p.name)
    shutil.copy(picks[0], d / "copy_of_fountain.jpg")
    return d


@pytest.fixture(scope="module")
def reference(photos, small_conf):
    from engine.collection import run_collection

    out = photos.parent / "ref"
    rep = run_collection([photos], out, extractor_conf=small_conf, progress=False)
    return out, rep


def _same_outputs(a: Path, b: Path):
    for f in OUTPUTS:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    sheets_a = sorted(p.name for p in (a / "sheets").iterdir())
    assert sheets_a == sorted(p.name for p in (b / "sheets").iterdir())
    for name in sheets_a:
        assert (a / "sheets" / name).read_bytes() == (b / "sheets" / name).read_bytes(), name


def test_reference_run(reference):
    import csv
    import json

    out, rep = reference
    assert rep.photos == 10 and not rep.failed and rep.duplicates == 1
    assert rep.pairs_total == 45 and 0 < rep.pairs_verified <= 45
    rows = {r["photo"]: r for r in csv.DictReader(open(out / "groups.csv"))}
    assert rows["strecha_fountain-P11_0000.jpg"]["duplicate_of"] == "copy_of_fountain.jpg"
    assert rows["strecha_fountain-P11_0000.jpg"]["group"] == rows["copy_of_fountain.jpg"]["group"]
    graph = json.loads((out / "graph.json").read_text())
    assert all(e["a"] < e["b"] and e["confidence"] >= graph["threshold"] for e in graph["edges"])
    assert len({(e["a"], e["b"]) for e in graph["edges"]}) == len(graph["edges"])
    assert (out / "sheets" / "index.html").is_file() and (out / "sheets" / "group_0000.html").is_file()
    assert json.loads((out / "report.json").read_text())["queried"] == 10


def _wait_for(proc, cond, timeout=120.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def test_killed_and_resumed_run_equals_uninterrupted_run(photos, reference, small_conf):
    from engine.collection import run_collection

    out = photos.parent / "killed"
    work = out / "work"
    cmd = [sys.executable, "-m", "tools.cli", "collection", str(photos), "--out", str(out), "--quiet"] + SMALL
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    kills = 0
    # `delf collection` killed once while extracting and once while querying ...
    for cond in (lambda: os.path.exists(work / "features.h5.partial"),
                 lambda: os.path.isdir(work / "queries") and len(os.listdir(work / "queries")) >= 2):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _wait_for(proc, cond):
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1 and not (out / "report.json").exists()  # no killed run got to the end
    # ... then finished by the function the command calls (saves a TensorFlow start).
    rep = run_collection([photos], out, extractor_conf=small_conf, progress=False)
    assert rep.query_skipped > 0 or kills == 1
    _same_outputs(reference[0], out)


def test_local_dask_cluster_equals_single_process(photos, reference, small_conf):
    from distributed import Client, LocalCluster

    from engine.collection import run_collection

    out = photos.parent / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rep = run_collection([photos], out, extractor_conf=small_conf, client=client, progress=False)
    assert rep.extracted == 10 and rep.queried == 10
    _same_outputs(reference[0], out)
