"""Pictures of verified matches: two photos side by side, inliers joined by lines.

OpenCV only (no matplotlib); arrays are RGB uint8 like everywhere else in
the engine. Pictures come back as arrays: writing files is the caller's
business (``tools.common.write_png``), which keeps one atomic writer in the
code base and verify free of the other packages.
"""

from __future__ import annotations

import os

import numpy as np


def read_image(path) -> np.ndarray:
    """RGB uint8 (H, W, 3) array of an image file; FileNotFoundError names the path."""
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such image: {path}")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path} (is it a JPEG/PNG/...?)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _rgb(image, name: str) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be an (H, W, 3) RGB image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {a.dtype}")
    return np.ascontiguousarray(a[:, :, :3])


def _color(i: int) -> tuple[int, int, int]:
    # Golden-angle hues: neighbouring lines get clearly different colours.
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_matches(image1, image2, points1, points2, inliers=None, *, draw_outliers: bool = False,
                 max_lines: int | None = 500, gap: int = 8, thickness: int = 1,
                 title: str | None = None) -> np.ndarray:
    """RGB uint8 picture: image1 left, image2 right, matched points joined.

    image1, image2: RGB arrays or image paths.
    points1, points2: aligned (N, 2) (x, y) pixels in each image.
    inliers: optional bool (N,); only inliers are joined (outliers as small
             red dots with ``draw_outliers``). Without it every pair is joined.
    max_lines: draw at most this many lines (an even subsample); None = all.
    """
    import cv2

    a = _rgb(image1, "image1")
    b = _rgb(image2, "image2")
    p1 = np.asarray(points1, dtype=np.float64).reshape(-1, 2)
    p2 = np.asarray(points2, dtype=np.float64).reshape(-1, 2)
    if len(p1) != len(p2):
        raise ValueError(f"points1 and points2 must have the same length, got {len(p1)} and {len(p2)}")
    mask = np.ones(len(p1), dtype=bool) if inliers is None else np.asarray(inliers, dtype=bool).reshape(-1)
    if len(mask) != len(p1):
        raise ValueError(f"inliers must have one entry per point ({len(p1)}), got {len(mask)}")

    h = max(a.shape[0], b.shape[0])
    top = 28 if title else 0
    canvas = np.full((h + top, a.shape[1] + gap + b.shape[1], 3), 255, dtype=np.uint8)
    canvas[top:top + a.shape[0], : a.shape[1]] = a
    ox = a.shape[1] + gap
    canvas[top:top + b.shape[0], ox:ox + b.shape[1]] = b
    finite = np.isfinite(p1).all(axis=1) & np.isfinite(p2).all(axis=1)

    def pt(p, dx):
        return int(round(p[0])) + dx, int(round(p[1])) + top

    if draw_outliers:
        for i in np.flatnonzero(~mask & finite):
            cv2.circle(canvas, pt(p1[i], 0), 2, (220, 40, 40), -1, cv2.LINE_AA)
            cv2.circle(canvas, pt(p2[i], ox), 2, (220, 40, 40), -1, cv2.LINE_AA)
    idx = np.flatnonzero(mask & finite)
    if max_lines is not None and len(idx) > max_lines:
        idx = idx[np.linspace(0, len(idx) - 1, max_lines).round().astype(np.int64)]
    for k, i in enumerate(idx):
        c = _color(k)
        q1, q2 = pt(p1[i], 0), pt(p2[i], ox)
        cv2.line(canvas, q1, q2, c, thickness, cv2.LINE_AA)
        cv2.circle(canvas, q1, 3, c, -1, cv2.LINE_AA)
        cv2.circle(canvas, q2, 3, c, -1, cv2.LINE_AA)
    if title:
        cv2.putText(canvas, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


__all__ = ["draw_matches", "read_image"]
