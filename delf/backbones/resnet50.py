"""ResNet-50 cut after conv4 (stride 16, 1024 channels): the DELF paper's backbone.

Weights: the standard Keras ImageNet notop .h5 file given by path, "imagenet"
(Keras downloads it; needs a network), or "random" (tests).
"""

from __future__ import annotations

import os

from ..receptive import Layer
from .base import Backbone

FEATURE_LAYER = "conv4_block6_out"
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"

# conv1: 3 px zero padding + 7x7/2; pool1: 1 px + 3x3/2; conv3_1 and conv4_1
# downsample with 1x1/2 convs. 3x3 'same' convs at stride 1 shift nothing.
GEOMETRY = (Layer(7, 2, 3), Layer(3, 2, 1), Layer(1, 2, 0), Layer(1, 2, 0))


class ResNet50Backbone(Backbone):
    name = "resnet50"
    channels = 1024
    stride = 16
    geometry = GEOMETRY

    def __init__(self, weights: str | None):
        if weights is None:
            raise ValueError(
                "backbone resnet50 needs --weights: the Keras ImageNet notop file "
                f"({WEIGHTS_FILE}), 'imagenet' to let Keras download it (needs a network), or 'random'"
            )
        if weights not in ("imagenet", "random") and not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: no such ResNet-50 weights file")
        self.weights = weights
        super().__init__()

    def build(self):
        import keras

        kw = None if self.weights == "random" else self.weights
        try:
            full = keras.applications.ResNet50(include_top=False, weights=kw, input_shape=(None, None, 3))
        except Exception as exc:  # Keras raises several types for a failed download or a bad file
            if self.weights == "imagenet":
                raise RuntimeError(
                    f"could not download the ResNet-50 ImageNet weights ({exc}); on a machine without a "
                    f"network, pass the file {WEIGHTS_FILE} with --weights"
                ) from exc
            raise ValueError(f"{self.weights}: not Keras ResNet-50 notop weights ({exc})") from exc
        return keras.Model(full.input, full.get_layer(FEATURE_LAYER).output, name="resnet50_conv4")

    def preprocess(self, rgb):
        # Keras' 'caffe' preprocessing: BGR, ImageNet means subtracted, no scaling.
        import tensorflow as tf

        bgr = tf.reverse(rgb, axis=[-1])
        return bgr - tf.constant([103.939, 116.779, 123.68])

    def identity(self) -> str:
        return f"resnet50:{os.path.basename(self.weights)}"
