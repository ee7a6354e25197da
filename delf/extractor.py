"""The attentive local-feature extractor.

The base class owns everything that is not the network: loading and resizing,
the image pyramid, scoring, selection, mapping keypoints back to the original
image, PCA. Backbones stay pure (image in, feature map out).
"""

from __future__ import annotations

import copy
import os

import numpy as np

from .conf import ExtractorConf
from .features import Features
from .image import as_rgb, load_image, resize
from common.files import sha256_file

from .pca import PCA, l2_normalise

# Pyramid levels whose short side falls below this give a map of one or two
# cells: not worth a forward pass.
MIN_LEVEL_SIDE = 16


def default_pca_path(backbone: str) -> str:
    return os.path.join(os.path.dirname(__file__), "data", f"pca_{backbone}.npz")


def level_sizes(width: int, height: int, conf: ExtractorConf) -> list[tuple[float, int, int]]:
    """(scale, level width, level height) of each pyramid level; scales are
    relative to the image after limiting its longest side to max_image_size."""
    base = min(1.0, conf.max_image_size / max(width, height))
    out = []
    for s in conf.scales:
        lw, lh = max(1, round(width * base * s)), max(1, round(height * base * s))
        if min(lw, lh) >= MIN_LEVEL_SIDE:
            out.append((base * s, lw, lh))
    return out


