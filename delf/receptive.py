"""Receptive-field centres of a convolutional path.

A keypoint is the centre of the receptive field of a feature-map cell. Along a
chain of convolutions each layer maps output index i to the input coordinate
``stride * i + (kernel - 1) / 2 - pad_before``; composing those affine maps
gives ``x = stride_total * i + offset``. With TensorFlow's 'same' padding,
``pad_before`` depends on the size of the layer's input (odd or even), so the
offset is computed for the actual input size rather than assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layer:
    kernel: int
    stride: int
    padding: "str | int"  # 'same' (TensorFlow rule), 'valid', or explicit zero padding before a 'valid' op


def _axis(size: int, layers: tuple[Layer, ...]) -> tuple[float, float, int]:
    scale, offset, n = 1.0, 0.0, int(size)
    for layer in layers:
        k, s = layer.kernel, layer.stride
        if layer.padding == "same":
            out = math.ceil(n / s)
            pad_before = max((out - 1) * s + k - n, 0) // 2
        elif layer.padding == "valid":
            pad_before = 0
            out = (n - k) // s + 1
        else:
            pad_before = int(layer.padding)
            out = (n + 2 * pad_before - k) // s + 1
        # x_prev = s * x_new + (k - 1) / 2 - pad_before, composed with what came before.
        offset += scale * ((k - 1) / 2 - pad_before)
        scale *= s
        n = out
    return scale, offset, n


def feature_grid(height: int, width: int, layers: tuple[Layer, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Receptive-field centres (x, y), in input pixel coordinates (pixel
    centres at integers), of every cell of the output map, as two 1-D arrays:
    the x of each column and the y of each row."""
    sy, oy, h = _axis(height, layers)
    sx, ox, w = _axis(width, layers)
    return (sx * np.arange(w) + ox).astype(np.float32), (sy * np.arange(h) + oy).astype(np.float32)


def output_size(height: int, width: int, layers: tuple[Layer, ...]) -> tuple[int, int]:
    return _axis(height, layers)[2], _axis(width, layers)[2]
