"""Writing an index: build, add, remove, compact. One writer at a time.

Every operation follows the same path: take the writer lock, read the current
manifest, sweep what killed writers left, do the work in new files, commit by
renaming a new manifest into place, then delete segments nothing references.
A writer killed at any point therefore leaves the last committed state.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np

from common.conf import DictConf
from delf.conf import describe_mismatch
from delf.featio import FeatureFile, FeatureFileError

from . import store
from .store import IndexFileError, WriterLock


@dataclass(frozen=True)
class IndexConf(DictConf):
    """How segments are built; recorded in the manifest and reused by add and compact."""

    # "pq": the compact inverted file of product-quantised codes (index/pq.py,
    # about 20 bytes per descriptor); "annoy": one Annoy forest over the full
    # descriptors (about 2 KB per descriptor), the format before version 2.
    kind: str = "pq"
    # pq: coarse cells; 0 = chosen from the build's descriptors (index/pq.py auto_nlist).
    nlist: int = 0
    # pq: one-byte codes per descriptor (groups of 2 or 3 of the 40 dimensions): 16 codes, 3 bytes of
    # row and 3 of location make 22 bytes per descriptor, the codebook about 1 more at 1M descriptors.
    pq_m: int = 16
    coarse_trees: int = 16  # pq: Annoy trees over the coarse centroids
    train_iters: int = 10  # pq: k-means iterations of the coarse quantiser (the groups get 10 more)
    train_max: int = 0  # pq: descriptors sampled to train on; 0 = max(64 nlist, 65536)
    shards: int = 1  # segments written by build and compact (a Dask worker each, `delf search --workers`)
    # annoy: trees per segment. On 1M 40-D descriptors, 128 trees at search_k
    # 2000 beat 16 trees at search_k 4000 in both recall and speed; the price is
    # about 2 KB per descriptor on disk and a longer build (README, `delf bench index`).
    n_trees: int = 128
    # Build threads; -1: all cores. A pq index is the same for any count; an
    # annoy one repeats exactly only with 1.
    build_threads: int = -1
    seed: int = 0  # k-means samples; Annoy's random hyperplanes
    lock_timeout: float = 0.0  # seconds to wait for another writer before giving up

    def __post_init__(self):
        if self.kind not in store.KINDS:
            raise ValueError(f"kind must be one of {', '.join(store.KINDS)}, got {self.kind!r}")
        for name in ("n_trees", "pq_m", "coarse_trees", "train_iters", "shards"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.nlist) < 0 or int(self.train_max) < 0:
            raise ValueError("nlist and train_max must be >= 0")
        if float(self.lock_timeout) < 0:
            raise ValueError(f"lock_timeout must be >= 0, got {self.lock_timeout}")

    @property
    def n_threads(self) -> int:
        return int(self.build_threads) if int(self.build_threads) > 0 else (os.cpu_count() or 1)


# Stored in the manifest: only what decides the segments' content.
_PERSISTED = ("kind", "n_trees", "seed", "shards")


def _stored_conf(conf: IndexConf) -> dict:
    return {k: getattr(conf, k) for k in _PERSISTED}


def _effective_conf(manifest: dict, conf: IndexConf | None) -> IndexConf:
    """The manifest's build settings, with this run's machine-local settings."""
    local = conf or IndexConf()
    stored = {k: v for k, v in manifest["index_conf"].items() if k in _PERSISTED}
    return local.replace(**stored)


class _Batch:
    """Photos read from features files, ready to become one segment."""

    def __init__(self):
        self.names: list[str] = []
        self.sizes: list[tuple[int, int]] = []
        self.counts: list[int] = []
        self.descriptors: list[np.ndarray] = []
        self.xy: list[np.ndarray] = []
        self.conf: dict | None = None
        self.dim: int | None = None

    def read(self, path: str, expect_conf: dict | None, expect_dim: int | None, where: str,
             skip=frozenset()) -> None:
        path = os.fspath(path)
        try:
            ff = FeatureFile(path)
        except FeatureFileError as exc:
            raise FeatureFileError(f"{exc}; {where} is unchanged") from None
        with ff:
            conf = ff.conf
            ref = expect_conf if expect_conf is not None else self.conf
            if ref is not None:
                diff = describe_mismatch(ref, conf)
                if diff:
                    raise ValueError(
                        f"{path} was extracted with a different extractor conf than {where} ({diff}); "
                        f"re-extract it with the index's conf or build a new index"
                    )
            if self.conf is None:
                self.conf = conf
            if not ff.names:
                raise ValueError(f"{path}: no photos in this features file; {where} is unchanged")
            seen = set(self.names)
            for name in ff.names:
                if name in skip:
                    continue
                if name in seen:
                    raise ValueError(f"{path}: photo {name!r} appears in more than one input features file")
                try:
                    feats = ff[name]
                except (OSError, KeyError, ValueError) as exc:
                    raise FeatureFileError(
                        f"{path}: cannot read photo {name!r} ({exc}); the file is truncated or corrupt; "
                        f"{where} is unchanged"
                    ) from None
                self.add(name, feats, expect_dim, f"{path}: photo {name!r}", where)

    def add(self, name: str, feats, expect_dim: int | None, what: str, where: str) -> None:
        dim = feats.dim
        want = expect_dim or self.dim
        if len(feats) and want is not None and dim != want:
            raise ValueError(f"{what} has {dim}-D descriptors, {where} holds {want}-D")
        if len(feats) and self.dim is None:
            self.dim = dim
        desc = feats.descriptors
        if len(desc) and not np.isfinite(desc).all():
            raise FeatureFileError(f"{what} has non-finite descriptors; {where} is unchanged")
        self.names.append(name)
        self.sizes.append(feats.image_size)
        self.counts.append(len(feats))
        self.descriptors.append(desc)
        self.xy.append(feats.locations)

    def add_items(self, items, extractor_conf: dict, expect_dim: int | None, where: str) -> None:
        """(name, Features) pairs made with ``extractor_conf``, each name once."""
        self.conf = extractor_conf
        seen = set()
        for name, feats in items:
            if name in seen:
                raise ValueError(f"photo {name!r} given twice; {where} is unchanged")
            seen.add(name)
            self.add(name, feats, expect_dim, f"photo {name!r}", where)

    def write_segments(self, index_dir: str, manifest: dict, conf: IndexConf, codebook=None,
                       shards: int = 1) -> list[dict]:
        """The batch as ``shards`` segments of whole photos (about equal descriptors each)."""
        dim = manifest["dim"]
        first_id = manifest["next_photo_id"]
        n_photos = len(self.names)
        counts = np.asarray(self.counts, np.int64)
        desc = np.concatenate([d.reshape(-1, dim) for d in self.descriptors]) if counts.sum() else \
            np.zeros((0, dim), np.float32)
        desc = np.asarray(desc, np.float32)
        # Re-normalised because float16 files round the unit rows.
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        xy = np.concatenate(self.xy).reshape(-1, 2) if counts.sum() else np.zeros((0, 2), np.float32)
        sizes = np.asarray(self.sizes, np.int64).reshape(-1, 2)
        photo_ids = np.arange(first_id, first_id + n_photos, dtype=np.int64)
        rows = {
            "descriptors": desc,
            "desc_photo": np.repeat(photo_ids, counts),
            "desc_keypoint": np.concatenate([np.arange(c) for c in counts]) if n_photos else np.zeros(0),
            "desc_xy": xy,
        }
        photos = {"photo_ids": photo_ids, "photo_sizes": sizes, "photo_counts": counts}
        manifest["next_photo_id"] = first_id + n_photos
        return write_rows(index_dir, manifest, conf, codebook, rows, photos, list(self.names), shards)


def _shard_bounds(counts: np.ndarray, shards: int) -> list[tuple[int, int]]:
    """Photo ranges of ``shards`` parts with about equal descriptors (no empty part)."""
    shards = max(1, min(int(shards), len(counts)))
    if shards == 1:
        return [(0, len(counts))]
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, shards) / shards, side="left") + 1
    edges = np.unique(np.clip(np.concatenate([[0], cuts, [len(counts)]]), 0, len(counts)))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def write_rows(index_dir: str, manifest: dict, conf: IndexConf, codebook, rows: dict, photos: dict,
               names: list[str], shards: int = 1) -> list[dict]:
    """Segments holding photos (``photos``: ids, sizes, counts) and their rows in
    photo order: "pq" segments take (cells, codes, xy16) or encode "descriptors"
    with ``codebook``; "annoy" segments take descriptors, desc_photo,
    desc_keypoint and desc_xy."""
    from . import pq

    counts = np.asarray(photos["photo_counts"], np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    # A pq segment's rows fit in 3 bytes: more descriptors make more shards.
    shards = max(int(shards), -(-int(starts[-1]) // pq.MAX_SEGMENT_ROWS))
    if store.index_kind(manifest) == "pq" and "cells" not in rows:
        cells, codes = codebook.encode(rows["descriptors"], conf.n_threads)
        sizes = np.repeat(np.asarray(photos["photo_sizes"]).reshape(-1, 2), counts, axis=0)
        rows = {"cells": cells, "codes": codes, "xy12": pq.pack_xy(rows["desc_xy"], sizes)}
    entries = []
    for a, b in _shard_bounds(counts, shards):
        r = slice(int(starts[a]), int(starts[b]))
        part = {k: np.asarray(v)[a:b] for k, v in photos.items()}
        name = store.new_segment_name(manifest["generation"] + 1)
        if store.index_kind(manifest) == "pq":
            entries.append(store.write_pq_segment(
                index_dir, name, codebook, rows["cells"][r], rows["codes"][r], rows["xy12"][r],
                part["photo_ids"], part["photo_sizes"], part["photo_counts"], names[a:b]))
        else:
            entries.append(store.write_segment(
                index_dir, name, manifest["dim"], conf.n_trees, conf.build_threads, conf.seed,
                descriptors=rows["descriptors"][r], desc_photo=rows["desc_photo"][r],
                desc_keypoint=rows["desc_keypoint"][r], desc_xy=rows["desc_xy"][r], photo_names=names[a:b],
                **part))
    return entries


def _train(index_dir: str, batch: "_Batch", conf: IndexConf):
    """Trains and writes the codebook of a new pq index on the batch's descriptors."""
    from . import pq

    dim = batch.dim
    desc = np.concatenate([np.asarray(d, np.float32).reshape(-1, dim) for d in batch.descriptors if len(d)])
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    cb = pq.train_codebook(desc, conf.nlist, conf.pq_m, conf.seed, conf.train_iters, conf.train_max,
                           conf.n_threads)
    cb_conf = {"version": pq.CODEBOOK_VERSION, "nlist": cb.nlist, "pq_m": cb.m, "coarse_trees": conf.coarse_trees,
               "seed": conf.seed, "train_iters": conf.train_iters, "trained_on": int(len(desc))}
    entry = store.write_codebook(index_dir, cb, cb_conf)
    return entry, store.open_codebook(index_dir, entry, dim)