class Extractor:
    """``Extractor(conf).extract(image) -> Features`` for the CNN backbones."""

    def __init__(self, conf: ExtractorConf | None = None):
        self.conf = conf = conf or ExtractorConf()
        if conf.backbone == "savedmodel":
            raise ValueError("use delf.savedmodel.SavedModelExtractor (or make_extractor) for backbone 'savedmodel'")
        from .backbones import make_backbone

        self.backbone = make_backbone(conf.backbone, conf.weights)
        self.head = None
        if conf.scoring == "attention":
            from .attention import AttentionHead, default_head_path

            self.head = AttentionHead.load(conf.attention_weights or default_head_path(conf.backbone))
        self.pca, self.pca_path = None, None
        if conf.pca is not None:
            self.pca_path = default_pca_path(conf.backbone) if conf.pca == "default" else conf.pca
            if conf.pca == "default" and not os.path.isfile(self.pca_path):
                raise FileNotFoundError(
                    f"no PCA shipped for backbone {conf.backbone!r} ({self.pca_path}); "
                    "fit one with `delf pca fit` or set pca=None"
                )
            self.pca = PCA.load(self.pca_path)
            if self.pca.input_dim != self.backbone.channels:
                raise ValueError(
                    f"{self.pca_path}: PCA for {self.pca.input_dim}-D descriptors, "
                    f"backbone {conf.backbone} gives {self.backbone.channels}"
                )
            if conf.pca_dim > self.pca.max_dim:
                raise ValueError(f"{self.pca_path}: has {self.pca.max_dim} components, pca_dim={conf.pca_dim}")

    def with_pyramid(self, scales=None, max_image_size=None) -> "Extractor":
        """A copy that shares the loaded network, head and PCA but uses another pyramid."""
        changes = {k: v for k, v in (("scales", scales), ("max_image_size", max_image_size)) if v is not None}
        other = copy.copy(self)
        other.conf = self.conf.replace(**changes)
        return other

    @property
    def descriptor_dim(self) -> int:
        return self.conf.pca_dim if self.pca is not None else self.backbone.channels

    def resolved_conf(self) -> dict:
        """The conf as written into artefacts, with what identifies the PCA."""
        d = self.conf.to_dict()
        d["pca_sha256"] = sha256_file(self.pca_path, 16) if self.pca_path else None
        d["descriptor_dim"] = self.descriptor_dim
        if self.head is not None:
            path = self.conf.attention_weights
            if path is None:
                from .attention import default_head_path

                path = default_head_path(self.conf.backbone)
            d["attention_sha256"] = sha256_file(path, 16)
        return d

    def load(self, image, name: str | None = None) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return load_image(image)
        return as_rgb(image, name or "<array>")

    def pyramid(self, rgb: np.ndarray):
        """Yield (scale, level image) for each pyramid level."""
        h, w = rgb.shape[:2]
        for scale, lw, lh in level_sizes(w, h, self.conf):
            yield scale, resize(rgb, lw, lh)

    def _score(self, fmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.conf.scoring == "norm":
            return np.linalg.norm(fmap, axis=2)
        if self.conf.scoring == "attention":
            return self.head(fmap)
        return rng.random(fmap.shape[:2], dtype=np.float32)

    def feature_maps(self, rgb: np.ndarray) -> list[tuple[float, int, int, np.ndarray]]:
        """(scale, level width, level height, raw feature map (h, w, C)) of each
        pyramid level: the backbone's part of ``extract``, cacheable."""
        out = []
        for scale, level in self.pyramid(rgb):
            lh, lw = level.shape[:2]
            out.append((scale, lw, lh, self.backbone(level)))
        return out

    def extract(self, image, name: str | None = None) -> Features:
        """Features of one photo (a path or an RGB array)."""
        rgb = self.load(image, name)
        h0, w0 = rgb.shape[:2]
        return self.features_from_maps(self.feature_maps(rgb), (w0, h0))

    def _cell_centres(self, lw: int, lh: int, fw: int, fh: int, w0: int, h0: int):
        """(x per column, y per row) in photo pixels of the cells of a level
        of size lw x lh whose map is fw x fh, for a photo of w0 x h0."""
        xs, ys = self.backbone.grid(lh, lw)
        if len(xs) != fw or len(ys) != fh:
            raise RuntimeError(
                f"receptive-field geometry gives a {len(ys)}x{len(xs)} map for a {lh}x{lw} input, "
                f"the network gave {fh}x{fw}"
            )
        # Level pixel centres -> original pixel centres (both at integer
        # coordinates). Border cells can look slightly outside the photo;
        # a keypoint is kept on it.
        gx = np.clip((xs + 0.5) * (w0 / lw) - 0.5, 0, w0 - 1)
        gy = np.clip((ys + 0.5) * (h0 / lh) - 0.5, 0, h0 - 1)
        return gx, gy

    def features_from_maps(self, levels, image_size) -> Features:
        """Features of one photo from its pyramid's raw feature maps (as
        ``feature_maps`` gives them) and its size (width, height): scoring,
        selection, keypoint geometry and descriptors, without the backbone."""
        w0, h0 = image_size
        conf = self.conf
        rng = np.random.default_rng(conf.seed)
        locs, feats, scales, scores = [], [], [], []
        for scale, lw, lh, fmap in levels:
            fmap = np.asarray(fmap, dtype=np.float32)
            fh, fw, c = fmap.shape
            s = self._score(fmap, rng).reshape(-1)
            gx, gy = self._cell_centres(lw, lh, fw, fh, w0, h0)
            keep = np.arange(fh * fw)
            if conf.abs_threshold is not None:
                keep = keep[s[keep] >= conf.abs_threshold]
            # Only the best max_features of any one level can survive the global cut.
            if len(keep) > conf.max_features:
                keep = keep[np.argpartition(-s[keep], conf.max_features - 1)[: conf.max_features]]
            iy, ix = np.divmod(keep, fw)
            locs.append(np.stack([gx[ix], gy[iy]], axis=1))
            feats.append(fmap.reshape(-1, c)[keep])
            scales.append(np.full(len(keep), scale, np.float32))
            scores.append(s[keep])
        if not locs:
            return self._empty((w0, h0))
        locs, feats = np.concatenate(locs), np.concatenate(feats)
        scales, scores = np.concatenate(scales), np.concatenate(scores)
        if len(scores) > conf.max_features:
            top = np.argpartition(-scores, conf.max_features - 1)[: conf.max_features]
        else:
            top = np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        desc = self.describe(feats[top])
        return Features(locs[top], desc, scales[top], scores[top], (w0, h0))

    def cells_from_maps(self, levels, image_size):
        """Every cell of a photo's pyramid, unscored and unselected: (raw
        feature vectors (N, C) float32, locations (N, 2) in photo pixels,
        scales (N,)), level by level, each level row-major. What training
        learns to score."""
        w0, h0 = image_size
        feats, locs, scales = [], [], []
        for scale, lw, lh, fmap in levels:
            fmap = np.asarray(fmap, dtype=np.float32)
            fh, fw, c = fmap.shape
            gxx, gyy = np.meshgrid(*self._cell_centres(lw, lh, fw, fh, w0, h0))
            feats.append(fmap.reshape(-1, c))
            locs.append(np.stack([gxx.reshape(-1), gyy.reshape(-1)], axis=1).astype(np.float32))
            scales.append(np.full(fh * fw, scale, np.float32))
        if not feats:
            c = self.backbone.channels
            return np.zeros((0, c), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
        return np.concatenate(feats), np.concatenate(locs), np.concatenate(scales)

    def describe(self, raw: np.ndarray) -> np.ndarray:
        """Raw feature-map vectors -> final descriptors (L2, PCA, L2)."""
        desc = l2_normalise(raw)
        if self.pca is not None:
            desc = self.pca.apply(desc, self.conf.pca_dim)
        return desc

    def _empty(self, size) -> Features:
        z = np.zeros(0, np.float32)
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, self.descriptor_dim), np.float32), z, z, size)


def make_extractor(conf: ExtractorConf | None = None):
    """The right extractor for ``conf.backbone`` (CNN backbones or a DELF SavedModel)."""
    conf = conf or ExtractorConf()
    if conf.backbone == "savedmodel":
        from .savedmodel import SavedModelExtractor

        return SavedModelExtractor(conf)
    return Extractor(conf)
