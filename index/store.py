"""The index directory on disk: manifest, segments, writer lock.

Layout (format version 1)::

    INDEX/
      manifest.json        the current state; replaced atomically, never edited
      LOCK                 writer lock: flock()ed by the writer, holds its pid
      seg-<gen>-<hex>/     one immutable segment per add, build or compact
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
FORMAT_VERSION = 1
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
        "generation": 0,
        "dim": int(dim),
        "extractor_conf": extractor_conf,
        "index_conf": index_conf,
        "next_photo_id": 0,
        "segments": [],
        "tombstones": [],
    }


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
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{path}: index format version {version}, this engine reads version {FORMAT_VERSION}; "
            f"rebuild the index with `delf index build`"
        )
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
    return m


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
        "photo_ids.npy": np.ascontiguousarray(photo_ids, np.int32),
        "photo_sizes.npy": np.ascontiguousarray(photo_sizes, np.int32).reshape(-1, 2),
        "photo_counts.npy": np.ascontiguousarray(photo_counts, np.int32),
    }
    for fname, arr in arrays.items():
        with open(os.path.join(tmp, fname), "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    with open(os.path.join(tmp, NAMES_FILE), "wb") as f:
        f.write(json.dumps(list(photo_names)).encode())
        f.flush()
        os.fsync(f.fileno())

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

    files = {}
    for fname in SEGMENT_FILES:
        p = os.path.join(tmp, fname)
        files[fname] = {"bytes": os.path.getsize(p), "sha256": sha256_file(p)}
    final = os.path.join(index_dir, name)
    os.rename(tmp, final)
    fsync_dir(index_dir)
    return {
        "name": name,
        "descriptors": int(len(desc)),
        "photos": int(len(arrays["photo_ids.npy"])),
        "n_trees": int(n_trees),
        "files": files,
    }


class Segment:
    """A segment opened for reading: memory-mapped arrays and Annoy index."""

    def __init__(self, index_dir: str, entry: dict, dim: int, check: str = "size"):
        from annoy import AnnoyIndex

        self.name = entry["name"]
        self.path = os.path.join(index_dir, self.name)
        self.n = int(entry["descriptors"])
        self.n_photos = int(entry["photos"])
        files = entry["files"]
        for fname in SEGMENT_FILES:
            p = os.path.join(self.path, fname)
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

        rows = {"desc": self.n, "photo": self.n_photos}
        self.arrays = {}
        for fname, (dtype, trailing) in ARRAY_FILES.items():
            p = os.path.join(self.path, fname)
            try:
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise IndexFileError(f"{p}: corrupt array file ({exc}); rebuild the index") from None
            want_rows = rows["photo" if fname.startswith("photo_") else "desc"]
            width = dim if trailing == "D" else trailing
            want_shape = (want_rows,) if trailing is None else (want_rows, width)
            if arr.dtype != np.dtype(dtype) or arr.shape != want_shape:
                raise IndexFileError(
                    f"{p}: corrupt array file ({arr.dtype}{arr.shape}, expected {dtype}{want_shape}); "
                    f"rebuild the index"
                )
            self.arrays[fname[:-4]] = arr
        p = os.path.join(self.path, NAMES_FILE)
        try:
            with open(p, "rb") as f:
                names = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFileError(f"{p}: corrupt photo names ({exc}); rebuild the index") from None
        if not isinstance(names, list) or len(names) != self.n_photos:
            raise IndexFileError(f"{p}: corrupt photo names (expected a list of {self.n_photos})")
        self.names: list[str] = names

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


def segment_bytes(entry: dict) -> int:
    return sum(int(f["bytes"]) for f in entry["files"].values())


def sweep(index_dir: str, manifest: dict | None) -> list[str]:
    """Removes what no manifest references: segments of failed or killed
    writers and of compacted states, temporary files. Writer lock held."""
    keep = {s["name"] for s in manifest["segments"]} if manifest else set()
    removed = []
    for entry in os.listdir(index_dir):
        if entry in (MANIFEST, LOCK) or entry in keep:
            continue
        if entry.startswith(SEGMENT_PREFIX) or entry.startswith(TMP_PREFIX):
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
