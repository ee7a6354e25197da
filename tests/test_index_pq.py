"""The compact "pq" index: kernels against NumPy references, exact recovery of
planted neighbours, the writer's round trips on the new segments, identical
bytes whatever the thread count, old indexes, and shards on a Dask cluster."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from index import (Index, IndexConf, IndexFileError, SearchConf, add_to_index, build_index,
                   build_index_from_features, compact_index, index_info, remove_from_index)
from index import pq, store
from index.search import merge_segments

from .test_index_util import CONF, DIM, make_photos, noisy_query, unit, write_features

PQ = IndexConf(kind="pq", pq_m=8, build_threads=1)


# ---------------------------------------------------------------- kernels


def _random_codebook(rng, dim=12, nlist=6, m=4):
    bounds = pq.group_bounds(dim, m)
    width = int(np.max(np.diff(bounds)))
    return pq.Codebook(rotation=pq.random_rotation(dim, 3), coarse=rng.standard_normal((nlist, dim)).astype(np.float32),
                       pq=rng.standard_normal((m, pq.KSUB, width)).astype(np.float32), bounds=bounds)


def test_query_tables_equal_a_loop():
    rng = np.random.default_rng(0)
    cb = _random_codebook(rng, dim=10, m=4)  # groups of 3, 3, 2, 2
    q = rng.standard_normal((5, 10)).astype(np.float32)
    got = pq.query_tables(q, cb.pq, cb.bounds).reshape(5, cb.m, pq.KSUB)
    for i in range(5):
        for j in range(cb.m):
            lo, hi = cb.bounds[j], cb.bounds[j + 1]
            for t in (0, 17, 255):
                want = -2 * sum(float(q[i, d]) * float(cb.pq[j, t, d - lo]) for d in range(lo, hi))
                assert abs(got[i, j, t] - want) < 1e-4


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("m", [4, 16])
@pytest.mark.parametrize("max_scan", [0, 100])
def test_ivf_scan_equals_brute_force_over_the_probed_lists(compiled, m, max_scan):
    """The scan's distances are exactly |q - reconstruction|^2, its top k the
    k smallest of the probed cells' codes, dead rows never returned; both when
    it reads codes byte by byte (m = 4) and eight at a time (m = 16). With
    max_scan, a row opens lists in probe order only while it has scanned fewer
    codes than that."""
    rng = np.random.default_rng(1)
    cb = _random_codebook(rng, dim=40 if m == 16 else 12, m=m)
    assert pq.code_words(np.zeros((1, m), np.uint8)).shape == ((1, 2) if m == 16 else (0, 0))
    n = 400
    cells = rng.integers(0, cb.nlist, n)
    codes = rng.integers(0, 256, (n, cb.m)).astype(np.uint8)
    order = np.argsort(cells, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=cb.nlist))]).astype(np.int64)
    list_rows = pq.pack_rows(order)
    dead = np.zeros(n, bool)
    dead[rng.choice(n, 40, replace=False)] = True
    recon = cb.coarse[cells].copy()  # in the rotated space, as the scan sees it
    for j in range(cb.m):
        lo, hi = cb.bounds[j], cb.bounds[j + 1]
        recon[:, lo:hi] += cb.pq[j, codes[:, j], : hi - lo]
    q = rng.standard_normal((7, cb.dim)).astype(np.float32)
    probes = np.array([rng.permutation(cb.nlist)[:3] for _ in range(len(q))], np.int64)
    probes[0, 2] = -1  # fewer probes for one row
    probe_d = np.einsum("ipd,ipd->ip", q[:, None] - cb.coarse[np.maximum(probes, 0)],
                        q[:, None] - cb.coarse[np.maximum(probes, 0)]).astype(np.float32)
    k = 5
    best_d = np.full((len(q), k), np.inf, np.float32)
    best_r = np.full((len(q), k), -1, np.int64)
    fn = pq.ivf_scan if compiled else pq.ivf_scan.py_func
    sorted_codes = codes[order]
    fn(pq.query_tables(q, cb.pq, cb.bounds), probes, probe_d, cb.cell_tables(), offsets, sorted_codes,
       pq.code_words(sorted_codes), list_rows, dead, best_d, best_r, max_scan)
    cut = 0
    for i in range(len(q)):
        opened, scanned = [], 0
        for c in probes[i][probes[i] >= 0]:
            if max_scan and scanned >= max_scan:
                cut += 1
                break
            opened.append(c)
            scanned += offsets[c + 1] - offsets[c]
        allowed = np.isin(cells, opened) & ~dead
        ref = np.sum((recon - q[i]) ** 2, axis=1)
        ref[~allowed] = np.inf
        want = np.argsort(ref, kind="stable")[:k]
        got = np.argsort(best_d[i], kind="stable")
        np.testing.assert_array_equal(best_r[i][got], want)
        np.testing.assert_allclose(best_d[i][got], ref[want], rtol=1e-4, atol=1e-4)
    assert (cut > 0) == (max_scan > 0)  # the limit binds in this set-up


def test_packing_round_trips():
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 1 << 24, 1000)
    np.testing.assert_array_equal(pq.unpack_rows(pq.pack_rows(rows)), rows)
    sizes = np.repeat([[1024, 768], [333, 2000]], 500, axis=0)
    xy = rng.uniform(0, 1, (1000, 2)) * sizes
    back = pq.unpack_xy(pq.pack_xy(xy, sizes), sizes)
    assert np.all(np.abs(back - xy) <= sizes / 8190 + 1e-3)


def test_codes_reconstruct_the_descriptors():
    """Encoding then decoding lands much nearer a descriptor than the coarse cell alone does."""
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((6000, 16)))
    cb = pq.train_codebook(x, nlist=32, m=8, seed=0)
    cells, codes = cb.encode(x)
    err = np.linalg.norm(cb.decode(cells, codes) - x, axis=1)
    coarse_err = np.linalg.norm(cb.rotate(x) - cb.coarse[cells], axis=1)
    assert np.median(err) < 0.5 * np.median(coarse_err)


# ---------------------------------------------------------------- search


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Random photos, and queries whose every descriptor has an exact copy in one photo."""
    tmp = tmp_path_factory.mktemp("pq")
    photos = make_photos("p/", 60, seed=21, n_range=(80, 120))
    path = str(tmp / "db.idx")
    build_index(path, [write_features(tmp / "db.h5", photos)], PQ)
    return tmp, photos, path


