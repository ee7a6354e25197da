"""Index writing: build/add/remove/compact/info round trips, the lock, and
every error path (the last good state must stay usable)."""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pytest

from common.files import atomic_write_bytes

from index import (Index, IndexConf, IndexFileError, IndexLockedError, SearchConf, add_to_index, build_index,
                   build_index_from_features, compact_index, index_info, remove_from_index)
from index import store
from index.store import WriterLock


from .test_index_util import CONF, make_photos, noisy_query, write_features

# The "annoy" kind: these tests name its files; tests/test_index_pq.py repeats them for "pq".
FAST = IndexConf(kind="annoy", n_trees=2, build_threads=1)


@pytest.fixture()
def two_files(tmp_path):
    a = make_photos("a/", 12, seed=1)
    b = make_photos("b/", 8, seed=2)
    return a, b, write_features(tmp_path / "a.h5", a), write_features(tmp_path / "b.h5", b)


def segment_files(index_dir):
    out = {}
    for entry in sorted(os.listdir(index_dir)):
        if entry.startswith("seg-"):
            for f in os.listdir(os.path.join(index_dir, entry)):
                p = os.path.join(index_dir, entry, f)
                st = os.stat(p)
                out[p] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def test_build_add_remove_compact_info_round_trip(tmp_path, two_files):
    a, b, fa, fb = two_files
    idx_dir = str(tmp_path / "db.idx")
    info = build_index(idx_dir, [fa], FAST)
    assert info["photos"] == 12 and len(info["segments"]) == 1
    assert info["descriptors"] == sum(len(f) for f in a.values())
    assert info["extractor_conf"] == CONF and info["index_conf"]["n_trees"] == 2
    before = segment_files(idx_dir)

    info = add_to_index(idx_dir, fb, IndexConf(kind="pq", n_trees=9, build_threads=1))
    assert info["photos"] == 20 and len(info["segments"]) == 2
    # add leaves existing segments untouched, and keeps the index's tree count
    after = segment_files(idx_dir)
    assert all(after[p] == v for p, v in before.items())
    assert info["segments"][1]["n_trees"] == 2

    with Index(idx_dir) as idx:
        assert set(idx.photos()) == set(a) | set(b)
        cands = idx.search(noisy_query(b["b/003.jpg"], 0), SearchConf(top_n=3))
        assert cands.names[0] == "b/003.jpg"

        gone = ["b/003.jpg", "a/000.jpg"]
        info = remove_from_index(idx_dir, gone)
        assert info["photos"] == 18 and info["removed_photos"] == 2
        assert info["descriptors"] == info["stored_descriptors"] - len(b["b/003.jpg"]) - len(a["a/000.jpg"])
        # an open reader honours the tombstones at its next search
        cands = idx.search(noisy_query(b["b/003.jpg"], 0), SearchConf(top_n=50))
        assert not set(gone) & set(cands.names)
        ref = idx.search(noisy_query(a["a/005.jpg"], 1), SearchConf(mode="exact"))

        bytes_before = info["bytes_on_disk"]
        info = compact_index(idx_dir, FAST)
        assert info["photos"] == 18 and info["removed_photos"] == 0 and len(info["segments"]) == 1
        assert info["descriptors"] == info["stored_descriptors"]
        assert info["bytes_on_disk"] < bytes_before
        got = idx.search(noisy_query(a["a/005.jpg"], 1), SearchConf(mode="exact"))
        assert got.generation == ref.generation + 1
        # photo ids survive compaction, so answers are identical
        assert got.names == ref.names and np.array_equal(got.photo_ids, ref.photo_ids)
        assert np.array_equal(got.votes, ref.votes) and np.allclose(got.distances, ref.distances)
    # the compacted-away segments are gone from disk
    assert sorted(e for e in os.listdir(idx_dir) if e.startswith("seg-")) == [info["segments"][0]["name"]]
    # a removed name can be added again later; it gets a new photo id
    again = make_photos("b/", 8, seed=2)
    write_features(tmp_path / "again.h5", {"b/003.jpg": again["b/003.jpg"]})
    info = add_to_index(idx_dir, tmp_path / "again.h5", FAST)
    assert info["photos"] == 19


