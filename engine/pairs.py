"""Matching two photos: match descriptors, verify geometry, give a confidence, draw.

Behind `Engine.match`, `delf match` and `delf demo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pair:
    """Two photos verified against each other."""

    features1: object  # delf.Features
    features2: object
    matches: object  # verify.matching.Matches: the putative correspondences
    verification: object  # verify.Verification over every putative match (left-out ones are outliers)
    unique_inliers: int = 0  # inliers counted once per distinct location (what the confidence uses)
    confidence: float = 0.0  # calibrated as for a search result

    @property
    def inliers(self) -> int:
        return int(self.verification.num_inliers)

    @property
    def model(self):
        """The fitted model mapping photo 1 pixels to photo 2 pixels (3x3), or None."""
        return self.verification.model

    @property
    def inlier_points(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.matches.pairs[self.verification.inliers]
        return self.features1.locations[p[:, 0]], self.features2.locations[p[:, 1]]


def match_features(f1, f2, model: str = "affine", residual_threshold: float | None = None, match_conf=None,
                   seed: int = 0, border: float = 16.0, calibration=None) -> Pair:
    """Verify two photos' Features. Matches whose two keypoints both lie within
    ``border`` pixels of their photo's edge are left out of RANSAC
    (verify.rerank.RerankConf.border); they count as outliers in the result.
    With a ``calibration`` the pair gets a confidence, as a search result would."""
    from verify import ransac
    from verify.matching import match_descriptors
    from verify.rerank import border_pairs, unique_inliers, with_left_out

    m = match_descriptors(f1.descriptors, f2.descriptors, match_conf)
    src, dst = f1.locations[m.pairs[:, 0]], f2.locations[m.pairs[:, 1]]
    keep = ~border_pairs(src, f1.image_size, dst, f2.image_size, border)
    v = ransac(src[keep], dst[keep], model=model, residual_threshold=residual_threshold, seed=seed,
               quality=m.quality[keep], src_size=f1.image_size, dst_size=f2.image_size)
    v = with_left_out(v, keep)
    uniq = unique_inliers(src, dst, v.inliers)
    conf = 0.0
    if calibration is not None:
        from verify.confidence import distortion, scale_change

        conf = float(calibration.pair_confidence([uniq], [int(keep.sum())], [v.spread], [distortion(v.model)],
                                                   [scale_change(v.model)])[0])
    return Pair(f1, f2, m, v, uniq, conf)


def match_pair(extractor, image1, image2, **kwargs) -> Pair:
    """Extract two photos (paths or RGB arrays) with ``extractor`` and verify them (``match_features``)."""
    return match_features(extractor.extract(image1), extractor.extract(image2), **kwargs)


def pair_picture(result: Pair, image1, image2, title: str | None = None) -> np.ndarray:
    """RGB uint8 picture of the inlier correspondences side by side (images: paths or RGB arrays)."""
    from verify.draw import draw_matches

    p = result.matches.pairs
    return draw_matches(image1, image2, result.features1.locations[p[:, 0]], result.features2.locations[p[:, 1]],
                        inliers=result.verification.inliers, title=title)


def draw_pair(result: Pair, image1, image2, out: str, title: str | None = None) -> None:
    """Write a PNG of the inlier correspondences side by side (atomically)."""
    from common.files import write_png

    write_png(out, pair_picture(result, image1, image2, title))


__all__ = ["Pair", "draw_pair", "match_features", "match_pair", "pair_picture"]