def test_planted_neighbours_are_found_exactly(planted):
    tmp, photos, path = planted
    names = list(photos)
    with Index(path) as idx:
        for mode in ("annoy", "exact"):
            for name in (names[3], names[40]):
                f = photos[name]
                rows, dist, modes, snap = idx.knn(f.descriptors, SearchConf(k=5, mode=mode, pq_exact_below=0))
                assert set(modes) == {"ivf" if mode == "annoy" else "exact"}
                photo = snap.gather("desc_photo", rows[:, 0])
                kp = snap.gather("desc_keypoint", rows[:, 0])
                # each descriptor's nearest code is its own (ties with a twin code are impossible here)
                assert np.mean(photo == names.index(name)) == 1.0
                np.testing.assert_array_equal(kp, np.arange(len(f)))
                np.testing.assert_allclose(snap.gather("desc_xy", rows[:, 0]), f.locations,
                                           atol=max(f.image_size) / 8000)
            c = idx.search(noisy_query(photos[name], 1), SearchConf(top_n=3))
            assert c.names[0] == name


def test_exhaustive_and_ivf_give_the_same_distances(planted):
    _, photos, path = planted
    q = noisy_query(photos["p/010.jpg"], 2).descriptors
    with Index(path) as idx:
        nlist = idx.snapshot().segments[0].codebook.nlist
        r_exact, d_exact, _, _ = idx.knn(q, SearchConf(mode="exact"))
        r_ivf, d_ivf, _, _ = idx.knn(q, SearchConf(mode="annoy", nprobe=nlist, pq_exact_below=0))
    np.testing.assert_allclose(d_ivf, d_exact, atol=2e-3)
    assert np.mean(r_ivf == r_exact) > 0.98


