"""The index directory on disk: manifest, segments, codebook, writer lock.

Layout (format version 2)::

    INDEX/
      manifest.json        the current state; replaced atomically, never edited
      LOCK                 writer lock: flock()ed by the writer, holds its pid
      cb-<hex>/            the codebook of a "pq" index (index/pq.py), trained at build
        coarse.ann         Annoy index (euclidean) of the nlist coarse centroids
        pq.npy             (m, 256, w) float32 residual centroids per group of dimensions
        pq_bounds.npy      (m + 1,) int32 the groups' dimension boundaries
      seg-<gen>-<hex>/     one immutable segment per add, build or compact, of the index's kind

A "pq" segment (the default kind; about 20 bytes per descriptor)::

        codes.npy          (N, m) uint8 product-quantiser codes, in inverted-list order
        list_rows.npy      (N, 3) uint8 the segment row of each code (24 bits)
        list_offsets.npy   (nlist + 1,) int32 where each cell's list starts
        xy12.npy           (N, 3) uint8 (x, y) as 12-bit fractions of the photo's size, by row
        photo_ids.npy, photo_sizes.npy, photo_counts.npy, photo_names.json  (as below)

Rows are in photo order (a photo's keypoints are one run of rows, keypoint
order), so a row's photo and keypoint follow from photo_counts.

An "annoy" segment (format version 1's only kind; about 2 KB per descriptor)::

        annoy.ann          Annoy index (angular) over the segment's descriptors
        descriptors.npy    (N, D) float32, L2-normalised (exact search, compaction)
        desc_photo.npy     (N,) int32  global photo id of each descriptor row
        desc_keypoint.npy  (N,) int32  keypoint index inside its photo
        desc_xy.npy        (N, 2) float32 (x, y) in the photo's original pixels
        photo_ids.npy      (P,) int32  global ids of the segment's photos
        photo_sizes.npy    (P, 2) int32 (width, height)
        photo_counts.npy   (P,) int32  descriptors per photo
        photo_names.json   [P names]

The manifest lists the segments (with the size and SHA-256 of every file) and
the tombstones (ids of removed photos). Its rename is the only commit point of
every operation: whatever a writer leaves behind before it (a half-written
segment, a temporary manifest) is unreferenced and swept by the next writer.
Segments are never modified once referenced, so readers may keep them mapped
while writers work.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import time

import numpy as np

from common.files import TMP_PREFIX, atomic_write_bytes, fsync_dir, fsync_file, sha256_file

FORMAT = "delf-index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: "annoy" segments only, no codebook
KINDS = ("pq", "annoy")
CODEBOOK_PREFIX = "cb-"
MANIFEST = "manifest.json"
LOCK = "LOCK"
SEGMENT_PREFIX = "seg-"

ANNOY_FILE = "annoy.ann"
# name -> (dtype, trailing shape: "D" = descriptor dim); rows are N (desc_*) or P (photo_*).
ARRAY_FILES = {
    "descriptors.npy": ("float32", "D"),
    "desc_photo.npy": ("int32", None),
    "desc_keypoint.npy": ("int32", None),
    "desc_xy.npy": ("float32", 2),
    "photo_ids.npy": ("int32", None),
    "photo_sizes.npy": ("int32", 2),
    "photo_counts.npy": ("int32", None),
}
NAMES_FILE = "photo_names.json"
SEGMENT_FILES = (ANNOY_FILE, *ARRAY_FILES, NAMES_FILE)
PHOTO_FILES = {k: v for k, v in ARRAY_FILES.items() if k.startswith("photo_")}
# name -> (dtype, rows, trailing shape): "N" descriptors, "L" nlist + 1, "P" photos.
PQ_ARRAY_FILES = {
    "codes.npy": ("uint8", "N", "m"),
    "list_rows.npy": ("uint8", "N", 3),
    "list_offsets.npy": ("int32", "L", None),
    "xy12.npy": ("uint8", "N", 3),
    "photo_ids.npy": ("int32", "P", None),
    "photo_sizes.npy": ("int32", "P", 2),
    "photo_counts.npy": ("int32", "P", None),
}
PQ_SEGMENT_FILES = (*PQ_ARRAY_FILES, NAMES_FILE)

log = logging.getLogger("index")


class IndexFileError(ValueError):
    """An index file that cannot be used: missing, truncated, corrupt or of another format version."""


class IndexLockedError(ValueError):
    """Another writer holds the index."""


# ---------------------------------------------------------------- manifest


def manifest_path(index_dir: str) -> str:
    return os.path.join(index_dir, MANIFEST)


def new_manifest(dim: int, extractor_conf: dict, index_conf: dict) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        # Which build this is: files kept beside the index (the match graph) tell a rebuilt index by it.
        "id": secrets.token_hex(8),
        "generation": 0,
        "dim": int(dim),
        "extractor_conf": extractor_conf,
        "index_conf": index_conf,
        "codebook": None,
        "next_photo_id": 0,
        "segments": [],
        "tombstones": [],
    }


def index_kind(manifest: dict) -> str:
    return manifest["index_conf"].get("kind", "annoy")


def read_manifest(index_dir: str) -> dict:
    """The current manifest, validated; errors name the file and the fix."""
    path = manifest_path(index_dir)
    if not os.path.isdir(index_dir):
        raise FileNotFoundError(f"{index_dir}: no such index directory (create one with `delf index build`)")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: missing; {index_dir} is not an index (create one with `delf index build`)"
        ) from None
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFileError(
            f"{path}: corrupt manifest ({exc}); it is only ever replaced atomically, so it was damaged "
            f"outside this engine: rebuild the index with `delf index build`"
        ) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise IndexFileError(f"{path}: not a manifest of a delf index")
    version = m.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IndexFileError(
            f"{path}: index format version {version}, this engine reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; rebuild the index with `delf index build`"
        )
    if version == 1:  # all-Annoy: read as it is; the next write records version 2
        m.setdefault("codebook", None)
        if isinstance(m.get("index_conf"), dict):
            m["index_conf"].setdefault("kind", "annoy")
    required = {"generation": int, "dim": int, "extractor_conf": dict, "index_conf": dict,
                "next_photo_id": int, "segments": list, "tombstones": list}
    for key, typ in required.items():
        if not isinstance(m.get(key), typ):
            raise IndexFileError(f"{path}: corrupt manifest (field {key!r} missing or not {typ.__name__})")
    for seg in m["segments"]:
        if not (isinstance(seg, dict) and isinstance(seg.get("name"), str)
                and isinstance(seg.get("files"), dict) and isinstance(seg.get("descriptors"), int)
                and isinstance(seg.get("photos"), int)):
            raise IndexFileError(f"{path}: corrupt manifest (bad segment entry {seg!r:.200})")
        if os.sep in seg["name"] or not seg["name"].startswith(SEGMENT_PREFIX):
            raise IndexFileError(f"{path}: corrupt manifest (bad segment name {seg['name']!r})")
    kind = m["index_conf"].get("kind", "annoy")
    if kind not in KINDS:
        raise IndexFileError(f"{path}: corrupt manifest (unknown index kind {kind!r})")
    cb = m.get("codebook")
    if kind == "pq":
        if not (isinstance(cb, dict) and isinstance(cb.get("name"), str) and cb["name"].startswith(CODEBOOK_PREFIX)
                and os.sep not in cb["name"] and isinstance(cb.get("files"), dict)
                and isinstance(cb.get("conf"), dict)):
            raise IndexFileError(f"{path}: corrupt manifest (a pq index without a valid codebook entry)")
        if cb["conf"].get("version") != _pq().CODEBOOK_VERSION:
            raise IndexFileError(
                f"{path}: codebook version {cb['conf'].get('version')}, this engine reads version "
                f"{_pq().CODEBOOK_VERSION}; rebuild the index with `delf index build`"
            )
    return m


def _pq():
    from . import pq

    return pq


def write_manifest(index_dir: str, manifest: dict) -> None:
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    atomic_write_bytes(manifest_path(index_dir), data, durable=True)


def manifest_stamp(index_dir: str):
    """Cheap change detector: the manifest is replaced by rename, so a new inode
    (or mtime, for a filesystem that reuses inodes) means a new state."""
    try:
        st = os.stat(manifest_path(index_dir))
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# ---------------------------------------------------------------- segments


def new_segment_name(generation: int) -> str:
    return f"{SEGMENT_PREFIX}{generation:06d}-{secrets.token_hex(4)}"


def write_segment(index_dir: str, name: str, dim: int, n_trees: int, build_threads: int, seed: int,
                  descriptors: np.ndarray, desc_photo: np.ndarray, desc_keypoint: np.ndarray,
                  desc_xy: np.ndarray, photo_ids: np.ndarray, photo_sizes: np.ndarray,
                  photo_counts: np.ndarray, photo_names: list[str]) -> dict:
    """Writes a complete segment under a temporary name, then renames it into
    place; returns its manifest entry. Nothing references it until the caller
    commits a manifest naming it."""
    from annoy import AnnoyIndex

    tmp = os.path.join(index_dir, f"{TMP_PREFIX}{name}")
    os.makedirs(tmp)
    arrays = {
        "descriptors.npy": np.ascontiguousarray(descriptors, np.float32),
        "desc_photo.npy": np.ascontiguousarray(desc_photo, np.int32),
        "desc_keypoint.npy": np.ascontiguousarray(desc_keypoint, np.int32),
        "desc_xy.npy": np.ascontiguousarray(desc_xy, np.float32).reshape(-1, 2),
        **_photo_arrays(photo_ids, photo_sizes, photo_counts),
    }
    _save_arrays(tmp, arrays)
    _save_names(tmp, photo_names)

    ann = AnnoyIndex(dim, "angular")
    ann.set_seed(int(seed))
    desc = arrays["descriptors.npy"]
    # tolist() once: Annoy converts a NumPy row element by element, a list much faster.
    for start in range(0, len(desc), 65536):
        for i, row in enumerate(desc[start:start + 65536].tolist(), start):
            ann.add_item(i, row)
    ann.build(int(n_trees), n_jobs=int(build_threads))
    ann_path = os.path.join(tmp, ANNOY_FILE)
    if not ann.save(ann_path):
        raise OSError(f"{ann_path}: Annoy could not save the index")
    ann.unload()
    fsync_file(ann_path)
    fsync_dir(tmp)

    files = _file_table(tmp, SEGMENT_FILES)
    final = os.path.join(index_dir, name)
    os.rename(tmp, final)
    fsync_dir(index_dir)
    return {
        "name": name,
        "kind": "annoy",
        "descriptors": int(len(desc)),
        "photos": int(len(arrays["photo_ids.npy"])),
        "n_trees": int(n_trees),
        "files": files,
    }


def _photo_arrays(photo_ids, photo_sizes, photo_counts) -> dict:
    """The photo table files every kind of segment has."""
    return {
        "photo_ids.npy": np.ascontiguousarray(photo_ids, np.int32),
        "photo_sizes.npy": np.ascontiguousarray(photo_sizes, np.int32).reshape(-1, 2),
        "photo_counts.npy": np.ascontiguousarray(photo_counts, np.int32),
    }


def _save_arrays(folder: str, arrays: dict) -> None:
    for fname, arr in arrays.items():
        with open(os.path.join(folder, fname), "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def _save_names(folder: str, names: list[str]) -> None:
    with open(os.path.join(folder, NAMES_FILE), "wb") as f:
        f.write(json.dumps(list(names)).encode())
        f.flush()
        os.fsync(f.fileno())


def _file_table(folder: str, names) -> dict:
    return {fname: {"bytes": os.path.getsize(os.path.join(folder, fname)),
                    "sha256": sha256_file(os.path.join(folder, fname))} for fname in names}


def write_codebook(index_dir: str, cb, conf: dict) -> dict:
    """Writes a codebook folder (temporary name, then renamed); returns its manifest entry."""
    name = f"{CODEBOOK_PREFIX}{secrets.token_hex(4)}"
    tmp = os.path.join(index_dir, f"{TMP_PREFIX}{name}")
    os.makedirs(tmp)
    _pq().write_codebook_files(tmp, cb, int(conf["coarse_trees"]), int(conf["seed"]))
    fsync_dir(tmp)
    files = _file_table(tmp, _pq().CODEBOOK_FILES)
    os.rename(tmp, os.path.join(index_dir, name))
    fsync_dir(index_dir)
    return {"name": name, "files": files, "conf": conf}


def open_codebook(index_dir: str, entry: dict, dim: int, check: str = "size"):
    folder = os.path.join(index_dir, entry["name"])
    _check_files(index_dir, folder, entry["files"], _pq().CODEBOOK_FILES, check)
    return _pq().read_codebook(folder, dim, entry["conf"],
                               lambda p, why: IndexFileError(f"{p}: {why}; rebuild the index"))


def write_pq_segment(index_dir: str, name: str, cb, cells: np.ndarray, codes: np.ndarray, xy12: np.ndarray,
                     photo_ids: np.ndarray, photo_sizes: np.ndarray, photo_counts: np.ndarray,
                     photo_names: list[str]) -> dict:
    """A "pq" segment from its rows' cells, codes and packed locations (photo
    order); the codes are stored sorted by cell (stable: rows ascending in a list)."""
    tmp = os.path.join(index_dir, f"{TMP_PREFIX}{name}")
    os.makedirs(tmp)
    cells = np.asarray(cells, np.int64)
    order = np.argsort(cells, kind="stable")
    offsets = np.zeros(cb.nlist + 1, np.int64)
    np.cumsum(np.bincount(cells, minlength=cb.nlist), out=offsets[1:])
    if len(cells) > _pq().MAX_SEGMENT_ROWS:
        raise ValueError(f"a segment holds at most {_pq().MAX_SEGMENT_ROWS} descriptors")
    arrays = {
        "codes.npy": np.ascontiguousarray(np.asarray(codes, np.uint8)[order]).reshape(-1, cb.m),
        "list_rows.npy": _pq().pack_rows(order),
        "list_offsets.npy": offsets.astype(np.int32),
        "xy12.npy": np.ascontiguousarray(xy12, np.uint8).reshape(-1, 3),
        **_photo_arrays(photo_ids, photo_sizes, photo_counts),
    }
    _save_arrays(tmp, arrays)
    _save_names(tmp, photo_names)
    fsync_dir(tmp)
    files = _file_table(tmp, PQ_SEGMENT_FILES)
    os.rename(tmp, os.path.join(index_dir, name))
    fsync_dir(index_dir)
    return {"name": name, "kind": "pq", "descriptors": int(len(cells)),
            "photos": int(len(arrays["photo_ids.npy"])), "files": files}


def _check_files(index_dir: str, folder: str, files: dict, names, check: str) -> None:
    for fname in names:
        p = os.path.join(folder, fname)
        info = files.get(fname)
        if not isinstance(info, dict) or not isinstance(info.get("bytes"), int):
            raise IndexFileError(f"{manifest_path(index_dir)}: corrupt manifest (no size for {p})")
        try:
            size = os.path.getsize(p)
        except FileNotFoundError:
            raise IndexFileError(f"{p}: missing (the manifest lists it); rebuild the index") from None
        if size != info["bytes"]:
            kind = "truncated" if size < info["bytes"] else "corrupt"
            raise IndexFileError(
                f"{p}: {kind}: {size} bytes, the manifest says {info['bytes']}; rebuild the index"
            )
        if check == "full" and sha256_file(p) != info.get("sha256"):
            raise IndexFileError(f"{p}: corrupt (SHA-256 differs from the manifest); rebuild the index")


def _load_array(p: str, dtype: str, shape: tuple):
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFileError(f"{p}: corrupt array file ({exc}); rebuild the index") from None
    if arr.dtype != np.dtype(dtype) or arr.shape != shape:
        raise IndexFileError(
            f"{p}: corrupt array file ({arr.dtype}{arr.shape}, expected {dtype}{shape}); rebuild the index"
        )
    return arr


def _load_names(p: str, n: int) -> list[str]:
    try:
        with open(p, "rb") as f:
            names = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFileError(f"{p}: corrupt photo names ({exc}); rebuild the index") from None
    if not isinstance(names, list) or len(names) != n:
        raise IndexFileError(f"{p}: corrupt photo names (expected a list of {n})")
    return names


def open_segment(index_dir: str, entry: dict, dim: int, codebook=None, check: str = "size"):
    """A segment of either kind, opened for reading."""
    if entry.get("kind", "annoy") == "pq":
        if codebook is None:
            raise IndexFileError(f"{manifest_path(index_dir)}: corrupt manifest (a pq segment without a codebook)")
        return PQSegment(index_dir, entry, codebook, check)
    return Segment(index_dir, entry, dim, check)

class Segment:
    """An "annoy" segment opened for reading: memory-mapped arrays and Annoy index."""

    kind = "annoy"

    def __init__(self, index_dir: str, entry: dict, dim: int, check: str = "size"):
        from annoy import AnnoyIndex

        self.name = entry["name"]
        self.path = os.path.join(index_dir, self.name)
        self.n = int(entry["descriptors"])
        self.n_photos = int(entry["photos"])
        _check_files(index_dir, self.path, entry["files"], SEGMENT_FILES, check)
        rows = {"desc": self.n, "photo": self.n_photos}
        self.arrays = {}
        for fname, (dtype, trailing) in ARRAY_FILES.items():
            want_rows = rows["photo" if fname.startswith("photo_") else "desc"]
            width = dim if trailing == "D" else trailing
            want_shape = (want_rows,) if trailing is None else (want_rows, width)
            self.arrays[fname[:-4]] = _load_array(os.path.join(self.path, fname), dtype, want_shape)
        self.names: list[str] = _load_names(os.path.join(self.path, NAMES_FILE), self.n_photos)

        p = os.path.join(self.path, ANNOY_FILE)
        self.annoy = AnnoyIndex(dim, "angular")
        try:
            self.annoy.load(p, prefault=False)
        except OSError as exc:
            raise IndexFileError(f"{p}: corrupt Annoy index ({exc}); rebuild the index") from None
        if self.annoy.get_n_items() != self.n:
            raise IndexFileError(
                f"{p}: corrupt Annoy index ({self.annoy.get_n_items()} items, the manifest says {self.n})"
            )

    @property
    def descriptors(self) -> np.ndarray:
        return self.arrays["descriptors"]

    def close(self) -> None:
        self.annoy.unload()


class _RowDecoder:
    """Row-indexed view that decodes on access (``view[rows]`` or a slice)."""

    def __init__(self, n: int, width: int, fn):
        self.shape = (n, width)
        self.dtype = np.dtype(np.float32)
        self._fn = fn

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        return self._fn(np.asarray(rows, np.int64).reshape(-1))


class PQSegment:
    """A "pq" segment opened for reading: memory-mapped codes and tables; the
    per-row photo and keypoint are derived from the photo counts."""

    kind = "pq"

    def __init__(self, index_dir: str, entry: dict, codebook, check: str = "size"):
        self.name = entry["name"]
        self.path = os.path.join(index_dir, self.name)
        self.n = int(entry["descriptors"])
        self.n_photos = int(entry["photos"])
        self.codebook = codebook
        _check_files(index_dir, self.path, entry["files"], PQ_SEGMENT_FILES, check)
        rows = {"N": self.n, "L": codebook.nlist + 1, "P": self.n_photos}
        self.arrays = {}
        for fname, (dtype, r, trailing) in PQ_ARRAY_FILES.items():
            width = codebook.m if trailing == "m" else trailing
            shape = (rows[r],) if trailing is None else (rows[r], width)
            self.arrays[fname[:-4]] = _load_array(os.path.join(self.path, fname), dtype, shape)
        self.names = _load_names(os.path.join(self.path, NAMES_FILE), self.n_photos)
        counts = np.asarray(self.arrays["photo_counts"], np.int64)
        offs = np.asarray(self.arrays["list_offsets"], np.int64)
        if counts.sum() != self.n or offs[0] != 0 or offs[-1] != self.n or np.any(np.diff(offs) < 0):
            raise IndexFileError(f"{self.path}: corrupt segment (row counts disagree); rebuild the index")
        self.list_offsets = offs
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.arrays["desc_photo"] = np.repeat(np.asarray(self.arrays["photo_ids"], np.int32), counts)
        self.arrays["desc_keypoint"] = (np.arange(self.n, dtype=np.int64)
                                        - np.repeat(self.starts[:-1], counts)).astype(np.int32)
        self.arrays["desc_xy"] = _RowDecoder(self.n, 2, self._xy)
        self.arrays["descriptors"] = _RowDecoder(self.n, codebook.dim, self.unit_rows)
        self._position = None
        self._decoded = None

    def _xy(self, rows: np.ndarray) -> np.ndarray:
        photo = np.searchsorted(self.starts, rows, side="right") - 1
        sizes = np.asarray(self.arrays["photo_sizes"])[photo]
        return _pq().unpack_xy(np.asarray(self.arrays["xy12"])[rows], sizes).reshape(-1, 2)

    def positions(self) -> np.ndarray:
        """List position of every row (the inverse of list_rows); built on first use."""
        if self._position is None:
            pos = np.empty(self.n, np.int64)
            pos[_pq().unpack_rows(self.arrays["list_rows"])] = np.arange(self.n)
            self._position = pos
        return self._position

    def cells_codes(self, rows: np.ndarray):
        """(cells, codes) of segment rows."""
        pos = self.positions()[rows]
        cells = np.searchsorted(self.list_offsets, pos, side="right") - 1
        return cells, np.asarray(self.arrays["codes"])[pos]

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """Reconstructed descriptors of segment rows (float32, not renormalised)."""
        cells, codes = self.cells_codes(rows)
        return self.codebook.decode(cells, codes)

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        """Reconstructions of segment rows, L2-normalised like every descriptor the engine hands out."""
        d = self.decode_rows(rows)
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)

    def decoded(self):
        """All reconstructions by row and half their squared norms, for the
        exhaustive search of small segments (kept once built)."""
        if self._decoded is None:
            d = self.decode_rows(np.arange(self.n))
            self._decoded = (d, 0.5 * np.einsum("ij,ij->i", d, d).astype(np.float32))
        return self._decoded

    def close(self) -> None:
        pass


def segment_bytes(entry: dict) -> int:
    return sum(int(f["bytes"]) for f in entry["files"].values())


def sweep(index_dir: str, manifest: dict | None) -> list[str]:
    """Removes what no manifest references: segments of failed or killed
    writers and of compacted states, temporary files. Writer lock held."""
    keep = {s["name"] for s in manifest["segments"]} if manifest else set()
    if manifest and manifest.get("codebook"):
        keep.add(manifest["codebook"]["name"])
    removed = []
    for entry in os.listdir(index_dir):
        if entry in (MANIFEST, LOCK) or entry in keep:
            continue
        if entry.startswith((SEGMENT_PREFIX, TMP_PREFIX, CODEBOOK_PREFIX)):
            p = os.path.join(index_dir, entry)
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.remove(p)
                except FileNotFoundError:
                    pass
            removed.append(entry)
    return removed


# ---------------------------------------------------------------- writer lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """One writer at a time.

    The kernel's flock() is the lock itself, so a killed writer can never wedge
    the index (its lock dies with it); the pid written into the file is there to
    name the holder in messages and to tell, on the next acquisition, that the
    previous writer died without releasing (a stale lock), which is logged."""

    def __init__(self, index_dir: str, timeout: float = 0.0):
        self.path = os.path.join(index_dir, LOCK)
        self.timeout = timeout
        self.fd: int | None = None
        self.broke_stale: str | None = None

    def _holder(self) -> str:
        try:
            with open(self.path, "r") as f:
                return f.read().strip()
        except OSError:
            return ""

    def acquire(self) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = self._holder() or "unknown"
                    raise IndexLockedError(
                        f"{self.path}: the index is being written by another process ({holder}); "
                        f"try again when it has finished"
                    ) from None
                time.sleep(0.05)
        self.fd = fd
        previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if previous:
            # The holder's content survives only if it died before releasing.
            pid = _parse_pid(previous)
            dead = pid is not None and not _pid_alive(pid)
            state = "no longer running" if dead else "lock released by the kernel"
            self.broke_stale = previous
            log.warning(
                "%s: broke a stale writer lock (%s; %s): that writer was killed mid-operation; its "
                "unfinished work is discarded and the index keeps its last complete state",
                self.path, previous, state,
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        since = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} since={since}\n".encode())
        os.fsync(fd)
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            # Emptied, not unlinked: unlinking would let a waiter lock an orphaned inode.
            os.ftruncate(self.fd, 0)
            os.fsync(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _parse_pid(text: str) -> int | None:
    for word in text.split():
        if word.startswith("pid="):
            try:
                return int(word[4:])
            except ValueError:
                return None
    return None
