"""Geometric verification: Numba RANSAC over point correspondences.

Importing this package is cheap (NumPy only): Numba compiles the kernels on
first use and caches them on disk; OpenCV is imported by ``verify.draw`` only.
Nothing here imports the extractor (``delf``) or the index.
"""

from .matching import MATCH_PRESETS, MatchConf, Matches, match_descriptors
from .estimate import (
    MODELS,
    PRESETS,
    RansacConf,
    Verification,
    adaptive_trials,
    grid_spread,
    pair_seed,
    ransac,
    ransac_many,
)

__all__ = [
    "MATCH_PRESETS",
    "MODELS",
    "PRESETS",
    "MatchConf",
    "Matches",
    "RansacConf",
    "Verification",
    "adaptive_trials",
    "draw_matches",
    "grid_spread",
    "match_descriptors",
    "pair_seed",
    "ransac",
    "ransac_many",
    "read_image",
]


def __getattr__(name):
    if name in ("draw_matches", "read_image"):
        from . import draw

        return getattr(draw, name)
    raise AttributeError(name)