def test_photo_features_decode_near_the_originals(planted):
    _, photos, path = planted
    with Index(path) as idx:
        xy, desc = idx.photo_features("p/007.jpg")
    f = photos["p/007.jpg"]
    np.testing.assert_allclose(xy, f.locations, atol=max(f.image_size) / 8000)
    cos = np.sum(unit(desc) * f.descriptors, axis=1)
    assert np.median(cos) > 0.9


# ---------------------------------------------------------------- writer


def test_round_trip_add_remove_compact(tmp_path):
    a = make_photos("a/", 30, seed=4, n_range=(60, 90))
    b = make_photos("b/", 6, seed=5, n_range=(60, 90))
    path = str(tmp_path / "db.idx")
    info = build_index(path, [write_features(tmp_path / "a.h5", a)], PQ)
    assert info["kind"] == "pq" and info["codebook"]["pq_m"] == 8 and info["format_version"] == 2
    cb_name = store.read_manifest(path)["codebook"]["name"]
    info = add_to_index(path, write_features(tmp_path / "b.h5", b), PQ)
    assert info["photos"] == 36 and len(info["segments"]) == 2
    assert store.read_manifest(path)["codebook"]["name"] == cb_name  # add encodes with the build's codebook
    q = noisy_query(b["b/002.jpg"], 3)
    with Index(path) as idx:
        before = idx.search(q, SearchConf(top_n=5))
        assert before.names[0] == "b/002.jpg"
        assert idx.search(q, SearchConf(top_n=5), exclude=["b/002.jpg"]).names[0] != "b/002.jpg"
    remove_from_index(path, ["a/001.jpg", "b/002.jpg"])
    with Index(path) as idx:
        assert "b/002.jpg" not in idx.search(q, SearchConf(top_n=40)).names
        removed = idx.search(q, SearchConf(top_n=40))
    info = compact_index(path)
    assert info["photos"] == 34 and info["removed_photos"] == 0 and len(info["segments"]) == 1
    with Index(path) as idx:
        after = idx.search(q, SearchConf(top_n=40))
        assert idx.photo_features("b/003.jpg")[0].shape == (len(b["b/003.jpg"]), 2)
    # compaction moves codes, it does not re-encode: the same neighbours and votes
    assert after.names == removed.names
    np.testing.assert_array_equal(after.votes, removed.votes)
    np.testing.assert_allclose(after.distances, removed.distances, atol=1e-6)
    assert sorted(os.listdir(path)) == sorted(["LOCK", "manifest.json", cb_name, info["segments"][0]["name"]])


def _file_hashes(path):
    m = store.read_manifest(path)
    out = {k: v["sha256"] for k, v in m["codebook"]["files"].items()}
    for i, seg in enumerate(m["segments"]):
        out.update({f"{i}/{k}": v["sha256"] for k, v in seg["files"].items()})
    return out


def test_same_bytes_and_rankings_whatever_the_threads(tmp_path):
    photos = make_photos("d/", 40, seed=6, n_range=(100, 140))
    feats = write_features(tmp_path / "d.h5", photos)
    one = build_index(tmp_path / "one.idx", [feats], PQ.replace(build_threads=1))
    two = build_index(tmp_path / "two.idx", [feats], PQ.replace(build_threads=2))
    assert one["bytes_on_disk"] == two["bytes_on_disk"]
    assert _file_hashes(tmp_path / "one.idx") == _file_hashes(tmp_path / "two.idx")
    q = noisy_query(photos["d/005.jpg"], 4)
    with Index(tmp_path / "one.idx") as i1, Index(tmp_path / "two.idx") as i2:
        c1 = i1.search(q, SearchConf(threads=1))
        c2 = i2.search(q, SearchConf(threads=2))
    assert c1.names == c2.names
    np.testing.assert_array_equal(c1.votes, c2.votes)
    np.testing.assert_array_equal(c1.db_idx, c2.db_idx)


