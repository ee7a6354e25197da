"""Training inputs: labelled photos, their augmented copies and the frozen
backbone's feature maps of those copies (computed once, cached per photo).

Augmentation follows DELF's recipe: a random crop of 30 to 100% of the photo
at a random scale, rotation up to 15 degrees, a mild random perspective
(synthetic warps), colour jitter. Each photo gets a fixed number of copies
whose maps are cached, so training epochs cost no backbone pass.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from dataclasses import dataclass

import cv2
import numpy as np

from common.files import atomic_write_bytes, sha256_text
from common.labels import LabelledPhoto



@dataclass(frozen=True)
class AugmentConf:
    copies: int = 8  # augmented copies per photo
    min_side: int = 320  # longest side of a copy: uniform in [min_side, max_side]
    max_side: int = 640
    min_area: float = 0.3  # crop area, fraction of the photo
    max_rotation: float = 15.0  # degrees
    perspective: float = 0.06  # corner jitter, fraction of the copy's size
    jitter: float = 0.3  # brightness, contrast and saturation factors in [1 - j, 1 + j]
    hue: float = 8.0  # hue shift in degrees (OpenCV hue units are 2 degrees)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def random_homography(rng: np.random.Generator, w: int, h: int, conf: AugmentConf):
    """(H mapping photo pixels to copy pixels, copy width, copy height)."""
    area = rng.uniform(conf.min_area, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = min(w, np.sqrt(area * w * h * aspect))
    ch = min(h, np.sqrt(area * w * h / aspect))
    cx = rng.uniform(cw / 2, w - cw / 2)
    cy = rng.uniform(ch / 2, h - ch / 2)
    side = rng.uniform(conf.min_side, conf.max_side)
    s = side / max(cw, ch)
    ow, oh = max(32, int(round(cw * s))), max(32, int(round(ch * s)))
    a = np.deg2rad(rng.uniform(-conf.max_rotation, conf.max_rotation))
    # photo -> centred, rotated, scaled crop
    t1 = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    r = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], np.float64)
    sc = np.diag([s, s, 1.0])
    t2 = np.array([[1, 0, ow / 2], [0, 1, oh / 2], [0, 0, 1]], np.float64)
    m = t2 @ sc @ r @ t1
    if conf.perspective > 0:
        src = np.float32([[0, 0], [ow, 0], [ow, oh], [0, oh]])
        dst = src + rng.uniform(-conf.perspective, conf.perspective, (4, 2)).astype(np.float32) * [ow, oh]
        m = cv2.getPerspectiveTransform(src, dst.astype(np.float32)).astype(np.float64) @ m
    return m, ow, oh


def colour_jitter(rgb: np.ndarray, rng: np.random.Generator, conf: AugmentConf) -> np.ndarray:
    j = conf.jitter
    x = rgb.astype(np.float32)
    x *= rng.uniform(1 - j, 1 + j)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - j, 1 + j) + mean  # contrast
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(1 - j, 1 + j) + grey  # saturation
    x = np.clip(x, 0, 255).astype(np.uint8)
    if conf.hue > 0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        shift = int(round(rng.uniform(-conf.hue, conf.hue) / 2))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return x


def augment(rgb: np.ndarray, rng: np.random.Generator, conf: AugmentConf):
    """One augmented copy: (copy RGB, H from photo pixels to copy pixels)."""
    h, w = rgb.shape[:2]
    m, ow, oh = random_homography(rng, w, h, conf)
    # Shrink with area averaging first, so the warp itself never decimates.
    scale = np.sqrt(abs(np.linalg.det(m[:2, :2])))
    if scale < 0.9:
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        warp = m @ np.diag([w / sw, h / sh, 1.0])
    else:
        small, warp = rgb, m
    out = cv2.warpPerspective(small, warp, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return colour_jitter(out, rng, conf), m


def replay_geometry(width: int, height: int, rng: np.random.Generator, conf: AugmentConf):
    """(H, copy width, copy height) of the next copy ``augment`` would make
    with this generator, without making it: the same random draws."""
    m, ow, oh = random_homography(rng, width, height, conf)
    rng.uniform(size=3)  # brightness, contrast, saturation
    if conf.hue > 0:
        rng.uniform()
    return m, ow, oh


def photo_seed(seed: int, name: str) -> np.random.SeedSequence:
    digest = int.from_bytes(bytes.fromhex(sha256_text(name, 16)), "little")
    return np.random.SeedSequence([seed, digest])


class AugmentedMaps:
    """Cached feature maps of every photo's augmented copies:
    ``DIR/aug-<key>/<name>.npz`` with ``map0..map{copies-1}`` (float16)."""

    def __init__(self, root: str, backbone_name: str, weights, conf: AugmentConf, seed: int):
        key = json.dumps({"backbone": backbone_name, "weights": weights, "augment": conf.to_dict(), "seed": seed},
                         sort_keys=True)
        self.dir = os.path.join(os.fspath(root), "aug-" + sha256_text(key, 16))
        self.conf, self.seed = conf, seed
        os.makedirs(self.dir, exist_ok=True)
        meta = os.path.join(self.dir, "conf.json")
        if not os.path.isfile(meta):
            atomic_write_bytes(meta, key.encode())

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".npz")

    def geometry(self, photo: LabelledPhoto) -> list[tuple[np.ndarray, int, int]]:
        """(H photo -> copy, copy width, copy height) of each copy, replayed
        from the seed (no backbone pass)."""
        from PIL import Image

        from delf.image import load_image

        try:
            with Image.open(photo.path) as im:
                if im.getexif().get(0x0112, 1) == 1:
                    w, h = im.size
                else:
                    h, w = load_image(photo.path).shape[:2]
        except OSError:
            h, w = load_image(photo.path).shape[:2]
        rng = np.random.default_rng(photo_seed(self.seed, photo.name))
        return [replay_geometry(w, h, rng, self.conf) for _ in range(self.conf.copies)]

    def get(self, photo: LabelledPhoto, backbone) -> list[np.ndarray]:
        path = self.path(photo.name)
        if os.path.isfile(path):
            try:
                with np.load(path) as z:
                    return [z[f"map{i}"] for i in range(self.conf.copies)]
            except (KeyError, OSError, ValueError) as exc:
                raise ValueError(f"{path}: damaged cache entry ({exc}); delete it to recompute") from exc
        from delf.image import load_image

        rgb = load_image(photo.path)
        rng = np.random.default_rng(photo_seed(self.seed, photo.name))
        maps = []
        for _ in range(self.conf.copies):
            copy, _ = augment(rgb, rng, self.conf)
            maps.append(backbone(copy).astype(np.float16))
        buf = io.BytesIO()
        np.savez(buf, **{f"map{i}": m for i, m in enumerate(maps)})
        atomic_write_bytes(path, buf.getvalue())
        return maps


def split_photos(photos: list[LabelledPhoto], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): per class, round(n * val_fraction) photos go to
    validation, never all of a class."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    by_label: dict[str, list[int]] = {}
    for i, p in enumerate(photos):
        by_label.setdefault(p.label, []).append(i)
    train, val = [], []
    for label in sorted(by_label):
        idx = by_label[label]
        order = rng.permutation(len(idx))
        n_val = min(len(idx) - 1, int(round(len(idx) * val_fraction)))
        val += [idx[k] for k in order[:n_val]]
        train += [idx[k] for k in order[n_val:]]
    return sorted(train), sorted(val)


def survival_labels(map_a: np.ndarray, geo_a, map_b: np.ndarray, geo_b, grid, match_px: float) -> np.ndarray:
    """Per cell of copy A (row-major): 1 if it survives into copy B of the
    same photo (its descriptor's mutual nearest neighbour in B lies within
    ``match_px`` of where the true homography puts it), 0 if it does not,
    -1 if it falls outside B (no verdict). ``geo_*``: (H photo -> copy, copy
    width, copy height); ``grid(h, w)`` gives the cell centres (xs, ys)."""
    (ha, wa_, ha_), (hb, wb_, hb_) = (geo_a[0], geo_a[1], geo_a[2]), (geo_b[0], geo_b[1], geo_b[2])
    xa, ya = grid(ha_, wa_)
    xb, yb = grid(hb_, wb_)
    if (len(ya), len(xa)) != map_a.shape[:2] or (len(yb), len(xb)) != map_b.shape[:2]:
        raise RuntimeError("copy geometry does not match its feature map")
    pa = np.stack(np.meshgrid(xa, ya), axis=-1).reshape(-1, 2).astype(np.float64)
    pb = np.stack(np.meshgrid(xb, yb), axis=-1).reshape(-1, 2).astype(np.float64)
    h_ab = hb @ np.linalg.inv(ha)
    q = np.c_[pa, np.ones(len(pa))] @ h_ab.T
    q = q[:, :2] / q[:, 2:3]
    inside = (q[:, 0] >= 0) & (q[:, 0] < wb_) & (q[:, 1] >= 0) & (q[:, 1] < hb_)
    da = map_a.reshape(-1, map_a.shape[-1]).astype(np.float32)
    db = map_b.reshape(-1, map_b.shape[-1]).astype(np.float32)
    da /= np.maximum(np.linalg.norm(da, axis=1, keepdims=True), 1e-12)
    db /= np.maximum(np.linalg.norm(db, axis=1, keepdims=True), 1e-12)
    sim = da @ db.T
    nn_ab, nn_ba = sim.argmax(axis=1), sim.argmax(axis=0)
    mutual = nn_ba[nn_ab] == np.arange(len(da))
    close = np.linalg.norm(pb[nn_ab] - q, axis=1) < match_px
    out = np.where(mutual & close, 1, 0).astype(np.int8)
    out[~inside] = -1
    return out
