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

    # Annoy trees per segment. On 1M 40-D descriptors, 128 trees at search_k
    # 2000 beat 16 trees at search_k 4000 in both recall and speed; the price is
    # about 2 KB per descriptor on disk and a longer build (README, `delf bench index`).
    n_trees: int = 128
    build_threads: int = -1  # Annoy build threads; -1: all cores
    seed: int = 0  # Annoy's random hyperplanes; builds repeat exactly only with build_threads=1
    lock_timeout: float = 0.0  # seconds to wait for another writer before giving up

    def __post_init__(self):
        if int(self.n_trees) < 1:
            raise ValueError(f"n_trees must be >= 1, got {self.n_trees}")
        if float(self.lock_timeout) < 0:
            raise ValueError(f"lock_timeout must be >= 0, got {self.lock_timeout}")



# Stored in the manifest: only what decides the segments' content.
_PERSISTED = ("n_trees", "seed")


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

    def write_segment(self, index_dir: str, manifest: dict, conf: IndexConf) -> dict:
        dim = manifest["dim"]
        first_id = manifest["next_photo_id"]
        n_photos = len(self.names)
        counts = np.asarray(self.counts, np.int64)
        desc = np.concatenate([d.reshape(-1, dim) for d in self.descriptors]) if counts.sum() else \
            np.zeros((0, dim), np.float32)
        # Re-normalised because float16 files round the unit rows.
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        photo_ids = np.arange(first_id, first_id + n_photos, dtype=np.int64)
        entry = store.write_segment(
            index_dir, store.new_segment_name(manifest["generation"] + 1), dim, conf.n_trees,
            conf.build_threads, conf.seed,
            descriptors=desc,
            desc_photo=np.repeat(photo_ids, counts),
            desc_keypoint=np.concatenate([np.arange(c) for c in counts]) if n_photos else np.zeros(0),
            desc_xy=np.concatenate(self.xy) if counts.sum() else np.zeros((0, 2)),
            photo_ids=photo_ids, photo_sizes=np.asarray(self.sizes).reshape(-1, 2), photo_counts=counts,
            photo_names=self.names,
        )
        manifest["next_photo_id"] = first_id + n_photos
        return entry


def _commit(index_dir: str, manifest: dict) -> dict:
    manifest["generation"] += 1
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
        manifest["segments"].append(batch.write_segment(index_dir, manifest, conf))
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
        manifest["segments"].append(batch.write_segment(index_dir, manifest, conf))
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
        if len(manifest["segments"]) <= 1 and not manifest["tombstones"]:
            return index_info(index_dir)
        dim = manifest["dim"]
        dead = np.asarray(manifest["tombstones"], np.int64)
        parts = {k: [] for k in ("descriptors", "desc_photo", "desc_keypoint", "desc_xy",
                                 "photo_ids", "photo_sizes", "photo_counts")}
        names: list[str] = []
        for entry in manifest["segments"]:
            seg = store.Segment(index_dir, entry, dim)
            try:
                keep_desc = ~np.isin(seg.arrays["desc_photo"], dead)
                keep_photo = ~np.isin(seg.arrays["photo_ids"], dead)
                for k in ("descriptors", "desc_photo", "desc_keypoint", "desc_xy"):
                    parts[k].append(np.asarray(seg.arrays[k][keep_desc]))
                for k in ("photo_ids", "photo_sizes", "photo_counts"):
                    parts[k].append(np.asarray(seg.arrays[k][keep_photo]))
                names.extend(n for n, kp in zip(seg.names, keep_photo.tolist()) if kp)
            finally:
                seg.close()
        merged = {k: np.concatenate(v) if v else None for k, v in parts.items()}
        segments = []
        if len(names):
            segments.append(store.write_segment(
                index_dir, store.new_segment_name(manifest["generation"] + 1), dim, conf.n_trees,
                conf.build_threads, conf.seed, photo_names=names, **merged,
            ))
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
    for entry in manifest["segments"]:
        seg = store.Segment(index_dir, entry, manifest["dim"], check=check)
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
        segments.append({"name": entry["name"], "photos": entry["photos"],
                         "descriptors": entry["descriptors"], "n_trees": entry.get("n_trees"),
                         "bytes": store.segment_bytes(entry)})
    total_bytes = sum(s["bytes"] for s in segments) + os.path.getsize(store.manifest_path(index_dir))
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
        "bytes_on_disk": total_bytes,
        "index_conf": manifest["index_conf"],
        "extractor_conf": manifest["extractor_conf"],
    }
