"""Search: exact mode against a NumPy reference, Annoy against exact, votes and
the Candidates handed to verification."""

from __future__ import annotations

import numpy as np
import pytest

from index import Candidates, Index, IndexConf, SearchConf, add_to_index, build_index, remove_from_index
from index.kernels import topk_update
from index.search import match_weights

from .test_index_util import brute_force_knn, make_photos, noisy_query, unit, write_features

FAST = IndexConf(kind="annoy", n_trees=4, build_threads=1)  # Annoy against exact; pq: test_index_pq.py


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    photos = make_photos("p/", 40, seed=11)
    names = list(photos)
    f1 = write_features(tmp / "one.h5", dict(list(photos.items())[:25]))
    f2 = write_features(tmp / "two.h5", dict(list(photos.items())[25:]))
    single = str(tmp / "single.idx")
    build_index(single, [f1, f2], FAST)
    multi = str(tmp / "multi.idx")
    build_index(multi, [f1], FAST)
    add_to_index(multi, f2, FAST)
    # rows of the single-segment index, in photo order
    desc = np.concatenate([photos[n].descriptors for n in names])
    return {"photos": photos, "names": names, "single": single, "multi": multi, "desc": desc, "tmp": tmp}


def test_topk_kernel_matches_sort():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((7, 500)).astype(np.float32)
    best_s = np.full((7, 5), -np.inf, np.float32)
    best_i = np.full((7, 5), -1, np.int64)
    topk_update(sim[:, :200], 0, best_s, best_i)
    topk_update(sim[:, 200:], 200, best_s, best_i)
    order = np.argsort(-sim, axis=1)[:, :5]
    assert np.array_equal(np.sort(best_i, axis=1), np.sort(order, axis=1))
    assert np.allclose(np.sort(best_s, axis=1), np.sort(np.take_along_axis(sim, order, 1), axis=1))


@pytest.mark.parametrize("which", ["single", "multi"])
def test_exact_knn_equals_numpy_reference(db, which):
    q = unit(np.random.default_rng(1).standard_normal((37, 16)))
    with Index(db[which]) as idx:
        rows, dist, modes, snap = idx.knn(q, SearchConf(mode="exact", k=7))
        assert modes == ["exact"] * len(snap.segments)
        photo = snap.gather("desc_photo", rows.ravel())
        kp = snap.gather("desc_keypoint", rows.ravel())
    ref_rows, ref_dist = brute_force_knn(db["desc"], q, 7)
    # global rows differ between layouts; (photo, keypoint) identify a descriptor
    offsets = np.cumsum([0] + [len(db["photos"][n]) for n in db["names"]])
    ref_photo = np.searchsorted(offsets, ref_rows.ravel(), side="right") - 1
    assert np.array_equal(photo, ref_photo)
    assert np.array_equal(kp, ref_rows.ravel() - offsets[ref_photo])
    assert np.allclose(dist, ref_dist, atol=1e-5)


def test_annoy_with_exhaustive_search_k_equals_exact(db):
    photos = db["photos"]
    q = noisy_query(photos["p/007.jpg"], 5)
    with Index(db["multi"]) as idx:
        n = idx.n_descriptors
        exact = idx.search(q, SearchConf(mode="exact", top_n=10, cutoff=None), keep_knn=True)
        annoy = idx.search(q, SearchConf(mode="annoy", top_n=10, search_k=n * FAST.n_trees, cutoff=None),
                           keep_knn=True)
    assert exact.mode == "exact" and annoy.mode == "annoy"
    assert np.array_equal(exact.extra["knn_rows"], annoy.extra["knn_rows"])
    assert np.allclose(exact.extra["knn_distances"], annoy.extra["knn_distances"], atol=1e-5)
    assert exact.names == annoy.names and np.array_equal(exact.votes, annoy.votes)
    assert np.array_equal(exact.query_idx, annoy.query_idx) and np.array_equal(exact.db_idx, annoy.db_idx)


def test_candidates_are_consistent(db):
    photos = db["photos"]
    q = noisy_query(photos["p/031.jpg"], 9)
    with Index(db["multi"]) as idx:
        c = idx.search(q, SearchConf(top_n=8, k=5, cutoff=None))
    assert isinstance(c, Candidates) and len(c) == 8 and c.names[0] == "p/031.jpg"
    assert c.n_query == len(q) and c.offsets[0] == 0 and c.offsets[-1] == len(c.query_idx)
    assert np.array_equal(np.diff(c.offsets), c.votes)
    assert np.all(np.diff(c.scores) <= 0)  # ranked by weighted votes
    assert c.query_idx.dtype == np.int32 and c.db_idx.dtype == np.int32 and c.photo_ids.dtype == np.int64
    for i, (name, corr) in enumerate(c):
        feats = photos[name]
        assert tuple(c.image_sizes[i]) == feats.image_size
        assert len(np.unique(corr["query_idx"])) == len(corr["query_idx"])  # one match per query keypoint
        assert np.array_equal(corr["db_xy"], feats.locations[corr["db_idx"]])
        assert np.array_equal(corr["query_xy"], q.locations[corr["query_idx"]])
        d = np.linalg.norm(q.descriptors[corr["query_idx"]] - feats.descriptors[corr["db_idx"]], axis=1)
        assert np.allclose(corr["distances"], d, atol=1e-4)
        assert np.all(c.candidate[c.offsets[i]:c.offsets[i + 1]] == i)
    # the matches of the true photo are its own keypoints
    top = c.correspondences(0)
    assert np.mean(photos["p/031.jpg"].locations[top["db_idx"]] * 0.5 + 3 == top["query_xy"]) > 0.9


