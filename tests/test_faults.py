"""Every subcommand of `delf`, run as users run it (a subprocess), against the
faults that apply to it: missing, empty, truncated, foreign-format and corrupt
inputs; a folder where a file is expected and the reverse; an unwritable
output folder; a closed stdout; NaN and infinite values; a second writer.

Each case must end with exit status 2, exactly one line on stderr that names
the file (or the option) and the problem, no traceback, and every file that
was there before byte-identical, with nothing new left behind.

Unwritable folders: root ignores permission bits, so the folder is made
immutable (`chattr +i`); where the file system refuses that, a read-only bind
mount is tried, and where both are refused those cases skip and say why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from .conftest import REPO, SAMPLES

S1, S2 = str(SAMPLES / "lund_01.jpg"), str(SAMPLES / "lund_02.jpg")


def _run(argv, cwd, stdout_closed: bool = False):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    if stdout_closed:
        r, w = os.pipe()
        os.close(r)
        try:
            p = subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=cwd, stdout=w,
                               stderr=subprocess.PIPE, text=True, timeout=300, env=env)
        finally:
            os.close(w)
        return p.returncode, "", p.stderr
    p = subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=cwd, capture_output=True, text=True,
                       timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


def _snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _immutable(folder: Path) -> str | None:
    """Make ``folder`` unwritable even for root; returns how, or None when the file system refuses."""
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return "chattr"
    mnt = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mnt.returncode == 0 and subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)],
                                              capture_output=True).returncode == 0:
        return "mount"
    return None


def _release(folder: Path, how: str | None) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    elif how == "mount":
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, small_extractor):
    """The user's files: good and damaged features files, an index, photos, folders."""
    from delf.extract import extract_to_h5
    from index import IndexConf, build_index

    root = tmp_path_factory.mktemp("faults")
    good = root / "good.h5"
    extract_to_h5([S1, S2], str(good), extractor=small_extractor, progress=False)
    build_index(root / "idx", [good], IndexConf(n_trees=2, build_threads=1))
    for name, edit in (("nan.h5", ("lund_01.jpg/descriptors", np.nan)), ("inf.h5", ("lund_02.jpg/locations", np.inf))):
        shutil.copy(good, root / name)
        with h5py.File(root / name, "a") as f:
            d = f[edit[0]][()]
            d[0, 0] = edit[1]
            f[edit[0]][...] = d
    shutil.copy(good, root / "nogroup.h5")
    with h5py.File(root / "nogroup.h5", "a") as f:
        del f["lund_01.jpg/descriptors"]
    data = good.read_bytes()
    (root / "trunc.h5").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[2048:6144] = bytes(range(256)) * 16  # object headers overwritten, the superblock intact
    (root / "corrupt.h5").write_bytes(bytes(corrupt))
    (root / "empty.h5").write_bytes(b"")
    shutil.copy(S1, root / "foreign.h5")
    (root / "text.jpg").write_text("not a photo\n")
    (root / "empty.jpg").write_bytes(b"")
    (root / "trunc.jpg").write_bytes(Path(S1).read_bytes()[:2048])
    pca = (REPO / "delf" / "data" / "pca_lite0.npz").read_bytes()
    (root / "trunc.npz").write_bytes(pca[:100])
    (root / "empty.npz").write_bytes(b"")
    (root / "foreign.npz").write_text("mean,components\n")
    (root / "empty.json").write_bytes(b"")
    (root / "labels.csv").write_text("photo\nlund_01.jpg\n")
    (root / "adir").mkdir()
    (root / "afile").write_text("a file\n")
    (root / "photos").mkdir()
    shutil.copy(S1, root / "photos" / "lund_01.jpg")
    (root / "broken.idx").mkdir()
    (root / "broken.idx" / "manifest.json").write_text("{broken")
    (root / "ro").mkdir()
    return root


