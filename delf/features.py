"""The data type every stage passes on: the local features of one image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Features:
    """Local features of one image, one row per keypoint.

    locations:   float32 (N, 2), (x, y) in the original image's pixels
                 (pixel centres at integer coordinates).
    descriptors: float32 (N, D), L2-normalised rows.
    scales:      float32 (N,), the pyramid scale the keypoint was found at
                 (the factor the original image was resized by); a keypoint
                 covers about stride / scale original pixels.
    scores:      float32 (N,), attention (or the selected scoring) per keypoint.
    image_size:  (width, height) of the original image.
    """

    locations: np.ndarray
    descriptors: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self):
        self.locations = np.ascontiguousarray(self.locations, dtype=np.float32).reshape(-1, 2)
        n = len(self.locations)
        desc = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        if desc.ndim != 2 or desc.shape[0] != n:
            raise ValueError(f"descriptors must be (N, D) with N={n}, got shape {desc.shape}")
        self.descriptors = desc
        self.scales = np.ascontiguousarray(self.scales, dtype=np.float32).reshape(-1)
        self.scores = np.ascontiguousarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.scales) != n or len(self.scores) != n:
            raise ValueError(
                f"scales ({len(self.scales)}) and scores ({len(self.scores)}) must have one entry per "
                f"location ({n})"
            )
        w, h = (int(v) for v in self.image_size)
        self.image_size = (w, h)

    def __len__(self) -> int:
        return len(self.locations)

    @property
    def dim(self) -> int:
        return self.descriptors.shape[1]

    def subset(self, index) -> "Features":
        return Features(
            self.locations[index], self.descriptors[index], self.scales[index], self.scores[index],
            self.image_size,
        )
