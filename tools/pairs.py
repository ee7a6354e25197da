"""Matching two photos: extract, match descriptors, verify geometry, draw.

Shared by `delf match` and `delf demo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairResult:
    features1: object
    features2: object
    matches: object  # verify.matching.Matches
    verification: object  # verify.Verification

    @property
    def inlier_points(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.matches.pairs[self.verification.inliers]
        return self.features1.locations[p[:, 0]], self.features2.locations[p[:, 1]]


def match_pair(extractor, image1, image2, model: str = "affine", residual_threshold: float | None = None,
               match_conf=None, seed: int = 0, border: float = 16.0) -> PairResult:
    """Matches left out of RANSAC: those whose two keypoints both lie within
    ``border`` pixels of their photo's edge (verify.rerank.RerankConf.border);
    they count as outliers in the result."""
    from verify import ransac
    from verify.matching import match_descriptors
    from verify.rerank import border_pairs, with_left_out

    f1, f2 = extractor.extract(image1), extractor.extract(image2)
    m = match_descriptors(f1.descriptors, f2.descriptors, match_conf)
    src, dst = f1.locations[m.pairs[:, 0]], f2.locations[m.pairs[:, 1]]
    keep = ~border_pairs(src, f1.image_size, dst, f2.image_size, border)
    v = ransac(src[keep], dst[keep], model=model, residual_threshold=residual_threshold, seed=seed,
               quality=m.quality[keep], src_size=f1.image_size, dst_size=f2.image_size)
    return PairResult(f1, f2, m, with_left_out(v, keep))


def draw_pair(result: PairResult, image1, image2, out: str, title: str | None = None) -> None:
    """Write a PNG of the inlier correspondences side by side (atomically)."""
    from verify.draw import draw_matches

    from .common import write_png

    p = result.matches.pairs
    canvas = draw_matches(image1, image2, result.features1.locations[p[:, 0]], result.features2.locations[p[:, 1]],
                          inliers=result.verification.inliers, title=title)
    write_png(out, canvas)
