"""The one reader of labels files: CSV rows of (photo, label), with or without a header.

Used by `delf search --labels`, `delf calibrate`, `delf train`, `delf evaluate
collection` and `delf bench pairs`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

# What counts as a photo by its file name, everywhere in the engine.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


@dataclass(frozen=True)
class LabelledPhoto:
    path: str  # where the photo is
    name: str  # unique name, as stored in features files and the index
    label: str


def read_label_rows(path, column: str | None = None) -> list[tuple[int, str, str]]:
    """(line number, photo, label) of every non-blank row of a labels CSV.

    The first column names a photo; the label is the column named ``column``
    in the header, else the second. A first row whose first cell is not a
    photo file name is a header."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such labels file")
    try:
        with open(path, newline="") as f:
            rows = [(i, r) for i, r in enumerate(csv.reader(f), start=1) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a labels CSV ({exc})") from None
    li = 1
    if rows and not rows[0][1][0].strip().lower().endswith(IMAGE_SUFFIXES):
        header = [h.strip() for h in rows[0][1]]
        if column and column in header:
            li = header.index(column)
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path}: no labelled photos (expected rows of photo,label)")
    out = []
    for i, row in rows:
        if len(row) <= li or not row[0].strip() or not row[li].strip():
            raise ValueError(f"{path}, line {i}: expected photo,label, got {','.join(row)!r}")
        out.append((i, row[0].strip(), row[li].strip()))
    return out


def load_labels(path, column: str | None = None) -> dict:
    """{photo: label} of a labels CSV (see ``read_label_rows``)."""
    return {photo: label for _, photo, label in read_label_rows(path, column)}


def labels_for(names, labels: dict) -> dict:
    """Map index photo names to labels, matching a labels file that names
    photos by basename or by a path suffix (a basename shared by photos of
    two labels matches none of them)."""
    out = {}
    by_base: dict = {}
    for k, v in labels.items():
        by_base.setdefault(os.path.basename(k), set()).add(v)
    for n in names:
        if n in labels:
            out[n] = labels[n]
        else:
            cand = by_base.get(os.path.basename(n))
            if cand and len(cand) == 1:
                out[n] = next(iter(cand))
    return out


def labelled_photos(images, labels, prefix: str = "", column: str | None = None,
                    label_prefix: str = "") -> list[LabelledPhoto]:
    """The photos of the folder ``images`` with their labels.

    ``labels`` is a labels CSV (its photos named by path relative to
    ``images``, or by a file name found once anywhere below it); or the word
    ``folders``: each photo's label is the folder it sits in (e.g. one WxBS
    pair per folder); or ``none``: every photo below ``images``, labelled "-".
    Names are ``prefix/relative path`` (the relative path alone without a
    prefix); labels get ``label_prefix`` in front."""
    images = os.fspath(images)
    if not os.path.isdir(images):
        raise FileNotFoundError(f"{images}: no such folder of photos")

    def name_of(p: str) -> str:
        rel = os.path.relpath(p, images).replace(os.sep, "/")
        return f"{prefix}/{rel}" if prefix else rel

    out = []
    if labels in ("folders", "none"):
        for root, dirs, files in os.walk(images):
            dirs.sort()
            for f in sorted(files):
                if f.lower().endswith(IMAGE_SUFFIXES):
                    p = os.path.join(root, f)
                    rel = os.path.relpath(os.path.dirname(p), images).replace(os.sep, "/")
                    label = label_prefix + rel if labels == "folders" else "-"
                    out.append(LabelledPhoto(p, name_of(p), label))
        if not out:
            raise ValueError(f"{images}: no photos found in its subfolders")
        return out
    rows = read_label_rows(labels, column)
    by_base: dict = {}
    for root, _, files in os.walk(images):
        for fn in files:
            by_base.setdefault(fn, []).append(os.path.join(root, fn))
    for i, rel, label in rows:
        p = os.path.join(images, rel)
        if not os.path.isfile(p):
            hits = by_base.get(os.path.basename(rel), [])
            if len(hits) != 1:
                raise FileNotFoundError(f"{labels}, line {i}: photo {rel!r} not found under {images}")
            p = hits[0]
        out.append(LabelledPhoto(p, name_of(p), label_prefix + label))
    return out


__all__ = ["IMAGE_SUFFIXES", "LabelledPhoto", "labelled_photos", "labels_for", "load_labels", "read_label_rows"]