def _codebook(index_dir: str, manifest: dict):
    cb = manifest.get("codebook")
    return store.open_codebook(index_dir, cb, manifest["dim"]) if cb else None


def _commit(index_dir: str, manifest: dict) -> dict:
    manifest["generation"] += 1
    manifest["format_version"] = store.FORMAT_VERSION
    store.write_manifest(index_dir, manifest)
    # Readers that still map a swept segment keep their mapping; new readers
    # retry when a listed file vanishes under them.
    store.sweep(index_dir, manifest)
    return manifest


def _live_names(index_dir: str, manifest: dict) -> dict[str, int]:
    """name -> photo id of every photo not removed."""
    dead = set(manifest["tombstones"])
    out: dict[str, int] = {}
    for seg in manifest["segments"]:
        seg_dir = os.path.join(index_dir, seg["name"])
        ids, names = _read_photo_table(seg_dir)
        for pid, name in zip(ids.tolist(), names):
            if pid not in dead:
                out[name] = pid
    return out


def _read_photo_table(seg_dir: str):
    import json

    try:
        ids = np.load(os.path.join(seg_dir, "photo_ids.npy"), allow_pickle=False)
        with open(os.path.join(seg_dir, store.NAMES_FILE), "rb") as f:
            names = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{seg_dir}: unreadable photo table ({exc}); rebuild the index") from None
    if len(ids) != len(names):
        raise IndexFileError(f"{seg_dir}: corrupt photo table ({len(ids)} ids, {len(names)} names)")
    return ids, names