def test_build_from_several_files_and_overwrite(tmp_path, two_files):
    a, b, fa, fb = two_files
    idx_dir = tmp_path / "db.idx"
    info = build_index(idx_dir, [fa, fb], FAST)
    assert info["photos"] == 20 and len(info["segments"]) == 1
    with pytest.raises(ValueError, match="already exists"):
        build_index(idx_dir, [fa], FAST)
    with Index(idx_dir) as reader:
        info = build_index(idx_dir, [fb], FAST, overwrite=True)
        assert info["photos"] == 8 and info["generation"] == 2
        assert set(reader.photos()) == set(b)  # the open reader moved to the new index
    with pytest.raises(ValueError, match="more than one input"):
        build_index(tmp_path / "dup.idx", [fa, fa], FAST)


def test_build_from_features_in_memory(tmp_path):
    photos = make_photos("m/", 5, seed=3)
    info = build_index_from_features(tmp_path / "m.idx", photos.items(), CONF, FAST)
    assert info["photos"] == 5 and info["extractor_conf"] == CONF


def test_add_refuses_duplicates_unless_skipped(tmp_path, two_files):
    a, b, fa, fb = two_files
    idx_dir = tmp_path / "db.idx"
    build_index(idx_dir, [fa], FAST)
    more = dict(list(a.items())[:3]) | make_photos("c/", 4, seed=5)
    fc = write_features(tmp_path / "c.h5", more)
    with pytest.raises(ValueError, match=r"3 photo\(s\) already in .*a/000.jpg"):
        add_to_index(idx_dir, fc, FAST)
    assert index_info(idx_dir)["generation"] == 1
    info = add_to_index(idx_dir, fc, FAST, skip_existing=True)
    assert info["photos"] == 16 and info["segments"][1]["photos"] == 4
    # nothing new: nothing written
    info = add_to_index(idx_dir, fc, FAST, skip_existing=True)
    assert info["generation"] == 2


def test_add_refuses_other_extractor_conf(tmp_path, two_files):
    a, b, fa, fb = two_files
    idx_dir = tmp_path / "db.idx"
    build_index(idx_dir, [fa], FAST)
    other = dict(CONF, backbone="resnet50", scales=[0.5, 1.0])
    fo = write_features(tmp_path / "other.h5", make_photos("o/", 2, seed=9), other)
    with pytest.raises(ValueError,
                       match=r"different extractor conf.*backbone: 'synthetic' vs 'resnet50'.*scales"):
        add_to_index(idx_dir, fo, FAST)
    with pytest.raises(ValueError, match="different extractor conf"):
        build_index(tmp_path / "mixed.idx", [fa, fo], FAST)
    # and at search time, for a query whose conf is given
    with Index(idx_dir) as idx:
        q = noisy_query(a["a/001.jpg"], 0)
        idx.search(q, query_conf=CONF)
        with pytest.raises(ValueError, match=r"different extractor conf.*pca_dim: 16 vs 40"):
            idx.search(q, query_conf=dict(CONF, pca_dim=40))
        wide = make_photos("w/", 1, seed=1, dim=24)["w/000.jpg"]
        with pytest.raises(ValueError, match="24-D descriptors, the index .* holds 16-D"):
            idx.search(wide)
    assert index_info(idx_dir)["photos"] == 12


def test_remove_unknown_names_changes_nothing(tmp_path, two_files):
    _, _, fa, _ = two_files
    idx_dir = tmp_path / "db.idx"
    build_index(idx_dir, [fa], FAST)
    with pytest.raises(ValueError, match="no photo named 'nope.jpg'"):
        remove_from_index(idx_dir, ["a/001.jpg", "nope.jpg"])
    info = index_info(idx_dir)
    assert info["photos"] == 12 and info["generation"] == 1
    remove_from_index(idx_dir, ["a/001.jpg"])
    with pytest.raises(ValueError, match="no photo named 'a/001.jpg'"):
        remove_from_index(idx_dir, ["a/001.jpg"])


