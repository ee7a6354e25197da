"""Atomic file replacement and file digests: nothing a user wrote is ever lost or half-written."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile

# Prefix of the temporary files an atomic write leaves only when killed; a rerun may sweep them.
TMP_PREFIX = ".tmp-"


def fsync_dir(path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder,
    fsync, then rename over the target (readers see the old or the new file,
    never a mix). ``durable``: also fsync the folder, so that a power cut after
    the return keeps the new file (the index manifest needs this)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a folder, where a file is expected", path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + os.path.basename(path) + "-", dir=directory)
    except OSError as exc:
        # Name the file the user asked for, not our temporary one.
        raise type(exc)(exc.errno, exc.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; give it the permissions of a normal new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        fsync_dir(directory)


def check_writable(path) -> None:
    """Refuse, before any work, an output that cannot be written: the nearest
    existing folder at or above ``path`` must take a new file (probed with one,
    since root ignores permission bits but not read-only or immutable folders);
    a file in the way of a folder is named."""
    given = os.fspath(path)
    path = os.path.abspath(given)
    folder = path
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        if folder == path:
            folder = os.path.dirname(path)  # an existing file to replace: its folder must take a new one
        else:
            raise NotADirectoryError(errno.ENOTDIR, "a file, where a folder is expected", os.path.relpath(folder))
    try:
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX + "probe-", dir=folder)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, given) from None
    os.close(fd)
    os.remove(probe)


def sweep_tmp(folder) -> list[str]:
    """Remove the temporary files that a killed atomic write left in ``folder`` (not below it).
    Only for a folder that one writer owns: another writer's file in flight would go too."""
    folder = os.fspath(folder)
    gone = []
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            p = os.path.join(folder, entry)
            if entry.startswith(TMP_PREFIX) and os.path.isfile(p):
                os.remove(p)
                gone.append(p)
    return gone


def write_json(path, obj) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def png_bytes(rgb, what: str = "this picture") -> bytes:
    """An RGB uint8 array encoded as PNG, in memory."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{what}: cannot encode a PNG of this picture")
    return buf.tobytes()


def write_png(path, rgb) -> None:
    """An RGB uint8 array as a PNG, written atomically."""
    atomic_write_bytes(path, png_bytes(rgb, path))


def sha256_file(path, length: int | None = None) -> str:
    """Hex sha256 of a file's bytes (its first ``length`` hex digits when given)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()[:length]


def sha256_text(text: str, length: int | None = None) -> str:
    """Hex sha256 of a string's UTF-8 bytes (its first ``length`` hex digits when given)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


__all__ = ["TMP_PREFIX", "atomic_write_bytes", "check_writable", "fsync_dir", "fsync_file", "png_bytes", "sha256_file",
           "sha256_text", "sweep_tmp", "write_json", "write_png"]
