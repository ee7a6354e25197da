"""Features on disk: one HDF5 file, one group per image.

Layout (format version 1):
  file attributes  format_version (int), extractor_conf (JSON of the resolved
                   conf), descriptor_dim (int)
  /<name>          one group per image, <name> = path relative to the image
                   root ('/' makes nested groups); attribute image_size = [w, h]
    locations      (N, 2) float32 or float16, (x, y) original pixels
    descriptors    (N, D) float32 or float16
    scales         (N,)  float32
    scores         (N,)  float32

Writes go to ``<file>.partial`` (a copy of the existing file when adding to
one) and replace the target by an atomic rename when the batch ends, so the
user's file is never half-written; a killed run resumes from the partial file.
"""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np

from .features import Features

FORMAT_VERSION = 1
_DATASETS = ("locations", "descriptors", "scales", "scores")


class FeatureFileError(ValueError):
    """A features file that cannot be used (corrupt, wrong version, mismatched conf)."""


def _list_images(f: h5py.File) -> list[str]:
    names: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "image_size" in obj.attrs:
            names.append(name)

    f.visititems(visit)
    return sorted(names)


def _read_group(g: h5py.Group, path: str, name: str) -> Features:
    """One photo's Features; a missing or damaged dataset, or NaN / infinite
    values, is a FeatureFileError naming the file and the photo."""
    try:
        feats = Features(
            locations=g["locations"][()].astype(np.float32),
            descriptors=g["descriptors"][()].astype(np.float32),
            scales=g["scales"][()],
            scores=g["scores"][()],
            image_size=tuple(int(v) for v in g.attrs["image_size"]),
        )
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as exc:
        raise FeatureFileError(f"{path}: photo {name!r} cannot be read ({_one_line(exc)}); the file is damaged") \
            from None
    if not (np.isfinite(feats.locations).all() and np.isfinite(feats.descriptors).all()):
        raise FeatureFileError(f"{path}: photo {name!r} has NaN or infinite values")
    return feats


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _open_h5(path: str, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except IsADirectoryError:
        raise
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable features file ({_one_line(exc)})") from None


def _check_version(f: h5py.File, path: str) -> None:
    version = f.attrs.get("format_version")
    if version is None:
        raise FeatureFileError(f"{path}: not a features file of this engine (no format_version)")
    if int(version) != FORMAT_VERSION:
        raise FeatureFileError(
            f"{path}: features format version {int(version)}, this engine reads {FORMAT_VERSION}; re-extract"
        )


class FeatureFile:
    """Read-only access to a features file: ``names``, ``conf``, ``[name]``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path}: a folder, not a features file")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such features file")
        self._f = _open_h5(self.path, "r")
        try:
            _check_version(self._f, self.path)
            self.conf: dict = json.loads(self._f.attrs.get("extractor_conf", "{}"))
            self.names: list[str] = _list_images(self._f)
        except (KeyError, OSError, RuntimeError, TypeError, ValueError) as exc:
            self._f.close()
            if isinstance(exc, FeatureFileError):
                raise
            raise FeatureFileError(f"{self.path}: not a readable features file ({_one_line(exc)})") from None

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._f and "image_size" in self._f[name].attrs

    def __getitem__(self, name: str) -> Features:
        try:
            present = name in self
        except (KeyError, OSError, RuntimeError) as exc:
            raise FeatureFileError(f"{self.path}: photo {name!r} cannot be read ({_one_line(exc)})") from None
        if not present:
            raise KeyError(f"{self.path}: no image named {name!r}")
        return _read_group(self._f[name], self.path, name)

    def items(self):
        for name in self.names:
            yield name, self[name]

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_features(path: str | os.PathLike, name: str) -> Features:
    with FeatureFile(path) as ff:
        return ff[name]


class FeatureWriter:
    """Adds images to a features file; resumable and atomic (see module doc)."""

    def __init__(self, path: str | os.PathLike, conf: dict, float16: bool = False):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path}: a folder, where a features file is expected")
        self.partial = self.path + ".partial"
        self.conf = conf
        self.float16 = float16
        self._f = self._open_partial()

    def _open_partial(self) -> h5py.File:
        if os.path.exists(self.partial):
            try:
                f = h5py.File(self.partial, "a")
                _check_version(f, self.partial)
                self._check_conf(f, self.partial)
                return f
            except (OSError, FeatureFileError, KeyError):
                # A partial left by a run killed mid-write may be unreadable;
                # the target file is untouched, so start again from it.
                os.remove(self.partial)
        if os.path.exists(self.path):
            with _open_h5(self.path, "r") as src:
                _check_version(src, self.path)
                self._check_conf(src, self.path)
            shutil.copyfile(self.path, self.partial)
            return h5py.File(self.partial, "a")
        f = h5py.File(self.partial, "w")
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["extractor_conf"] = json.dumps(self.conf, sort_keys=True)
        return f

    def _check_conf(self, f: h5py.File, where: str) -> None:
        from .conf import describe_mismatch

        stored = json.loads(f.attrs.get("extractor_conf", "{}"))
        diff = describe_mismatch(stored, self.conf)
        if diff or stored.get("scoring") != self.conf.get("scoring"):
            diff = diff or f"scoring: {stored.get('scoring')!r} vs {self.conf.get('scoring')!r}"
            raise FeatureFileError(
                f"{where} was extracted with a different conf ({diff}); write to a new file"
            )

    def __contains__(self, name: str) -> bool:
        return name in self._f and "image_size" in self._f[name].attrs

    def names(self) -> list[str]:
        return _list_images(self._f)

    def write(self, name: str, feats: Features) -> None:
        if name in self._f:
            del self._f[name]
        g = self._f.create_group(name)
        fdt = np.float16 if self.float16 else np.float32
        g.create_dataset("locations", data=feats.locations.astype(fdt))
        g.create_dataset("descriptors", data=feats.descriptors.astype(fdt))
        g.create_dataset("scales", data=feats.scales)
        g.create_dataset("scores", data=feats.scores)
        if "descriptor_dim" not in self._f.attrs and len(feats):
            self._f.attrs["descriptor_dim"] = feats.dim
        # Written last: a group without image_size is an unfinished write and
        # is neither listed nor skipped on resume.
        g.attrs["image_size"] = np.asarray(feats.image_size, dtype=np.int64)
        self._f.flush()

    def discard(self) -> None:
        """Leave no file behind: nothing was written that the user asked for (the target is untouched)."""
        if self._f.id.valid:
            self._f.close()
        if os.path.exists(self.partial):
            os.remove(self.partial)
        self._discarded = True

    def close(self, commit: bool = True) -> None:
        if getattr(self, "_discarded", False):
            return
        if self._f.id.valid:
            self._f.flush()
            self._f.close()
        if commit:
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.partial, self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        # Interrupted: keep the partial file so the next run resumes from it.
        self.close(commit=exc_type is None)