def test_weightings(db):
    q = noisy_query(db["photos"]["p/021.jpg"], 6)
    with Index(db["single"]) as idx:
        rows, dist, _, _ = idx.knn(q.descriptors, SearchConf(k=6))
        count = idx.search(q, SearchConf(weighting="count", cutoff=None, top_n=10))
        adaptive = idx.search(q, SearchConf(weighting="adaptive", cutoff=None, top_n=10))
        cut = idx.search(q, SearchConf(weighting="count", cutoff=0.3, top_n=10))
    assert count.names[0] == adaptive.names[0] == cut.names[0] == "p/021.jpg"
    assert np.array_equal(count.scores, count.votes) and np.all(np.diff(count.votes) <= 0)
    w = match_weights(dist, SearchConf(k=6, cutoff=None))
    d64 = dist.astype(np.float64)
    assert np.allclose(w[:, -1], 0) and np.allclose(w, 1 - d64 ** 2 / d64[:, -1:] ** 2)
    assert np.all(np.diff(adaptive.scores) <= 0)
    # the cutoff ramps from weight 1 at 0.25 to 0 at 0.35
    assert np.all(cut.distances < 0.35) and cut.names == ["p/021.jpg"]
    wc = match_weights(np.array([[0.2, 0.3, 0.34, 0.4]]), SearchConf(weighting="count", cutoff=0.3))
    assert np.allclose(wc, [[1, 0.5, 0.1, 0]])


def test_threads(db):
    q = noisy_query(db["photos"]["p/012.jpg"], 4)
    with Index(db["single"]) as idx:
        one = idx.search(q, SearchConf(threads=1, mode="annoy", cutoff=None))
        two = idx.search(q, SearchConf(threads=2, mode="annoy", cutoff=None))
    assert one.names == two.names and np.array_equal(one.db_idx, two.db_idx) and len(one) == 100 - 60


def test_auto_mode_follows_the_crossover(db):
    q = noisy_query(db["photos"]["p/002.jpg"], 1)
    with Index(db["multi"]) as idx:
        assert idx.search(q, SearchConf(exact_below=10**9)).mode == "exact"
        assert idx.search(q, SearchConf(exact_below=0)).mode == "annoy"
        sizes = [s.n for s in idx.snapshot().segments]
        assert idx.search(q, SearchConf(exact_below=(sizes[0] + sizes[1]) // 2)).mode == "mixed"


def test_tombstones_still_give_k_neighbours(db, tmp_path):
    photos = db["photos"]
    f = write_features(tmp_path / "all.h5", photos)
    idx_dir = tmp_path / "t.idx"
    build_index(idx_dir, [f], FAST)
    gone = db["names"][::2]
    remove_from_index(idx_dir, gone)
    q = noisy_query(photos["p/000.jpg"], 2)
    with Index(idx_dir) as idx:
        for mode in ("exact", "annoy"):
            rows, dist, _, snap = idx.knn(q.descriptors, SearchConf(mode=mode, k=6, search_k=10**6))
            assert np.all(rows >= 0)
            assert not set(snap.gather("desc_photo", rows.ravel()).tolist()) & set(
                snap.photo_sorted[np.isin([snap.photo_names[i] for i in snap.photo_order], gone)].tolist())
            c = idx.search(q, SearchConf(mode=mode, top_n=40))
            assert not set(c.names) & set(gone) and len(c) > 0
    live = [photos[n] for n in db["names"] if n not in gone]
    ref_rows, ref_dist = brute_force_knn(np.concatenate([p.descriptors for p in live]), q.descriptors, 6)
    assert np.allclose(dist, ref_dist, atol=1e-5)


def test_empty_query(db):
    with Index(db["single"]) as idx:
        c = idx.search(np.zeros((0, 16), np.float32))
    assert len(c) == 0 and c.offsets.tolist() == [0] and c.query_xy.shape == (0, 2)


@pytest.mark.parametrize("which", ["single", "multi"])
@pytest.mark.parametrize("mode", ["exact", "annoy"])
def test_exclude_searches_as_if_the_photos_were_not_indexed(db, tmp_path, mode, which):
    """A query that is itself in the index (collection mode, calibration): with
    ``exclude`` its own descriptors and its place's take none of the k slots,
    so the other photos get the votes and correspondences of an index that
    never held them; dropping candidates afterwards would not."""
    photos, names = db["photos"], db["names"]
    gone = [names[0], names[1], names[30]]  # in both segments of the multi-segment index
    f = write_features(tmp_path / "rest.h5", {n: photos[n] for n in names if n not in gone})
    ref_dir = tmp_path / "rest.idx"
    build_index(ref_dir, [f], FAST)
    q = photos[gone[0]]  # the query is one of the excluded photos, exactly as indexed
    conf = SearchConf(mode=mode, k=5, top_n=40, search_k=10**6)
    with Index(db[which]) as idx, Index(ref_dir) as ref:
        got = idx.search(q, conf, exclude=gone, keep_knn=True)
        want = ref.search(q, conf)
        plain = idx.search(q, conf)
        # No neighbour row belongs to an excluded photo.
        snap = idx.snapshot()
        photo_of_row = snap.gather("desc_photo", got.extra["knn_rows"].ravel())
        id_of = dict(zip([snap.photo_names[j] for j in snap.photo_order], snap.photo_sorted.tolist()))
        assert not set(photo_of_row.tolist()) & {id_of[n] for n in gone}
        # The index itself is unchanged: searched again without exclude, the query finds itself first.
        again = idx.search(q, conf)
    assert again.names == plain.names
    assert got.names == want.names
    assert np.allclose(got.votes, want.votes, atol=1e-4)
    assert np.array_equal(got.offsets, want.offsets)
    # Without exclude the query's own copy is its first neighbour.
    assert plain.names[0] == gone[0]