def build_index(index_dir: str | os.PathLike, feature_files, conf: IndexConf | None = None,
                overwrite: bool = False) -> dict:
    """Creates an index at ``index_dir`` holding every photo of ``feature_files``
    (one segment). With ``overwrite``, an existing index is replaced in one
    atomic step (readers see the old or the new one). Returns ``index_info``."""
    if isinstance(feature_files, (str, os.PathLike)):
        feature_files = [feature_files]
    feature_files = [os.fspath(p) for p in feature_files]
    if not feature_files:
        raise ValueError("build needs at least one features file")
    for p in feature_files:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no such features file")

    def fill(batch: _Batch, where: str) -> None:
        for p in feature_files:
            batch.read(p, None, None, where)

    return _build(os.fspath(index_dir), fill, conf, overwrite, ", ".join(feature_files))


def build_index_from_features(index_dir: str | os.PathLike, items, extractor_conf: dict,
                              conf: IndexConf | None = None, overwrite: bool = False) -> dict:
    """Like ``build_index`` from ``(name, Features)`` pairs already in memory;
    ``extractor_conf`` is the resolved conf that made them (recorded in the manifest)."""
    extractor_conf = extractor_conf.to_dict() if hasattr(extractor_conf, "to_dict") else dict(extractor_conf)

    def fill(batch: _Batch, where: str) -> None:
        batch.add_items(items, extractor_conf, None, where)

    return _build(os.fspath(index_dir), fill, conf, overwrite, "the given features")


