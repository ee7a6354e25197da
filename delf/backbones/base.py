"""The backbone interface."""

from __future__ import annotations

import numpy as np

from ..receptive import Layer, feature_grid, output_size


class Backbone:
    name: str = ""
    channels: int = 0
    stride: int = 16
    # The path from the input to the feature map, for receptive-field centres.
    geometry: tuple[Layer, ...] = ()
    # Where a cell actually looks, relative to its geometric receptive-field
    # centre, in input pixels (x and y): trained weights need not be centred.
    centre_offset: float = 0.0

    def __init__(self):
        from ..tfimport import import_tensorflow

        tf = import_tensorflow()

        self._tf = tf
        self.model = self.build()
        self._forward = tf.function(
            lambda x: self.model(self.preprocess(x), training=False),
            input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)],
            reduce_retracing=True,
        )

    def build(self):  # -> keras.Model from RGB [1, H, W, 3] (preprocessed) to [1, h, w, C]
        raise NotImplementedError

    def preprocess(self, rgb):
        """Map RGB in [0, 255] to the network's input range."""
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Feature map (h, w, C) float32 of one RGB uint8/float image (H, W, 3)."""
        x = self._tf.convert_to_tensor(np.asarray(rgb, dtype=np.float32)[None])
        return self._forward(x)[0].numpy()

    def grid(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Keypoint positions (xs per column, ys per row) for an input of this
        size: receptive-field centres plus the backbone's centre offset."""
        xs, ys = feature_grid(height, width, self.geometry)
        return xs + self.centre_offset, ys + self.centre_offset

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return output_size(height, width, self.geometry)

    def identity(self) -> str:
        """What identifies the weights in a conf (written into artefacts)."""
        return self.name