def test_compact_everything_removed(tmp_path, two_files):
    a, _, fa, _ = two_files
    idx_dir = tmp_path / "db.idx"
    build_index(idx_dir, [fa], FAST)
    remove_from_index(idx_dir, list(a))
    info = compact_index(idx_dir)
    assert info["photos"] == 0 and info["segments"] == []
    with Index(idx_dir) as idx:
        assert len(idx.search(noisy_query(a["a/001.jpg"], 0))) == 0


def test_confs_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown IndexConf key.*n_tree"):
        IndexConf.from_dict({"n_tree": 3})
    with pytest.raises(ValueError, match="unknown SearchConf key.*searchk"):
        SearchConf.from_dict({"searchk": 3})
    assert SearchConf.from_dict({"k": 4}).k == 4
    with pytest.raises(ValueError, match="mode"):
        SearchConf(mode="fast")
    with pytest.raises(ValueError, match="n_trees"):
        IndexConf(n_trees=0)


# ---------------------------------------------------------------- errors


@pytest.fixture()
def built(tmp_path, two_files):
    a, b, fa, fb = two_files
    idx_dir = str(tmp_path / "db.idx")
    build_index(idx_dir, [fa], FAST)
    add_to_index(idx_dir, fb, FAST)
    return idx_dir, a, b


def _seg_file(idx_dir, name, which=0):
    m = store.read_manifest(idx_dir)
    return os.path.join(idx_dir, m["segments"][which]["name"], name)


def test_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such index directory"):
        Index(tmp_path / "nope")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"empty/manifest.json: missing"):
        Index(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such index directory"):
        add_to_index(tmp_path / "nope", tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError, match="no such features file"):
        build_index(tmp_path / "new", [tmp_path / "x.h5"])
    assert not os.path.exists(tmp_path / "empty" / "LOCK")


def test_corrupt_manifest(built):
    idx_dir, _, _ = built
    with open(os.path.join(idx_dir, "manifest.json"), "wb") as f:
        f.write(b"\x00garbage{")
    with pytest.raises(IndexFileError, match=r"manifest.json: corrupt manifest"):
        Index(idx_dir)
    with pytest.raises(IndexFileError, match=r"manifest.json: corrupt manifest"):
        index_info(idx_dir)


def test_wrong_format_version(built):
    idx_dir, _, _ = built
    p = os.path.join(idx_dir, "manifest.json")
    m = json.load(open(p))
    m["format_version"] = 99
    json.dump(m, open(p, "w"))
    with pytest.raises(IndexFileError,
                       match=r"manifest.json: index format version 99, this engine reads versions 1, 2"):
        Index(idx_dir)


@pytest.mark.parametrize("name", ["annoy.ann", "descriptors.npy", "desc_xy.npy", "photo_names.json"])
def test_truncated_segment_file(built, name):
    idx_dir, _, _ = built
    p = _seg_file(idx_dir, name, 1)
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(IndexFileError,
                       match=rf"{name}: truncated: {size // 2} bytes, the manifest says {size}"):
        Index(idx_dir)


def test_missing_segment_file(built):
    idx_dir, _, _ = built
    p = _seg_file(idx_dir, "desc_photo.npy")
    os.remove(p)
    with pytest.raises(IndexFileError, match=r"desc_photo.npy: missing"):
        Index(idx_dir)


def test_corrupt_segment_files(built):
    idx_dir, _, _ = built
    p = _seg_file(idx_dir, "desc_keypoint.npy")
    data = bytearray(open(p, "rb").read())
    data[:6] = b"NOTNPY"  # same size: only the header check catches it
    open(p, "wb").write(bytes(data))
    with pytest.raises(IndexFileError, match=r"desc_keypoint.npy: corrupt array file"):
        Index(idx_dir)


def test_bit_flip_caught_by_full_check(built):
    idx_dir, _, _ = built
    p = _seg_file(idx_dir, "desc_xy.npy")
    data = bytearray(open(p, "rb").read())
    data[-1] ^= 0xFF
    open(p, "wb").write(bytes(data))
    Index(idx_dir).close()  # sizes and headers are fine: the cheap open succeeds
    with pytest.raises(IndexFileError, match=r"desc_xy.npy: corrupt \(SHA-256 differs"):
        index_info(idx_dir, check="full")
    with pytest.raises(IndexFileError, match="SHA-256"):
        Index(idx_dir, check="full")


def test_bad_features_file_leaves_index_usable(built, tmp_path):
    idx_dir, a, b = built
    good = write_features(tmp_path / "c.h5", make_photos("c/", 6, seed=7, n_range=(200, 300)))
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    gen = index_info(idx_dir)["generation"]
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=str(bad)):
            add_to_index(idx_dir, bad, FAST)
    info = index_info(idx_dir)
    assert info["generation"] == gen and info["photos"] == 20
    with Index(idx_dir) as idx:
        assert idx.search(noisy_query(a["a/002.jpg"], 3)).names[0] == "a/002.jpg"
    # the next writer sweeps whatever the failed ones left
    add_to_index(idx_dir, good, FAST)
    assert not [e for e in os.listdir(idx_dir) if e.startswith(".tmp-")]


