"""Crash safety: writers killed with SIGKILL at random moments of add and
compact. After every kill the index must open, answer queries and hold exactly
the photos of the last completed operation; the next writer breaks the stale
lock and sweeps the debris."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import signal
import time

import numpy as np
import pytest

from index import Index, IndexConf, SearchConf, add_to_index, build_index, compact_index, remove_from_index
from index import store

from .test_index_util import make_photos, noisy_query, write_features

CONF = IndexConf(n_trees=3, build_threads=1)


@pytest.fixture(autouse=True, params=["pq", "annoy"])
def kind(request, monkeypatch):
    """Every test runs on both kinds of segment."""
    monkeypatch.setattr(sys.modules[__name__], "CONF", IndexConf(kind=request.param, n_trees=3, build_threads=1))
    return request.param
ADD_KILLS = 18
COMPACT_KILLS = 16

# fork: the child starts in microseconds with everything imported, so the
# random kill times spread over the operation itself, not over interpreter start-up.
_ctx = mp.get_context("fork")


def _run(op: str, index_dir: str, arg) -> None:
    if op == "add":
        add_to_index(index_dir, arg, CONF)
    else:
        compact_index(index_dir, CONF)


def _timed(op, index_dir, arg) -> float:
    t = time.perf_counter()
    p = _ctx.Process(target=_run, args=(op, index_dir, arg))
    p.start()
    p.join()
    assert p.exitcode == 0
    return time.perf_counter() - t


def _kill_during(op, index_dir, arg, duration, rng) -> bool:
    """Starts ``op`` in a child and SIGKILLs it after a random delay; returns
    whether the child had already finished on its own."""
    p = _ctx.Process(target=_run, args=(op, index_dir, arg))
    p.start()
    time.sleep(rng.uniform(0, duration))
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    return p.exitcode == 0


def _check(index_dir, expected: set, photos: dict):
    """Opens a fresh reader: exactly ``expected`` photos, and a query of one of
    them finds it first."""
    with Index(index_dir) as idx:
        assert set(idx.photos()) == expected
        probe = sorted(expected)[len(expected) // 2]
        c = idx.search(noisy_query(photos[probe], 0), SearchConf(threads=1, top_n=5))
        assert c.names[0] == probe
        return idx.generation, len(idx.snapshot().segments)


@pytest.fixture()
def base(tmp_path):
    photos = make_photos("base/", 10, seed=0, n_range=(40, 80))
    index_dir = str(tmp_path / "crash.idx")
    build_index(index_dir, [write_features(tmp_path / "base.h5", photos)], CONF)
    return tmp_path, index_dir, photos


def test_sigkill_during_add(base, caplog):
    tmp, index_dir, photos = base
    rng = np.random.default_rng(1)
    batches = []
    for i in range(ADD_KILLS + 1):
        b = make_photos(f"add{i:02d}/", 6, seed=100 + i, n_range=(200, 400))
        photos.update(b)
        batches.append((set(b), write_features(tmp / f"add{i}.h5", b)))
    expected = set(f for f in photos if f.startswith("base/"))
    # one undisturbed add to learn how long an add takes here
    duration = _timed("add", index_dir, batches[0][1])
    expected |= batches[0][0]
    outcomes = {"before": 0, "after": 0}
    with caplog.at_level(logging.WARNING, logger="index"):
        for names, path in batches[1:]:
            finished = _kill_during("add", index_dir, path, 1.2 * duration, rng)
            with Index(index_dir) as idx:
                now = set(idx.photos())
            if now == expected | names:
                expected |= names
                outcomes["after"] += 1
            else:
                assert not finished, "a completed add must be visible"
                outcomes["before"] += 1
            _check(index_dir, expected, photos)
        # the next writer breaks the killed writer's lock and sweeps its leftovers
        with open(os.path.join(index_dir, "LOCK")) as f:
            stale = f.read()
        remove_from_index(index_dir, [sorted(expected)[0]], CONF)
        expected -= {sorted(expected)[0]}
    _check(index_dir, expected, photos)
    m = store.read_manifest(index_dir)
    left = set(os.listdir(index_dir)) - {"manifest.json", "LOCK"} - {s["name"] for s in m["segments"]} \
            - ({m["codebook"]["name"]} if m.get("codebook") else set())
    assert not left
    # the random kills must have hit the operation, not only its aftermath
    assert outcomes["before"] >= 3, outcomes
    if stale:
        assert f"broke a stale writer lock ({stale.strip()}" in caplog.text


def test_sigkill_during_compact(base):
    tmp, index_dir, photos = base
    rng = np.random.default_rng(2)
    expected = set(photos)
    state = {"i": 0}

    def fragment():
        """Two more segments and a removal, so there is something to compact."""
        for _ in range(2):
            state["i"] += 1
            b = make_photos(f"c{state['i']:02d}/", 5, seed=500 + state["i"], n_range=(150, 300))
            photos.update(b)
            add_to_index(index_dir, write_features(tmp / f"c{state['i']}.h5", b), CONF)
            expected.update(b)
        gone = sorted(expected)[state["i"] % len(expected)]
        remove_from_index(index_dir, [gone], CONF)
        expected.discard(gone)

    fragment()
    duration = _timed("compact", index_dir, None)
    outcomes = {"before": 0, "after": 0}
    for _ in range(COMPACT_KILLS):
        fragment()
        _, segs_before = _check(index_dir, expected, photos)
        finished = _kill_during("compact", index_dir, None, 1.2 * duration, rng)
        _, segs = _check(index_dir, expected, photos)  # compaction never changes the photos
        if segs == 1:
            outcomes["after"] += 1
        else:
            assert segs == segs_before and not finished
            outcomes["before"] += 1
    assert outcomes["before"] >= 3, outcomes
    info = compact_index(index_dir, CONF)
    assert info["photos"] == len(expected) and len(info["segments"]) == 1 and info["removed_photos"] == 0
    _check(index_dir, expected, photos)
