"""Concurrency: reader processes search while one writer adds, removes and
compacts. No reader may fail, and every answer must be exactly the answer of
one complete state (the one whose generation it reports)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import numpy as np
import pytest

from index import Index, IndexConf, SearchConf, add_to_index, build_index, compact_index, remove_from_index

from .test_index_util import make_photos, noisy_query, write_features

CONF = IndexConf(n_trees=3, build_threads=1)


@pytest.fixture(autouse=True, params=["pq", "annoy"])
def kind(request, monkeypatch):
    """Every test runs on both kinds of segment."""
    monkeypatch.setattr(sys.modules[__name__], "CONF", IndexConf(kind=request.param, n_trees=3, build_threads=1))
    return request.param


READERS = 3
_ctx = mp.get_context("fork")


def _answer(c) -> tuple:
    return tuple(c.names), tuple(c.votes.tolist()), tuple(np.round(c.distances, 5).tolist())


def _reader(index_dir, queries, stop, out):
    answers, errors = [], []
    try:
        with Index(index_dir) as idx:
            while not stop.is_set():
                for qi, q in enumerate(queries):
                    c = idx.search(q, SearchConf(threads=1, mode="exact", top_n=8))
                    answers.append((c.generation, qi, _answer(c)))
                # Leave the writer some CPU on a 2-core machine.
                time.sleep(0.01)
    except Exception as exc:  # reported to the parent, which fails the test
        errors.append(repr(exc))
    out.put((answers, errors))


def test_readers_see_only_complete_states(tmp_path):
    photos = make_photos("p0/", 8, seed=0, n_range=(40, 80))
    index_dir = str(tmp_path / "conc.idx")
    build_index(index_dir, [write_features(tmp_path / "p0.h5", photos)], CONF)
    batches = []
    for i in range(1, 6):
        b = make_photos(f"p{i}/", 5, seed=i, n_range=(150, 300))
        photos.update(b)
        batches.append(write_features(tmp_path / f"p{i}.h5", b))
    # queries resembling photos of several batches: each state answers differently
    queries = [noisy_query(photos[n], j) for j, n in enumerate(["p0/003.jpg", "p2/001.jpg", "p4/002.jpg",
                                                                  "p5/004.jpg"])]

    expected = {}

    def record():
        with Index(index_dir) as idx:
            expected[idx.generation] = [
                _answer(idx.search(q, SearchConf(threads=1, mode="exact", top_n=8))) for q in queries]

    record()
    stop = _ctx.Event()
    out = _ctx.Queue()
    procs = [_ctx.Process(target=_reader, args=(index_dir, queries, stop, out)) for _ in range(READERS)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    for i, path in enumerate(batches):
        add_to_index(index_dir, path, CONF)
        record()
        if i == 2:
            remove_from_index(index_dir, ["p2/001.jpg", "p0/003.jpg"], CONF)
            record()
        if i == 3:
            compact_index(index_dir, CONF)  # deletes the segments readers have open
            record()
        time.sleep(0.1)
    time.sleep(0.3)
    stop.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    seen = set()
    n = 0
    for answers, errors in results:
        assert errors == []
        for gen, qi, ans in answers:
            assert ans == expected[gen][qi], f"answer of generation {gen} differs from that state's"
            seen.add(gen)
            n += 1
    assert n > 20
    # the readers followed the writer through several states
    assert len(seen) >= 3, seen