def _build(index_dir: str, fill, conf: IndexConf | None, overwrite: bool, source: str) -> dict:
    conf = conf or IndexConf()
    created = not os.path.exists(index_dir)
    os.makedirs(index_dir, exist_ok=True)
    try:
        _build_locked(index_dir, fill, conf, overwrite, source)
    except BaseException:
        if created:  # a failed first build leaves nothing behind (not even the folder and its LOCK)
            shutil.rmtree(index_dir, ignore_errors=True)
        raise
    return index_info(index_dir)


def _build_locked(index_dir: str, fill, conf: IndexConf, overwrite: bool, source: str) -> None:
    with WriterLock(index_dir, conf.lock_timeout):
        old = None
        if os.path.exists(store.manifest_path(index_dir)):
            if not overwrite:
                raise ValueError(
                    f"{index_dir}: an index already exists; use `delf index add` to add photos, "
                    f"or --overwrite to replace it"
                )
            try:
                old = store.read_manifest(index_dir)
            except IndexFileError:
                old = None  # replacing a damaged index is exactly what overwrite is for
        store.sweep(index_dir, old)
        batch = _Batch()
        fill(batch, index_dir)
        if not batch.names:
            raise ValueError(f"{source}: no photos; nothing to index")
        if batch.dim is None:
            raise ValueError(f"{source}: no descriptors at all; nothing to index")
        manifest = store.new_manifest(batch.dim, batch.conf or {}, _stored_conf(conf))
        if old is not None:
            # Generations only grow, so readers notice the replacement.
            manifest["generation"] = old["generation"]
        codebook = None
        if conf.kind == "pq":
            manifest["codebook"], codebook = _train(index_dir, batch, conf)
        manifest["segments"] += batch.write_segments(index_dir, manifest, conf, codebook, conf.shards)
        _commit(index_dir, manifest)


def add_to_index(index_dir: str | os.PathLike, feature_file: str | os.PathLike,
                 conf: IndexConf | None = None, skip_existing: bool = False) -> dict:
    """Adds the photos of ``feature_file`` as a new segment; existing segments
    are not touched. Refuses features made with another extractor conf, and
    photos already in the index unless ``skip_existing`` (then only the new
    ones are added; none new: nothing changes). Returns ``index_info``."""
    feature_file = os.fspath(feature_file)
    if not os.path.isfile(feature_file):
        _require_index(os.fspath(index_dir))
        raise FileNotFoundError(f"{feature_file}: no such features file")

    def fill(batch: _Batch, manifest: dict, live: dict, where: str) -> bool:
        if skip_existing:
            with FeatureFile(feature_file) as ff:
                if all(n in live for n in ff.names):
                    return False
        batch.read(feature_file, manifest["extractor_conf"], manifest["dim"], where,
                   skip=live.keys() if skip_existing else frozenset())
        return True

    return _add(index_dir, fill, conf, feature_file, "--skip-existing")