# (id, argv, what stderr must name). Paths are relative to the workspace.
CASES = [
    # extract
    ("extract-missing", ["extract", "missing.jpg", "--out", "o.h5"], "missing.jpg"),
    ("extract-foreign", ["extract", "text.jpg", "--out", "o.h5"], "text.jpg"),
    ("extract-empty", ["extract", "empty.jpg", "--out", "o.h5"], "empty.jpg"),
    ("extract-truncated", ["extract", "trunc.jpg", "--out", "o.h5"], "trunc.jpg"),
    ("extract-out-is-folder", ["extract", S1, "--out", "adir"], "adir"),
    ("extract-out-under-file", ["extract", S1, "--out", "afile/o.h5"], "afile"),
    ("extract-unwritable", ["extract", S1, "--out", "ro/o.h5"], "ro/o.h5"),
    ("extract-pca-truncated", ["extract", S1, "--out", "o.h5", "--pca", "trunc.npz"], "trunc.npz"),
    ("extract-pca-foreign", ["extract", S1, "--out", "o.h5", "--pca", "foreign.npz"], "foreign.npz"),
    ("extract-attention-empty", ["extract", S1, "--out", "o.h5", "--scoring", "attention",
                                 "--attention-weights", "empty.npz"], "empty.npz"),
    ("extract-into-foreign", ["extract", S1, "--out", "foreign.h5"], "foreign.h5"),
    ("extract-closed-stdout", ["extract", "text.jpg", "missing.jpg", "--out", "o.h5", "--quiet"], None),
    # pca fit
    ("pca-missing", ["pca", "fit", "missing", "--out", "p.npz"], "missing"),
    ("pca-unwritable", ["pca", "fit", "photos", "--out", "ro/p.npz"], "ro/p.npz"),
    # demo
    ("demo-out-is-file", ["demo", "--out", "afile"], "afile"),
    ("demo-unwritable", ["demo", "--out", "ro/demo"], "ro/demo"),
    # match
    ("match-missing", ["match", "missing.jpg", S2, "--out", "m.png"], "missing.jpg"),
    ("match-foreign", ["match", "text.jpg", S2, "--out", "m.png"], "text.jpg"),
    ("match-folder-as-photo", ["match", "adir", S2, "--out", "m.png"], "adir"),
    ("match-out-is-folder", ["match", S1, S2, "--out", "adir"], "adir"),
    ("match-unwritable", ["match", S1, S2, "--out", "ro/m.png"], "ro/m.png"),
    # index build
    ("build-missing", ["index", "build", "new.idx", "missing.h5"], "missing.h5"),
    ("build-empty", ["index", "build", "new.idx", "empty.h5"], "empty.h5"),
    ("build-truncated", ["index", "build", "new.idx", "trunc.h5"], "trunc.h5"),
    ("build-too-many-codes", ["index", "build", "new.idx", "good.h5", "--pq-m", "99"], "pq_m"),
    ("build-foreign", ["index", "build", "new.idx", "foreign.h5"], "foreign.h5"),
    ("build-corrupt", ["index", "build", "new.idx", "corrupt.h5"], "corrupt.h5"),
    ("build-no-datasets", ["index", "build", "new.idx", "nogroup.h5"], "nogroup.h5"),
    ("build-nan", ["index", "build", "new.idx", "nan.h5"], "nan.h5"),
    ("build-inf", ["index", "build", "new.idx", "inf.h5"], "inf.h5"),
    ("build-folder-as-file", ["index", "build", "new.idx", "adir"], "adir"),
    ("build-index-is-file", ["index", "build", "afile", "good.h5"], "afile"),
    ("build-unwritable", ["index", "build", "ro/new.idx", "good.h5"], "ro/new.idx"),
    ("build-exists", ["index", "build", "idx", "good.h5"], "idx"),
    # index add / remove / compact / info
    ("add-nan", ["index", "add", "idx", "nan.h5"], "nan.h5"),
    ("add-truncated", ["index", "add", "idx", "trunc.h5"], "trunc.h5"),
    ("add-duplicate", ["index", "add", "idx", "good.h5"], "good.h5"),
    ("add-missing-index", ["index", "add", "missing.idx", "good.h5"], "missing.idx"),
    ("add-broken-index", ["index", "add", "broken.idx", "good.h5"], "broken.idx"),
    ("add-second-writer", ["index", "add", "idx", "good.h5", "--skip-existing"], "idx"),
    ("remove-unknown", ["index", "remove", "idx", "nobody.jpg"], "nobody.jpg"),
    ("remove-second-writer", ["index", "remove", "idx", "lund_01.jpg"], "idx"),
    ("compact-second-writer", ["index", "compact", "idx"], "idx"),
    ("compact-missing", ["index", "compact", "missing.idx"], "missing.idx"),
    ("info-missing", ["index", "info", "missing.idx"], "missing.idx"),
    ("info-broken", ["index", "info", "broken.idx"], "broken.idx"),
    ("info-file-as-index", ["index", "info", "afile"], "afile"),
    ("info-closed-stdout", ["index", "info", "idx"], "stdout"),
    # search
    ("search-missing-index", ["search", "missing.idx", S1], "missing.idx"),
    ("search-broken-index", ["search", "broken.idx", S1], "broken.idx"),
    ("search-missing-query", ["search", "idx", "missing.jpg"], "missing.jpg"),
    ("search-foreign-query", ["search", "idx", "text.jpg"], "text.jpg"),
    ("search-nan-query", ["search", "idx", "nan.h5"], "nan.h5"),
    ("search-inf-query", ["search", "idx", "inf.h5"], "inf.h5"),
    ("search-truncated-query", ["search", "idx", "trunc.h5"], "trunc.h5"),
    ("search-json-is-folder", ["search", "idx", "good.h5", "--json", "adir"], "adir"),
    ("search-json-unwritable", ["search", "idx", "good.h5", "--json", "ro/a.json"], "ro/a.json"),
    ("search-labels-missing", ["search", "idx", "good.h5", "--labels", "missing.csv"], "missing.csv"),
    ("search-labels-bad", ["search", "idx", "good.h5", "--labels", "labels.csv"], "labels.csv"),
    ("search-calibration-empty", ["search", "idx", "good.h5", "--calibration", "empty.json"], "empty.json"),
    ("search-draw-without-images", ["search", "idx", "good.h5", "--draw", "pics"], "--db-images"),
    ("search-closed-stdout", ["search", "idx", "good.h5"], "stdout"),
    ("search-workers-zero", ["search", "idx", "good.h5", "--workers", "0"], "--workers"),
    # train
    ("train-attention-missing", ["train", "attention", "--images", "missing", "--labels", "folders",
                                 "--out", "w.npz"], "missing"),
    ("train-attention-labels", ["train", "attention", "--images", "photos", "--labels", "labels.csv",
                                "--out", "w.npz"], "labels.csv"),
    ("train-attention-unwritable", ["train", "attention", "--images", "photos", "--labels", "folders",
                                    "--out", "ro/w.npz"], "ro/w.npz"),
    ("train-fmaps-missing", ["train", "fmaps", "missing.jpg", "--cache", "cache"], "missing.jpg"),
    ("train-fmaps-unwritable", ["train", "fmaps", "photos", "--cache", "ro/cache"], "ro/cache"),
    ("train-features-out-is-folder", ["train", "features", "photos", "--cache", "cache", "--out", "adir"], "adir"),
    # collection
    ("collection-missing", ["collection", "missing", "--out", "coll"], "missing"),
    ("collection-out-is-file", ["collection", "photos", "--out", "afile"], "afile"),
    ("collection-unwritable", ["collection", "photos", "--out", "ro/coll"], "ro/coll"),
    # calibrate
    ("calibrate-missing", ["calibrate", "--images", "missing", "--labels", "labels.csv", "--out", "c.json"],
     "missing"),
    ("calibrate-labels-bad", ["calibrate", "--images", "photos", "--labels", "labels.csv", "--out", "c.json"],
     "labels.csv"),
    ("calibrate-model-version-bad", ["calibrate", "--images", "photos", "--labels", "labels.csv", "--out", "c.json",
                                     "--model-version", "5"], "--model-version"),
    ("calibrate-unwritable", ["calibrate", "--images", "photos", "--labels", "labels.csv", "--out", "ro/c.json"],
     "ro/c.json"),
    # evaluate
    ("evaluate-roxford-missing", ["evaluate", "roxford", "--data", "missing", "--work", "w"], "missing"),
    ("evaluate-roxford-unwritable", ["evaluate", "roxford", "--data", "adir", "--work", "ro/w"], "ro/w"),
    ("evaluate-reject-missing", ["evaluate", "reject", "--data", "missing", "--work", "w"], "missing"),
    ("evaluate-reject-calibration-empty", ["evaluate", "reject", "--data", "adir", "--work", "w",
                                           "--calibration", "empty.json"], "empty.json"),
    ("evaluate-reject-compare-missing", ["evaluate", "reject", "--data", "adir", "--work", "w",
                                         "--compare-calibration", "missing.json"], "missing.json"),
    ("evaluate-reject-compare-empty", ["evaluate", "reject", "--data", "adir", "--work", "w",
                                       "--compare-calibration", "empty.json"], "empty.json"),
    ("evaluate-loo-missing", ["evaluate", "loo", "--data", "missing", "--work", "w"], "missing"),
    ("evaluate-collection-missing", ["evaluate", "collection", "--data", "missing", "--out", "c"], "missing"),
    # bench
    ("bench-homography-missing", ["bench", "homography", "--data", "missing"], "missing"),
    ("bench-extract-missing", ["bench", "extract", "--data", "missing"], "missing"),
    ("bench-pairs-missing", ["bench", "pairs", "--images", "missing", "--labels", "missing.csv"], "missing"),
    ("bench-ransac-missing", ["bench", "ransac", "--data", "missing", "--json", "r.json"], "missing"),
    ("bench-ransac-unwritable", ["bench", "ransac", "--data", "adir", "--json", "ro/r.json"], "ro/r.json"),
    ("bench-index-truncated", ["bench", "index", "--features", "trunc.h5", "--gnd", "afile", "--json", "b.json"],
     "trunc.h5"),
    ("bench-index-bad-scale", ["bench", "index", "--features", "good.h5", "--gnd", "afile", "--json", "b.json",
                               "--scale", "ten"], "--scale"),
    # serve (bad inputs to a running server are tests/test_serve.py's)
    ("serve-missing-index", ["serve", "missing.idx", "--port", "0"], "missing.idx"),
    ("serve-broken-index", ["serve", "broken.idx", "--port", "0"], "broken.idx"),
    ("serve-labels-missing", ["serve", "idx", "--port", "0", "--labels", "missing.csv"], "missing.csv"),
    ("serve-db-images-is-file", ["serve", "idx", "--port", "0", "--db-images", "afile"], "afile"),
    ("bench-serve-missing-index", ["bench", "serve", "--index", "missing.idx", "--queries", "photos",
                                   "--json", "b.json"], "missing.idx"),
    # argument errors are ordinary mistakes too
    ("bad-option", ["search", "idx", S1, "--top", "many"], "--top"),
    ("unknown-command", ["serach", "idx", S1], "serach"),
]

