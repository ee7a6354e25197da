"""The engine behind `delf serve`'s endpoints (engine.server): uploads decoded
safely, extraction serialised, searches side by side, writes one at a time,
counters, and the inlier pictures kept in memory.

Every refusal is an ``ApiError`` (status and a message naming the problem),
which the server answers as ``{"error": message}``.
"""

import collections
import contextlib
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from urllib.parse import quote

import numpy as np

log = logging.getLogger("delf.serve")

PICTURES_KEPT = 32  # inlier pictures kept in memory for /match/{id}.png
THUMBNAILS_KEPT = 256
LATENCIES_KEPT = 100_000  # search latencies behind /stats (the last ones since start)
PICTURE_MAX_WIDTH = 1600  # wider inlier pictures are scaled down


class ApiError(Exception):
    """A request the server refuses: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# ---------------------------------------------------------------- names


_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def check_photo_name(name: str) -> str:
    """A database photo name as a request gives it: a relative path without
    '..', a leading '/' or control characters (ApiError 400 otherwise)."""
    parts = name.split("/")
    if not name or name.startswith("/") or _CONTROL.search(name) or any(p in ("", ".", "..") for p in parts):
        raise ApiError(400, f"bad photo name {name!r}: a photo name is a path inside the database folder, "
                            "without '..', a leading '/' or control characters")
    return name


def upload_name(filename: str | None) -> str:
    """The index name of an uploaded photo: its file name, sanitised (characters
    other than letters, digits, '.', '_' and '-' become '_'). A name holding a
    path ('../x.jpg', 'a/b.jpg') or without an image suffix is refused (400)."""
    from common.labels import IMAGE_SUFFIXES

    if not filename:
        raise ApiError(400, "each uploaded photo needs a file name (multipart filename=...)")
    if "/" in filename or "\\" in filename or _CONTROL.search(filename):
        raise ApiError(400, f"bad photo file name {filename!r}: send a plain file name, without a path or '../'")
    name = _UNSAFE.sub("_", filename).lstrip(".")[:200]
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise ApiError(400, f"bad photo file name {filename!r}: it must end in one of {', '.join(IMAGE_SUFFIXES)}")
    return name


def image_url(name: str) -> str:
    return f"/photos/{quote(name, safe='/')}/image"


# ---------------------------------------------------------------- the service


class Service:
    """The engine behind the endpoints: locks, counters, kept pictures."""

    def __init__(self, engine, token: str | None = None, db_images: str | None = None, max_upload_mb: float = 20,
                 max_pixels: int | None = None):
        from PIL import Image

        from delf.image import MAX_PIXELS

        if max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
        if db_images is not None and not os.path.isdir(db_images):
            raise FileNotFoundError(f"{db_images}: no such folder (--db-images)")
        self.engine = engine
        self.token = token or None
        self.db_images = os.path.abspath(db_images) if db_images else None
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_pixels = int(max_pixels or Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
        self.extract_lock = threading.Lock()  # TensorFlow: one extraction at a time
        self.write_lock = threading.Lock()  # adds and removals: one at a time in this process
        self.verify_lock = contextlib.nullcontext() if _threadsafe_numba() else threading.Lock()
        self._lock = threading.Lock()  # counters, pictures, thumbnails
        self._pictures: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._thumbs: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)
        self.counts = collections.Counter()
        self.started = time.time()

    # ------------------------------------------------------------ photos in

    def decode(self, data: bytes, name: str, field: str = "photo") -> np.ndarray:
        """RGB uint8 of an uploaded photo; ApiError 400 naming the problem otherwise."""
        from delf.image import ImageError, load_image

        if not data:
            raise ApiError(400, f"{field} {name!r}: empty upload (0 bytes)")
        with tempfile.NamedTemporaryFile(prefix="delf-serve-", suffix=os.path.splitext(name)[1][:10]) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                return load_image(tmp.name, max_pixels=self.max_pixels)
            except ImageError as exc:
                raise ApiError(400, f"{field} {name!r}: {exc.problem}") from None

    def extract(self, rgb: np.ndarray, name: str):
        with self.extract_lock:
            return self.engine.extractor.extract(rgb, name)

    def read_upload(self, upload, field: str) -> tuple[str, np.ndarray]:
        name = upload.filename or field
        return name, self.decode(upload.file.read(), name, field)

    # ------------------------------------------------------------ search and match

    def search(self, upload, top: int, threshold: float | None, labels: bool | None, draw: bool) -> dict:
        t0 = time.perf_counter()
        engine = self.engine
        if labels and engine.labels is None:
            raise ApiError(400, "labels: this server has no labels; start it with --labels CSV")
        name, rgb = self.read_upload(upload, "photo")
        feats = self.extract(rgb, name)
        with self.verify_lock:
            ans = engine.search(feats, name=name)
        if threshold is not None:
            ans.threshold = float(threshold)
        out = ans.to_dict(top, labelled=engine.labels is not None and labels is not False)
        if self.db_images:
            for r in out["results"]:
                r["image_url"] = image_url(r["name"])
            if draw and ans.best is not None:
                out["picture_url"] = self._result_picture(rgb, name, ans.best)
        ms = (time.perf_counter() - t0) * 1000
        out["timing_ms"]["total"] = round(ms, 3)
        with self._lock:
            self.counts["queries"] += 1
            self._latencies.append(ms)
        return out

    def _result_picture(self, rgb, name: str, result) -> str | None:
        from engine.searching import draw_result
        from verify.draw import read_image

        path = self.photo_path(result.name)
        if not os.path.isfile(path):
            return None
        try:
            canvas = draw_result(rgb, read_image(path), name, result)
        except (OSError, ValueError) as exc:
            log.warning("picture of %s -> %s not drawn: %s", name, result.name, exc)
            return None
        return None if canvas is None else self.keep_picture(canvas)

    def match(self, upload1, upload2) -> dict:
        from engine.pairs import pair_picture

        name1, rgb1 = self.read_upload(upload1, "photo1")
        name2, rgb2 = self.read_upload(upload2, "photo2")
        f1, f2 = self.extract(rgb1, name1), self.extract(rgb2, name2)
        with self.verify_lock:
            pair = self.engine.match(f1, f2)
        title = f"{name1} -> {name2}: {pair.inliers} inliers, confidence {pair.confidence:.3f}"
        with self._lock:
            self.counts["matches"] += 1
        return {
            "photo1": name1, "photo2": name2, "inliers": pair.inliers, "unique_inliers": int(pair.unique_inliers),
            "putative": len(pair.matches.pairs), "confidence": round(float(pair.confidence), 4),
            "threshold": self.engine.threshold, "match": bool(pair.confidence >= self.engine.threshold),
            "model": None if pair.model is None else np.round(pair.model, 6).tolist(),
            "picture_url": self.keep_picture(pair_picture(pair, rgb1, rgb2, title)),
        }

    def keep_picture(self, canvas: np.ndarray) -> str:
        """Encode an inlier picture as PNG, keep it (the last PICTURES_KEPT) and return its URL."""
        from common.files import png_bytes
        from delf.image import resize

        h, w = canvas.shape[:2]
        if w > PICTURE_MAX_WIDTH:
            canvas = resize(canvas, PICTURE_MAX_WIDTH, max(1, round(h * PICTURE_MAX_WIDTH / w)))
        data = png_bytes(canvas)
        pid = secrets.token_hex(8)
        with self._lock:
            self._pictures[pid] = data
            while len(self._pictures) > PICTURES_KEPT:
                self._pictures.popitem(last=False)
        return f"/match/{pid}.png"

    def picture(self, pid: str) -> bytes:
        with self._lock:
            data = self._pictures.get(pid)
        if data is None:
            raise ApiError(404, f"no picture {pid!r}: the server keeps the last {PICTURES_KEPT} pictures only")
        return data

    # ------------------------------------------------------------ the database

    def photo_path(self, name: str) -> str:
        return os.path.join(self.db_images, *name.split("/"))

    def add(self, uploads) -> dict:
        from index import IndexLockedError

        names, seen = [], set(self.engine.photos)
        for up in uploads:
            name = upload_name(up.filename)
            if name in seen:
                raise ApiError(409, f"photo {name!r} is already in the index; delete it first (DELETE /photos/{name})")
            seen.add(name)
            names.append(name)
        decoded = []
        for up, name in zip(uploads, names):
            data = up.file.read()
            decoded.append((name, data, self.decode(data, up.filename or name)))
        items = [(name, self.extract(rgb, name)) for name, _, rgb in decoded]
        saved = []  # files this request wrote into --db-images: removed again if the add fails
        try:
            for name, data, _ in decoded:
                if self.db_images and self._save_image(name, data):
                    saved.append(name)
            with self.write_lock:
                added = self.engine.add(items)
        except (ApiError, IndexLockedError, ValueError) as exc:  # a file in the way, another writer, a race
            for name in saved:
                os.remove(self.photo_path(name))
            if isinstance(exc, ApiError):
                raise
            if isinstance(exc, IndexLockedError):
                raise ApiError(409, f"the index is being written by another process; try again ({exc})") from None
            raise ApiError(409, str(exc)) from None
        with self._lock:
            self.counts["added"] += len(added)
        log.info("added %s (index generation %d)", ", ".join(added), self.engine.index.generation)
        return {"added": added, "count": len(self.engine.photos), "generation": self.engine.index.generation}

    def _save_image(self, name: str, data: bytes) -> bool:
        """Keep an added photo's file in --db-images so that its image can be served (True:
        written). A different file of that name already there is never overwritten."""
        from common.files import atomic_write_bytes

        path = self.photo_path(name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    return False
            raise ApiError(409, f"photo {name!r}: another file of that name is in the --db-images folder; "
                                "rename the photo")
        atomic_write_bytes(path, data)
        return True

    def remove(self, name: str) -> dict:
        from index import IndexLockedError

        check_photo_name(name)
        with self.write_lock:
            if name not in set(self.engine.photos):
                raise ApiError(404, f"no photo named {name!r} in the index")
            try:
                removed = self.engine.remove([name])
            except IndexLockedError as exc:
                raise ApiError(409, f"the index is being written by another process; try again ({exc})") from None
        with self._lock:
            self.counts["removed"] += len(removed)
        log.info("removed %s (index generation %d)", name, self.engine.index.generation)
        return {"removed": removed, "count": len(self.engine.photos), "generation": self.engine.index.generation}

    def image_file(self, name: str) -> str:
        check_photo_name(name)
        if not self.db_images:
            raise ApiError(404, "this server serves no photo images (start it with --db-images DIR)")
        if name not in set(self.engine.photos):
            raise ApiError(404, f"no photo named {name!r} in the index")
        path = self.photo_path(name)
        real, root = os.path.realpath(path), os.path.realpath(self.db_images)
        if not real.startswith(root + os.sep) or not os.path.isfile(real):
            raise ApiError(404, f"photo {name!r}: no image file in the --db-images folder")
        return real

    def thumbnail(self, name: str, max_side: int) -> bytes:
        """A JPEG of the photo, at most ``max_side`` pixels a side (upright per EXIF)."""
        import io

        from PIL import Image, ImageOps

        path = self.image_file(name)
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size, max_side)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        try:
            with Image.open(path) as im:
                if im.width * im.height > self.max_pixels:
                    raise ApiError(400, f"photo {name!r}: too large to make a thumbnail of")
                im.draft("RGB", (max_side, max_side))
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((max_side, max_side))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ApiError(404, f"photo {name!r}: its image file cannot be read ({exc})") from None
        data = buf.getvalue()
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > THUMBNAILS_KEPT:
                self._thumbs.popitem(last=False)
        return data

    # ------------------------------------------------------------ state

    def health(self) -> dict:
        engine = self.engine
        return {"status": "ok", "photos": len(engine.photos), "generation": engine.index.generation,
                "threshold": engine.threshold, "images": self.db_images is not None,
                "labels": engine.labels is not None, "token_required": self.token is not None,
                "max_upload_mb": round(self.max_upload_bytes / 1024 / 1024, 3)}

    def stats(self) -> dict:
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64)
            counts = dict(self.counts)
        p50, p95 = (float(np.percentile(lat, q)) for q in (50, 95)) if len(lat) else (None, None)
        engine = self.engine
        return {
            "photos": len(engine.photos), "descriptors": int(engine.index.n_descriptors),
            "generation": engine.index.generation, "queries_served": counts.get("queries", 0),
            "p50_ms": None if p50 is None else round(p50, 1), "p95_ms": None if p95 is None else round(p95, 1),
            "matches_served": counts.get("matches", 0), "photos_added": counts.get("added", 0),
            "photos_removed": counts.get("removed", 0), "uptime_s": round(time.time() - self.started, 1),
        }

    def check_token(self, credentials) -> None:
        if self.token is None:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(401, "this server needs 'Authorization: Bearer TOKEN' (its --token) to change the index",
                           challenge)
        if not secrets.compare_digest(credentials.credentials.encode(), self.token.encode()):
            raise ApiError(401, "wrong token", challenge)


def _threadsafe_numba() -> bool:
    """Whether Numba's parallel kernels may be entered from several threads at once
    (the tbb and omp threading layers; not workqueue). Known after the first parallel run."""
    try:
        import numba

        return numba.threading_layer() in ("tbb", "omp")
    except (ImportError, ValueError):
        return False


__all__ = ["ApiError", "Service", "check_photo_name", "image_url", "upload_name"]