def add_features_to_index(index_dir: str | os.PathLike, items, extractor_conf: dict,
                          conf: IndexConf | None = None) -> dict:
    """Like ``add_to_index`` from ``(name, Features)`` pairs already in memory,
    made with ``extractor_conf`` (refused unless it is the index's)."""
    extractor_conf = extractor_conf.to_dict() if hasattr(extractor_conf, "to_dict") else dict(extractor_conf)
    items = list(items)

    def fill(batch: _Batch, manifest: dict, live: dict, where: str) -> bool:
        diff = describe_mismatch(manifest["extractor_conf"], extractor_conf)
        if diff:
            raise ValueError(f"the photos were extracted with a different extractor conf than {where} ({diff})")
        batch.add_items(items, extractor_conf, manifest["dim"], where)
        return bool(items)

    return _add(index_dir, fill, conf, "the given photos", "skip them")


def _add(index_dir, fill, conf: IndexConf | None, source: str, skip_hint: str) -> dict:
    """One new segment with what ``fill(batch, manifest, live_names, where)`` reads (False: nothing to add)."""
    index_dir = os.fspath(index_dir)
    _require_index(index_dir)
    local = conf or IndexConf()
    with WriterLock(index_dir, local.lock_timeout):
        manifest = store.read_manifest(index_dir)
        store.sweep(index_dir, manifest)
        conf = _effective_conf(manifest, conf)
        live = _live_names(index_dir, manifest)
        batch = _Batch()
        if not fill(batch, manifest, live, index_dir) or not batch.names:
            return index_info(index_dir)
        dup = [n for n in batch.names if n in live]
        if dup:
            raise ValueError(
                f"{source}: {len(dup)} photo(s) already in {index_dir} ({', '.join(dup[:5])}"
                f"{', ...' if len(dup) > 5 else ''}); remove them first with `delf index remove`, "
                f"or {skip_hint}"
            )
        manifest["segments"] += batch.write_segments(index_dir, manifest, conf, _codebook(index_dir, manifest))
        _commit(index_dir, manifest)
    return index_info(index_dir)


def remove_from_index(index_dir: str | os.PathLike, names, conf: IndexConf | None = None) -> dict:
    """Marks photos removed (tombstones): searches skip them at once; their
    bytes go at the next compaction. Returns ``index_info``."""
    index_dir = os.fspath(index_dir)
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("remove needs at least one photo name")
    local = conf or IndexConf()
    _require_index(index_dir)
    with WriterLock(index_dir, local.lock_timeout):
        manifest = store.read_manifest(index_dir)
        store.sweep(index_dir, manifest)
        live = _live_names(index_dir, manifest)
        unknown = [n for n in names if n not in live]
        if unknown:
            raise ValueError(
                f"{index_dir}: no photo named {', '.join(repr(n) for n in unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''} in the index; nothing removed"
            )
        manifest["tombstones"] = sorted(set(manifest["tombstones"]) | {live[n] for n in names})
        _commit(index_dir, manifest)
    return index_info(index_dir)


