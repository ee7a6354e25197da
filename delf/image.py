"""Loading photos robustly: every bad photo becomes an ImageError that names
the file and the problem; odd but valid photos (EXIF orientation, grayscale,
palette, RGBA, 16-bit, CMYK) come back as plain RGB uint8."""

from __future__ import annotations

import os
import warnings

import numpy as np

from common.labels import IMAGE_SUFFIXES

# A photo larger than this is refused before it is decoded: a few kilobytes of
# PNG or GIF can claim gigapixels (a decompression bomb).
MAX_PIXELS = 100_000_000
# Smaller than one feature-map cell at the finest pyramid level is useless.
MIN_SIDE = 32

IMAGE_EXTENSIONS = IMAGE_SUFFIXES


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rgb`` at ``width`` x ``height`` (area averaging when shrinking)."""
    import cv2

    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


class ImageError(ValueError):
    """A photo that cannot be used; the message names the file and why."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def problem_of(exc: Exception, path: str) -> str:
    """What is wrong with the photo at ``path``, without repeating its path."""
    text = getattr(exc, "problem", None) or str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _to_rgb_uint8(im, path) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Transparent areas would otherwise come out black; flatten onto white.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            peak = 65535.0 if arr.max(initial=0) <= 65535 else arr.max()
            arr = arr * (255.0 / peak)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_image(path, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """RGB uint8 (H, W, 3) of the photo at ``path``, upright per its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such photo")
    if os.path.isdir(path):
        raise ImageError(path, "is a folder, not a photo")
    if os.path.getsize(path) == 0:
        raise ImageError(path, "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            try:
                im = Image.open(path)
            except UnidentifiedImageError:
                raise ImageError(path, "not an image (unrecognised format)") from None
            except OSError as exc:
                raise ImageError(path, f"cannot be read ({exc})") from None
            with im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(
                        path,
                        f"{w}x{h} = {w * h / 1e6:.0f} megapixels exceeds the limit of {max_pixels / 1e6:.0f} "
                        "(a decompression bomb?); downscale it or raise max_pixels",
                    )
                try:
                    im.load()
                    im = ImageOps.exif_transpose(im)
                    rgb = _to_rgb_uint8(im, path)
                except (OSError, SyntaxError, ValueError) as exc:
                    raise ImageError(path, f"corrupt or truncated image data ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if min(rgb.shape[:2]) < min_side:
        raise ImageError(path, f"too small ({rgb.shape[1]}x{rgb.shape[0]}); needs at least {min_side} px per side")
    return np.ascontiguousarray(rgb)


def as_rgb(image, name: str = "<array>", min_side: int = MIN_SIDE) -> np.ndarray:
    """Validate an in-memory image and return RGB uint8 (H, W, 3)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(name, f"array of shape {np.asarray(image).shape} is not an image (H, W[, 1|3|4])")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = np.rint(arr / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ImageError(name, "float images must hold finite values in [0, 1]")
        arr = np.rint(arr * 255.0).astype(np.uint8)
    else:
        raise ImageError(name, f"unsupported pixel type {arr.dtype} (use uint8, uint16 or float in [0, 1])")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        arr = np.rint(arr[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    if min(arr.shape[:2]) < min_side:
        raise ImageError(name, f"too small ({arr.shape[1]}x{arr.shape[0]}); needs at least {min_side} px per side")
    return np.ascontiguousarray(arr)


def require_inputs(inputs) -> None:
    """Refuse a photo, folder or list given by name that does not exist (before any work starts)."""
    for item in inputs:
        if not isinstance(item, tuple) and not os.path.exists(os.fspath(item)):
            raise FileNotFoundError(f"{os.fspath(item)}: no such photo or folder")


def list_images(inputs) -> list[tuple[str, str]]:
    """(path, name) for each photo: folders are walked (sorted, names relative
    to the folder), files are taken as given (name = basename), (path, name)
    tuples as given. A text file ending in .txt lists one photo path per line."""
    out: list[tuple[str, str]] = []
    for item in inputs:
        if isinstance(item, tuple):  # (path, name) given by the caller
            out.append((os.fspath(item[0]), str(item[1])))
            continue
        item = os.fspath(item)
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for fn in sorted(files):
                    if fn.lower().endswith(IMAGE_EXTENSIONS):
                        p = os.path.join(root, fn)
                        out.append((p, os.path.relpath(p, item).replace(os.sep, "/")))
        elif item.lower().endswith(".txt") and os.path.isfile(item):
            base = os.path.dirname(item)
            with open(item) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        p = line if os.path.isabs(line) else os.path.join(base, line)
                        out.append((p, line.replace(os.sep, "/")))
        else:
            out.append((item, os.path.basename(item)))
    names = [n for _, n in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"several photos share the name(s) {', '.join(dup)}; pass their folder instead")
    return out