NEEDS_RO = {c[0] for c in CASES if any(str(a).startswith("ro/") for a in c[1])}
SECOND_WRITER = {"add-second-writer", "remove-second-writer", "compact-second-writer"}
CLOSED_STDOUT = {"extract-closed-stdout", "info-closed-stdout", "search-closed-stdout"}


def test_the_matrix_covers_every_subcommand():
    from tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set()
    for cmd, p in sub.choices.items():
        inner = [a for a in p._actions if getattr(a, "choices", None) and a.dest != "command"
                 and isinstance(a.choices, dict)]
        names |= {f"{cmd} {s}" for a in inner for s in a.choices} if inner else {cmd}
    covered = {" ".join(argv[:2]) if " ".join(argv[:2]) in names else argv[0] for _, argv, _ in CASES}
    assert names - covered == set()


@pytest.mark.slow
@pytest.mark.parametrize("case, argv, names", CASES, ids=[c[0] for c in CASES])
def test_fault(ws, case, argv, names):
    from index.store import WriterLock

    before = _snapshot(ws)
    how = None
    lock = None
    try:
        if case in NEEDS_RO:
            how = _immutable(ws / "ro")
            if how is None:
                pytest.skip("this file system refuses both chattr +i and a read-only bind mount")
        if case in SECOND_WRITER:
            lock = WriterLock(str(ws / "idx")).acquire()
        rc, out, err = _run(argv, ws, stdout_closed=case in CLOSED_STDOUT)
    finally:
        if lock is not None:
            lock.release()
        _release(ws / "ro", how)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert rc == 2, (rc, out, err)
    if case == "extract-closed-stdout":
        # A batch reports each unusable photo on its own line; the closed stdout is one more.
        assert any("text.jpg" in line for line in lines) and any("missing.jpg" in line for line in lines)
        assert len(lines) == 3 and "stdout" in lines[-1], err
    else:
        assert len(lines) == 1, err
        assert names in lines[0], err
    after = _snapshot(ws)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}


@pytest.mark.slow
def test_a_second_writer_waits_then_fails_cleanly_while_readers_search(ws):
    """Two writers at once: the second is refused with one line, and a search running meanwhile
    still answers."""
    from index.store import WriterLock

    results = {}
    with WriterLock(str(ws / "idx")):
        t = threading.Thread(target=lambda: results.update(search=_run(["search", "idx", "good.h5"], ws)))
        t.start()
        results["add"] = _run(["index", "add", "idx", "good.h5", "--skip-existing"], ws)
        t.join()
    assert results["add"][0] == 2 and "idx" in results["add"][2]
    assert results["search"][0] == 0 and "MATCH" in results["search"][1]
