"""The `delf` command end to end, through the same function the console script calls."""

import json
import shutil

import numpy as np

from delf.featio import FeatureFile
from tools.cli import main

from .conftest import SAMPLES, need_data

SMALL = ["--scales", "0.7071,1.0", "--max-image-size", "320", "--max-features", "200"]


def test_extract_command(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "lund_01.jpg", photos)
    shutil.copy(SAMPLES / "lund_02.jpg", photos / "sub")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "f.h5"
    assert main(["extract", str(photos), "--out", str(out), "--quiet", "--float16", *SMALL]) == 0
    cap = capsys.readouterr()
    assert "2 extracted" in cap.out and "1 failed" in cap.out
    # The unusable photo is named on stderr, once, with its problem.
    assert [line for line in cap.err.splitlines() if "broken.jpg" in line] == [f"{photos / 'broken.jpg'}: "
                                                                               "not an image (unrecognised format)"]
    with FeatureFile(out) as ff:
        assert ff.names == ["lund_01.jpg", "sub/lund_02.jpg"]
        assert ff.conf["scales"] == [0.7071, 1.0] and ff.conf["max_features"] == 200
        assert ff.conf["pca_sha256"] and ff.conf["descriptor_dim"] == 40
        f = ff["sub/lund_02.jpg"]
        assert len(f) == 200 and f.descriptors.shape == (200, 40)
    # Rerun: resumes, nothing new.
    assert main(["extract", str(photos), "--out", str(out), "--quiet", *SMALL]) == 0
    assert "0 extracted, 2 already there, 1 failed" in capsys.readouterr().out
    # A different conf into the same file is refused with the difference named.
    assert main(["extract", str(photos), "--out", str(out), "--quiet", *SMALL[:-2], "--max-features", "200",
                 "--pca-dim", "64"]) == 2
    assert "pca_dim: 40 vs 64" in capsys.readouterr().err


def test_bench_homography_and_extract(tmp_path, capsys):
    seq = need_data("homography", "graf")
    data = tmp_path / "homography"
    (data / "graf").mkdir(parents=True)
    for name in ("img1.jpg", "img2.jpg", "img3.jpg", "img4.jpg", "img5.jpg", "img6.jpg", "H1to2p", "H1to3p",
                 "H1to4p", "H1to5p", "H1to6p"):
        (data / "graf" / name).symlink_to(seq / name)
    out = tmp_path / "h.json"
    assert main(["bench", "homography", "--data", str(data), "--json", str(out), *SMALL]) == 0
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"delf", "random", "sift"} and len(res["pairs"]) == 5
    for m in res["summary"].values():
        assert 0 <= m["correct_5px"] <= m["correct_10px"] <= m["correct_20px"] <= 1 and m["matches"] > 0
    # graf 1-2 is a mild viewpoint change: most delf matches must be right.
    assert res["pairs"][0]["delf"]["correct_20px"] > 0.5
    assert "mean" in capsys.readouterr().out
    out = tmp_path / "e.json"
    assert main(["bench", "extract", "--data", str(SAMPLES), "--limit", "2", "--json", str(out), *SMALL]) == 0
    res = json.loads(out.read_text())
    # Timings are not compared here (a loaded machine reorders them); the
    # report's figures must be consistent with each other.
    assert res["photos"] == 2 and res["backbone_seconds_per_image"] > 0 and res["seconds_per_image"] > 0
    assert np.isclose(res["overhead_fraction"], 1 - res["backbone_seconds_per_image"] / res["seconds_per_image"])
    assert res["scales"] == [0.7071, 1.0]


def test_demo_runs_on_the_bundled_photos(tmp_path, capsys):
    import re

    import cv2

    assert main(["demo", "--out", str(tmp_path), *SMALL]) == 0
    text = capsys.readouterr().out
    # The held-out Lund photo comes first: its best result's inliers (first table row).
    assert text.index("lund_10.jpg:") < text.index("astronaut")
    inliers = int(re.search(r"^\s+1\s+[\d.]+\*?\s+(\d+)", text, re.M).group(1))
    assert inliers >= 20, text  # overlapping views of one street
    picture = cv2.imread(str(tmp_path / "match.png"))
    assert picture is not None and picture.shape[1] > 2 * 320