def test_reader_keeps_last_good_state(built):
    idx_dir, a, _ = built
    with Index(idx_dir) as idx:
        q = noisy_query(a["a/004.jpg"], 2)
        ref = idx.search(q)
        atomic_write_bytes(os.path.join(idx_dir, "manifest.json"), b"{broken")
        got = idx.search(q)
        assert got.names == ref.names and got.generation == ref.generation


def test_lock_held_by_live_writer(built):
    idx_dir, _, _ = built
    with WriterLock(idx_dir):
        with pytest.raises(IndexLockedError, match=rf"LOCK: the index is being written by another process "
                                                   rf"\(pid={os.getpid()}"):
            remove_from_index(idx_dir, ["a/001.jpg"])
        with pytest.raises(IndexLockedError):
            compact_index(idx_dir, IndexConf(lock_timeout=0.2))
    remove_from_index(idx_dir, ["a/001.jpg"])


def test_stale_lock_is_broken_with_a_message(built, caplog):
    idx_dir, _, _ = built
    with open(os.path.join(idx_dir, "LOCK"), "w") as f:
        f.write("pid=999999999 host=elsewhere since=2020-01-01T00:00:00\n")
    with caplog.at_level(logging.WARNING, logger="index"):
        remove_from_index(idx_dir, ["a/001.jpg"])
    assert "broke a stale writer lock (pid=999999999" in caplog.text
    assert "no longer running" in caplog.text
    assert open(os.path.join(idx_dir, "LOCK")).read() == ""


def test_index_import_is_cheap():
    import subprocess

    code = ("import sys, index; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'numba', 'keras') or m == 'delf.extractor']; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_cli(tmp_path, two_files, capsys):
    from tools import cmd_index
    import argparse

    a, b, fa, fb = two_files
    parser = argparse.ArgumentParser(prog="delf")
    sub = parser.add_subparsers(dest="command")
    cmd_index.register(sub)

    def run(*argv):
        args = parser.parse_args(["index", *map(str, argv)])
        assert args.func(args) == 0
        return capsys.readouterr().out

    idx_dir = tmp_path / "cli.idx"
    out = run("build", idx_dir, fa, "--kind", "annoy", "--trees", 3, "--build-threads", 1)
    assert "photos       12" in out and "annoy: 3 trees" in out
    out = run("add", idx_dir, fb)
    assert "photos       20" in out and "segments     2" in out
    out = run("remove", idx_dir, "a/001.jpg", "b/002.jpg")
    assert "18 (2 removed, awaiting compact)" in out
    out = run("compact", idx_dir)
    assert "photos       18\n" in out and "segments     1" in out
    out = run("info", idx_dir, "--check", "--json", tmp_path / "info.json")
    assert "every file matches" in out
    assert json.load(open(tmp_path / "info.json"))["photos"] == 18
    # the default kind, in shards
    out = run("build", tmp_path / "pq.idx", fa, "--shards", 2, "--pq-m", 8)
    assert "kind         pq: " in out and "8 codes" in out and "segments     2" in out
    assert json.load(open(tmp_path / "info.json"))["kind"] == "annoy"