def test_damaged_pq_files_are_named(tmp_path):
    photos = make_photos("e/", 20, seed=7)
    path = str(tmp_path / "db.idx")
    build_index(path, [write_features(tmp_path / "e.h5", photos)], PQ)
    m = store.read_manifest(path)
    for folder, fname in ((m["segments"][0]["name"], "codes.npy"), (m["codebook"]["name"], "coarse.ann")):
        p = os.path.join(path, folder, fname)
        data = open(p, "rb").read()
        with open(p, "wb") as f:
            f.write(data[: len(data) // 2])
        with pytest.raises(IndexFileError, match=rf"{fname}: truncated"):
            Index(path)
        with open(p, "wb") as f:
            f.write(data)
    m["codebook"]["conf"]["version"] = 99
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(IndexFileError, match="codebook version 99.*rebuild the index"):
        Index(path)


def test_version_1_indexes_still_open_and_grow(tmp_path):
    """A format-1 index (all Annoy) is read as it is; the next write records version 2."""
    a = make_photos("v/", 10, seed=8)
    path = str(tmp_path / "old.idx")
    build_index(path, [write_features(tmp_path / "a.h5", a)], IndexConf(kind="annoy", n_trees=2, build_threads=1))
    p = os.path.join(path, "manifest.json")
    m = json.load(open(p))
    m["format_version"] = 1
    del m["codebook"], m["index_conf"]["kind"], m["index_conf"]["shards"]
    for seg in m["segments"]:
        del seg["kind"]
    json.dump(m, open(p, "w"))
    with Index(path) as idx:
        assert idx.search(noisy_query(a["v/004.jpg"], 1)).names[0] == "v/004.jpg"
    info = add_to_index(path, write_features(tmp_path / "b.h5", make_photos("w/", 3, seed=9)))
    assert info["format_version"] == 2 and info["kind"] == "annoy" and info["photos"] == 13


# ---------------------------------------------------------------- shards


def test_shards_and_their_merge(tmp_path):
    photos = make_photos("s/", 30, seed=10, n_range=(40, 60))
    path = str(tmp_path / "db.idx")
    info = build_index(path, [write_features(tmp_path / "s.h5", photos)], PQ.replace(shards=3))
    assert len(info["segments"]) == 3 and info["photos"] == 30
    counts = [s["descriptors"] for s in info["segments"]]
    assert max(counts) - min(counts) < 2 * 60  # about equal, whole photos
    # the merge keeps the k nearest, ties to the earlier segment
    rows = np.array([[[5, 9], [1, 2]]])
    dist = np.array([[[0.5, 0.9], [0.5, 0.6]]], np.float32)
    r, d = merge_segments(rows, dist, 3)
    np.testing.assert_array_equal(r, [[5, 1, 2]])
    assert compact_index(path)["segments"] == info["segments"]  # already 3 shards: nothing to do


def test_local_dask_cluster_gives_the_same_answers(tmp_path):
    from distributed import Client, LocalCluster

    photos = make_photos("c/", 40, seed=12, n_range=(50, 80))
    path = str(tmp_path / "db.idx")
    build_index(path, [write_features(tmp_path / "c.h5", photos)], PQ.replace(shards=3))
    queries = [noisy_query(photos[n], i) for i, n in enumerate(["c/001.jpg", "c/017.jpg", "c/033.jpg"])]
    conf = SearchConf(top_n=10, pq_exact_below=0)
    with Index(path) as idx:
        local = [idx.search(q, conf) for q in queries]
        local_ex = idx.search(queries[0], conf, exclude=["c/001.jpg"])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client, Index(path, client=client) as idx:
        remote = [idx.search(q, conf) for q in queries]
        remote_ex = idx.search(queries[0], conf, exclude=["c/001.jpg"])
    for a, b in zip(local + [local_ex], remote + [remote_ex]):
        assert a.names == b.names
        np.testing.assert_array_equal(a.votes, b.votes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.db_idx, b.db_idx)
        np.testing.assert_array_equal(a.distances, b.distances)
    assert local[0].names[0] == "c/001.jpg" and local_ex.names[0] != "c/001.jpg"
