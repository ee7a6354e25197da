"""CNN backbones: each maps an RGB image to a stride-16 feature map and knows
the receptive-field centres of its cells."""

from __future__ import annotations

from .base import Backbone


def make_backbone(name: str, weights: str | None = None) -> Backbone:
    if name == "lite0":
        from .lite0 import Lite0Backbone

        return Lite0Backbone(weights)
    if name == "resnet50":
        from .resnet50 import ResNet50Backbone

        return ResNet50Backbone(weights)
    raise ValueError(f"unknown backbone {name!r} (lite0, resnet50)")


__all__ = ["Backbone", "make_backbone"]
