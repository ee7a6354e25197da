"""Run a DELF SavedModel exported by the official code (tensorflow/models
research/delf, export_local_model.py).

Its serving signature takes input_image (uint8 [H, W, 3]), input_scales
(float32 [S]), input_max_feature_num (int32) and input_abs_thres (float32),
and returns boxes ([N, 4] as y1, x1, y2, x2 in the pixels of the image it was
given), features ([N, D]), scales ([N]) and scores ([N]). This module is the
interop boundary: keypoints become box centres as (x, y) in the original
photo, descriptors are L2-normalised (and PCA-projected when the conf names a
PCA file).
"""

from __future__ import annotations

import os

import numpy as np

from .conf import ExtractorConf
from .image import resize
from .features import Features
from .image import as_rgb, load_image
from common.files import sha256_file

from .pca import PCA, l2_normalise

INPUTS = ("input_image", "input_scales", "input_max_feature_num", "input_abs_thres")
OUTPUTS = ("boxes", "features", "scales", "scores")


class SavedModelExtractor:
    def __init__(self, conf: ExtractorConf):
        from .tfimport import import_tensorflow

        tf = import_tensorflow()

        self.conf = conf
        path = conf.weights
        if not path or not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such SavedModel directory (pass it with --weights)")
        try:
            model = tf.saved_model.load(path)
        except Exception as exc:  # TF raises OSError, ValueError or its own errors for a bad export
            raise ValueError(f"{path}: not a loadable SavedModel ({exc})") from exc
        sig = model.signatures.get("serving_default")
        if sig is None:
            raise ValueError(f"{path}: has no serving_default signature")
        names = set(sig.structured_input_signature[1])
        missing = [n for n in INPUTS if n not in names]
        if missing:
            raise ValueError(f"{path}: serving signature lacks inputs {', '.join(missing)} (has {sorted(names)})")
        self._model, self._sig, self._tf = model, sig, tf
        self.pca, self.pca_path = None, None
        if conf.pca not in (None, "default"):
            self.pca_path = conf.pca
            self.pca = PCA.load(conf.pca)
        self.descriptor_dim = None  # known after the first photo

    def resolved_conf(self) -> dict:
        d = self.conf.to_dict()
        d["pca_sha256"] = sha256_file(self.pca_path, 16) if self.pca_path else None
        d["descriptor_dim"] = self.conf.pca_dim if self.pca is not None else self.descriptor_dim
        return d

    def extract(self, image, name: str | None = None) -> Features:
        tf, conf = self._tf, self.conf
        rgb = load_image(image) if isinstance(image, (str, os.PathLike)) else as_rgb(image, name or "<array>")
        h0, w0 = rgb.shape[:2]
        factor = min(1.0, conf.max_image_size / max(w0, h0))
        fed = resize(rgb, max(1, round(w0 * factor)), max(1, round(h0 * factor)))
        out = self._sig(
            input_image=tf.constant(fed, tf.uint8),
            input_scales=tf.constant(conf.scales, tf.float32),
            input_max_feature_num=tf.constant(conf.max_features, tf.int32),
            input_abs_thres=tf.constant(-np.inf if conf.abs_threshold is None else conf.abs_threshold, tf.float32),
        )
        missing = [k for k in OUTPUTS if k not in out]
        if missing:
            raise ValueError(f"{conf.weights}: serving signature lacks outputs {', '.join(missing)}")
        boxes = out["boxes"].numpy().reshape(-1, 4).astype(np.float32)
        desc = out["features"].numpy().astype(np.float32)
        desc = desc.reshape(len(boxes), -1)
        # Box centres are (y, x) in the fed image; ours are (x, y) in the original.
        cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        sx, sy = w0 / fed.shape[1], h0 / fed.shape[0]
        locs = np.stack([(cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5], axis=1)
        desc = l2_normalise(desc) if len(desc) else desc
        if self.pca is not None:
            desc = self.pca.apply(desc, conf.pca_dim)
        self.descriptor_dim = desc.shape[1]
        scales = out["scales"].numpy().reshape(-1).astype(np.float32) * factor
        scores = out["scores"].numpy().reshape(-1).astype(np.float32)
        return Features(locs, desc, scales, scores, (w0, h0))
