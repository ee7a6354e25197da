"""`delf match` end to end on two real photos, and the pieces of `delf bench ransac`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from .conftest import need_data



def test_delf_match_end_to_end(tmp_path, capsys):
    from tools.cli import main

    photos = need_data() / "landmarks" / "images"
    out, js = tmp_path / "match.png", tmp_path / "match.json"
    rc = main(["match", str(photos / "lund_01.jpg"), str(photos / "lund_02.jpg"), "--out", str(out),
               "--json", str(js)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "inliers" in printed and "model" in printed
    assert out.stat().st_size > 10_000
    result = json.loads(js.read_text())
    assert result["model_type"] == "affine"
    assert result["num_inliers"] >= 20  # two views of the same street
    assert len(result["inliers"]) == result["num_inliers"]
    assert result["putative_matches"] >= result["num_inliers"]
    m = np.array(result["model"])
    assert m.shape == (3, 3) and np.allclose(m[2], [0, 0, 1])
    # The model maps each inlier of photo 1 to within the threshold of its match.
    pts = np.array(result["inliers"])
    mapped = np.c_[pts[:, :2], np.ones(len(pts))] @ m[:2].T
    assert np.all(np.linalg.norm(mapped - pts[:, 2:], axis=1) < result["ransac"]["residual_threshold"])


def test_delf_match_leaves_edge_to_edge_matches_out(tmp_path):
    """A foggy field and a Kyiv skyline, both 800x534: with every match kept, RANSAC verifies
    dozens of matches along the two photos' edges; with the default --border they are left
    out (and reported as outliers) and almost nothing verifies."""
    from tools.cli import main

    field = need_data("wxbs", "WGALBS", "zanky", "01.jpg")
    kyiv = need_data("wxbs", "WLABS", "kyiv", "02.jpg")
    got = {}
    for border in ("0", None):
        js = tmp_path / f"m{border}.json"
        args = ["match", str(field), str(kyiv), "--out", str(tmp_path / "m.png"), "--json", str(js)]
        rc = main(args + (["--border", border] if border is not None else []))
        assert rc == 0
        got[border] = json.loads(js.read_text())
    keep_all, default = got["0"], got[None]
    assert keep_all["putative_matches"] == default["putative_matches"]
    assert default["ransac"]["border"] == 16.0
    assert len(keep_all["inliers"]) >= 20
    # The kept-all inliers lie on the edges of both photos.
    pts = np.array(keep_all["inliers"])
    edge = lambda x, y, w, h: (x < 16) | (y < 16) | (x > w - 17) | (y > h - 17)  # noqa: E731
    assert (edge(pts[:, 0], pts[:, 1], 800, 534) & edge(pts[:, 2], pts[:, 3], 800, 534)).mean() > 0.8
    assert len(default["inliers"]) < len(keep_all["inliers"]) / 4


def test_delf_match_user_errors(tmp_path, capsys):
    from tools.cli import main

    rc = main(["match", str(tmp_path / "nope.jpg"), str(tmp_path / "nope2.jpg"), "--out", str(tmp_path / "m.png")])
    assert rc == 2
    assert "nope.jpg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["match", "a.jpg", "b.jpg", "--out", "m.png", "--model", "projective"])
    photo = need_data("landmarks", "images", "lund_01.jpg")
    rc = main(["match", str(photo), str(photo), "--out", str(tmp_path / "m.png"), "--border", "-1"])
    assert rc == 2
    assert "--border" in capsys.readouterr().err


def test_bench_pairs_and_errors():
    from evaluation import bench_ransac as B

    pairs = B.load_pairs(str(need_data()))
    kinds = [p["kind"] for p in pairs]
    assert kinds.count("homography") == 20 and kinds.count("wxbs") == 33
    hom = next(p for p in pairs if p["pair"] == "graf/1-3")
    assert B.model_error(hom, hom["H"], (800, 640)) == pytest.approx(0.0, abs=1e-9)
    assert B.model_error(hom, None, (800, 640)) == B.model_error(hom, np.eye(3), (800, 640)) > 10
    wx = next(p for p in pairs if p["kind"] == "wxbs")
    shift = np.eye(3)
    shift[0, 2] = 3.0
    c = wx["corrs"]
    expected = np.median(np.linalg.norm(c[:, :2] + [3.0, 0.0] - c[:, 2:], axis=1))
    assert B.model_error(wx, shift, None) == pytest.approx(expected)
    with pytest.raises(FileNotFoundError):
        B.load_pairs("/nonexistent/data")


def test_bench_ransac_runs_on_two_pairs(tmp_path):
    from evaluation import bench_ransac as B

    result = B.bench_ransac(str(need_data()), repeats=1, log=lambda m: None, only=("leuven/1-2", "WLABS/kpi"),
                            synthetic=2)
    rows = result["pairs"]
    assert [r["pair"] for r in rows[:2]] == ["leuven/1-2", "WLABS/kpi"]
    assert [r["kind"] for r in rows[2:]] == ["synthetic", "synthetic"]
    for name in B.METHODS:
        s = result["summary"][name]
        assert set(s) == {"median_ms", "median_inliers", "mean_corner_error_px"}
        for r in rows:
            assert set(r[name]) == {"ms", "inliers", "corner_error_px"} and r[name]["ms"] > 0
        # The summary covers the real pairs only.
        real = [r[name]["corner_error_px"] for r in rows[:2]]
        assert s["mean_corner_error_px"] == pytest.approx(np.mean(real), abs=1e-3)
    leuven = rows[0]
    assert leuven["kind"] == "homography" and leuven["ours-homography"]["corner_error_px"] < 2.0
    # Against the exact warp both homography estimators land within a pixel.
    for r in rows[2:]:
        assert r["ours-homography"]["corner_error_px"] < 1.0 and r["opencv-homography"]["corner_error_px"] < 1.0
    assert "fit_rms_px" not in rows[1]  # WxBS pairs have no homography
    for r in (rows[0], *rows[2:]):
        fit = r["fit_rms_px"]
        assert fit["matches"] > 100 and 0 < fit["ours-homography"] < 1.5 and 0 < fit["ground-truth"] < 1.5
    syn = result["meta"]["synthetic"]
    assert syn["pairs"] == 2 and syn["methods"]["ours-homography"]["over_10px"] == 0
    assert result["meta"]["acceptance"]["homography_pairs_ours_not_worse_than_opencv"].endswith("/1")
    B.print_table(result, out=open(os.devnull, "w"))


def test_fit_rms_by_hand():
    from evaluation import bench_ransac as B

    rng = np.random.default_rng(0)
    h = np.array([[1.1, 0.05, 10.0], [-0.02, 0.95, 5.0], [1e-4, 0.0, 1.0]])
    src = rng.uniform(0, 500, (50, 2))
    dst = B.project(h, src)
    dst[:10] += [1.0, 0.0]  # ten matches off by one pixel
    dst[40:] += 100.0  # ten far outliers, left out of the RMS
    shifted = h.copy()
    shifted[0] += 2.0 * h[2]  # maps every point 2 px to the right
    fit = B.fit_rms({"src": src, "dst": dst, "H": h}, {"ground-truth": h, "shifted": shifted, "none": None})
    assert fit["matches"] == 40
    assert fit["ground-truth"] == pytest.approx(np.sqrt(10 / 40), abs=1e-3)
    assert fit["shifted"] == pytest.approx(np.sqrt((10 * 1.0 + 30 * 4.0) / 40), abs=1e-3)
    assert fit["none"] > 10
    assert B.fit_rms({"src": src[:5], "dst": dst[:5], "H": h}, {"ground-truth": h}) is None


def test_synthetic_pairs_are_exact_and_seeded():
    import cv2

    from evaluation import bench_ransac as B

    data = str(need_data())
    a, b = B.synthetic_pairs(data, 2, seed=3), B.synthetic_pairs(data, 2, seed=3)
    assert [p["pair"] for p in a] == [p["pair"] for p in b] and len(a) == 2
    for p, q in zip(a, b):
        assert np.array_equal(p["H"], q["H"]) and np.array_equal(p["gray2"], q["gray2"])
    other = B.synthetic_pairs(data, 2, seed=4)
    assert not np.allclose(a[0]["H"], other[0]["H"])
    for p in a:
        # Warping the photo by H redraws the copy: the ground truth is the warp itself.
        g1, g2 = p["gray1"], p["gray2"]
        redrawn = cv2.warpPerspective(g1, p["H"], (g2.shape[1], g2.shape[0]), flags=cv2.INTER_AREA)
        inside = cv2.warpPerspective(np.ones_like(g1), p["H"], (g2.shape[1], g2.shape[0])) > 0
        inside = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert inside.mean() > 0.3
        r = np.corrcoef(redrawn[inside].astype(float), g2[inside].astype(float))[0, 1]
        assert r > 0.97  # a 3 px shift of H already drops it to about 0.9
    assert B.synthetic_pairs(data, 0) == []
    with pytest.raises(FileNotFoundError, match="landmarks"):
        B.synthetic_pairs("/nonexistent", 1)
