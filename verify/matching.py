"""Putative correspondences between two descriptor sets (brute force, float32).

Nearest neighbours come from one matrix product per block of rows, which
BLAS runs at full speed; the filters are Lowe's ratio test, a mutual
(cross) check and an absolute distance bound (DELF keeps neighbours closer
than 0.8 between unit descriptors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from common.conf import DictConf


@dataclass(frozen=True)
class MatchConf(DictConf):
    """ratio:        keep a match when d(1st) < ratio * d(2nd); None disables.
    mutual:       keep i -> j only when i is also j's nearest neighbour.
    max_distance: keep a match when d(1st) < max_distance; None disables.
    block_rows:   rows of the first set per matrix product (bounds memory).
    """

    ratio: float | None = 0.9
    mutual: bool = True
    max_distance: float | None = None
    block_rows: int = 2048

    def __post_init__(self):
        if self.ratio is not None and not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio <= 1.0):
            raise ValueError(f"ratio must be in (0, 1] or None, got {self.ratio!r}")
        if self.max_distance is not None and not (
            isinstance(self.max_distance, (int, float)) and math.isfinite(self.max_distance)
            and self.max_distance > 0.0
        ):
            raise ValueError(f"max_distance must be a positive number or None, got {self.max_distance!r}")
        if not isinstance(self.mutual, bool):
            raise ValueError(f"mutual must be True or False, got {self.mutual!r}")
        if isinstance(self.block_rows, bool) or not isinstance(self.block_rows, int) or self.block_rows < 1:
            raise ValueError(f"block_rows must be a positive integer, got {self.block_rows!r}")


MATCH_PRESETS = {
    # Mutual nearest neighbours + ratio 0.9: the best of the prototype (DESIGN.md).
    "default": MatchConf(),
    # The official DELF matcher: nearest neighbour closer than 0.8, nothing else.
    "delf": MatchConf(ratio=None, mutual=False, max_distance=0.8),
    # Lowe's SIFT setting.
    "lowe": MatchConf(ratio=0.8, mutual=False),
}


@dataclass(frozen=True, eq=False)
class Matches:
    """pairs:     int64 (M, 2), row i = (index in set 1, index in set 2), sorted by the first.
    distances: float32 (M,), Euclidean distance of each pair.
    ratios:    float32 (M,), distance to the nearest over the second-nearest
               neighbour in set 2 (0 when set 2 has a single row); lower is
               more distinctive.
    """

    pairs: np.ndarray
    distances: np.ndarray
    ratios: np.ndarray

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def quality(self) -> np.ndarray:
        """Higher = more likely correct; what ``verify.ransac(quality=...)`` expects."""
        return -self.ratios.astype(np.float64)


def _descriptors(d, name: str) -> np.ndarray:
    try:
        a = np.asarray(d, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an (N, D) array of numbers: {exc}") from None
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return np.ascontiguousarray(a)


def match_descriptors(desc1, desc2, conf: MatchConf | str | Mapping | None = None, **overrides) -> Matches:
    """Putative matches from set 1 to set 2 (rows are descriptors, any norm).

    ``conf`` is a MatchConf, a preset name (``MATCH_PRESETS``) or a dict;
    ``overrides`` replace single fields, e.g. ``match_descriptors(a, b, ratio=0.8)``.
    """
    conf = MatchConf.resolve(conf, MATCH_PRESETS)
    if overrides:
        conf = conf.replace(**overrides)

    d1 = _descriptors(desc1, "desc1")
    d2 = _descriptors(desc2, "desc2")
    n1, n2 = len(d1), len(d2)
    if n1 and n2 and d1.shape[1] != d2.shape[1]:
        raise ValueError(f"descriptor dimensions differ: {d1.shape[1]} and {d2.shape[1]}")
    if n1 == 0 or n2 == 0:
        return Matches(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))

    sq1 = np.einsum("ij,ij->i", d1, d1)
    sq2 = np.einsum("ij,ij->i", d2, d2)
    nn = np.empty(n1, dtype=np.int64)
    first = np.empty(n1, dtype=np.float32)
    second = np.full(n1, np.inf, dtype=np.float32)
    col_best = np.full(n2, np.inf, dtype=np.float32)
    col_arg = np.zeros(n2, dtype=np.int64)
    rows = np.arange(conf.block_rows)
    for a in range(0, n1, conf.block_rows):
        b = min(a + conf.block_rows, n1)
        r = rows[: b - a]
        # Squared distances |x|^2 + |y|^2 - 2 x.y, built in place in the product's buffer.
        dist = d1[a:b] @ d2.T
        dist *= -2.0
        dist += sq1[a:b, None]
        dist += sq2[None, :]
        np.maximum(dist, 0.0, out=dist)
        if n2 >= 2:
            two = np.argpartition(dist, 1, axis=1)[:, :2]
            v = dist[r[:, None], two]
            swap = v[:, 1] < v[:, 0]
            two[swap] = two[swap][:, ::-1]
            v[swap] = v[swap][:, ::-1]
            nn[a:b] = two[:, 0]
            first[a:b] = v[:, 0]
            second[a:b] = v[:, 1]
        else:
            nn[a:b] = 0
            first[a:b] = dist[:, 0]
        if conf.mutual:
            arg = dist.argmin(axis=0)
            best = dist[arg, np.arange(n2)]
            better = best < col_best
            col_best[better] = best[better]
            col_arg[better] = arg[better] + a
    first = np.sqrt(first)
    second = np.sqrt(second)
    # Two equally near neighbours (second == 0) are as ambiguous as it gets: ratio 1.
    ratios = np.ones(n1, dtype=np.float32)
    pos = second > 0
    ratios[pos] = first[pos] / second[pos]
    keep = np.ones(n1, dtype=bool)
    if conf.ratio is not None:
        keep &= first < conf.ratio * second
    if conf.max_distance is not None:
        keep &= first < conf.max_distance
    if conf.mutual:
        keep &= col_arg[nn] == np.arange(n1)
    i1 = np.flatnonzero(keep)
    pairs = np.stack([i1, nn[i1]], axis=1).astype(np.int64)
    return Matches(pairs, first[i1].astype(np.float32), ratios[i1])


__all__ = ["MATCH_PRESETS", "MatchConf", "Matches", "match_descriptors"]