def compact_index(index_dir: str | os.PathLike, conf: IndexConf | None = None) -> dict:
    """Merges all segments into one and drops removed photos. Photo ids are
    kept. Returns ``index_info``."""
    index_dir = os.fspath(index_dir)
    local = conf or IndexConf()
    _require_index(index_dir)
    with WriterLock(index_dir, local.lock_timeout):
        manifest = store.read_manifest(index_dir)
        store.sweep(index_dir, manifest)
        conf = _effective_conf(manifest, conf)
        if len(manifest["segments"]) <= conf.shards and not manifest["tombstones"]:
            return index_info(index_dir)
        dim = manifest["dim"]
        dead = np.asarray(manifest["tombstones"], np.int64)
        codebook = _codebook(index_dir, manifest)
        is_pq = store.index_kind(manifest) == "pq"
        row_keys = ("cells", "codes", "xy12") if is_pq else ("descriptors", "desc_photo", "desc_keypoint", "desc_xy")
        parts = {k: [] for k in (*row_keys, "photo_ids", "photo_sizes", "photo_counts")}
        names: list[str] = []
        for entry in manifest["segments"]:
            seg = store.open_segment(index_dir, entry, dim, codebook)
            try:
                keep_desc = ~np.isin(seg.arrays["desc_photo"], dead)
                keep_photo = ~np.isin(seg.arrays["photo_ids"], dead)
                if is_pq:
                    cells, codes = seg.cells_codes(np.flatnonzero(keep_desc))
                    parts["cells"].append(cells)
                    parts["codes"].append(codes)
                    parts["xy12"].append(np.asarray(seg.arrays["xy12"][keep_desc]))
                else:
                    for k in row_keys:
                        parts[k].append(np.asarray(seg.arrays[k][keep_desc]))
                for k in ("photo_ids", "photo_sizes", "photo_counts"):
                    parts[k].append(np.asarray(seg.arrays[k][keep_photo]))
                names.extend(n for n, kp in zip(seg.names, keep_photo.tolist()) if kp)
            finally:
                seg.close()
        merged = {k: np.concatenate(v) if v else None for k, v in parts.items()}
        segments = []
        if len(names):
            photos = {k: merged.pop(k) for k in ("photo_ids", "photo_sizes", "photo_counts")}
            segments = write_rows(index_dir, manifest, conf, codebook, merged, photos, names, conf.shards)
        manifest["segments"] = segments
        manifest["tombstones"] = []
        _commit(index_dir, manifest)
    return index_info(index_dir)


def _require_index(index_dir: str) -> None:
    # Checked before locking so that a mistyped path gets no LOCK file.
    store.read_manifest(index_dir)


def index_info(index_dir: str | os.PathLike, check: str = "size") -> dict:
    """Photos, descriptors, segments and bytes on disk of the current state.
    ``check="full"`` also verifies every file's SHA-256."""
    index_dir = os.fspath(index_dir)
    manifest = store.read_manifest(index_dir)
    dead = set(manifest["tombstones"])
    photos = removed = descriptors = stored = 0
    segments = []
    codebook = store.open_codebook(index_dir, manifest["codebook"], manifest["dim"], check) \
        if manifest.get("codebook") else None
    for entry in manifest["segments"]:
        seg = store.open_segment(index_dir, entry, manifest["dim"], codebook, check)
        try:
            ids = np.asarray(seg.arrays["photo_ids"])
            counts = np.asarray(seg.arrays["photo_counts"])
            is_dead = np.isin(ids, np.fromiter(dead, np.int64, len(dead)))
        finally:
            seg.close()
        photos += int((~is_dead).sum())
        removed += int(is_dead.sum())
        descriptors += int(counts[~is_dead].sum())
        stored += entry["descriptors"]
        segments.append({"name": entry["name"], "kind": entry.get("kind", "annoy"), "photos": entry["photos"],
                         "descriptors": entry["descriptors"], "n_trees": entry.get("n_trees"),
                         "bytes": store.segment_bytes(entry)})
    cb = manifest.get("codebook")
    cb_bytes = store.segment_bytes(cb) if cb else 0
    total_bytes = sum(s["bytes"] for s in segments) + cb_bytes + os.path.getsize(store.manifest_path(index_dir))
    return {
        "path": index_dir,
        "format_version": manifest["format_version"],
        "generation": manifest["generation"],
        "photos": photos,
        "removed_photos": removed,
        "descriptors": descriptors,
        "stored_descriptors": stored,
        "dim": manifest["dim"],
        "segments": segments,
        "kind": store.index_kind(manifest),
        "codebook": dict(cb["conf"], bytes=cb_bytes) if cb else None,
        "bytes_on_disk": total_bytes,
        "index_conf": manifest["index_conf"],
        "extractor_conf": manifest["extractor_conf"],
    }
