"""Training targets from real photo pairs: which cells become verified matches.

For the ``inliers`` objective of ``delf train attention``. Every cell of every
pyramid level of a photo is a candidate keypoint. Photos that share a label
are matched cell against cell (the engine's matcher and affine RANSAC, on the
engine's descriptors); when a pair verifies, each cell of either photo that
the fitted model maps inside the other photo counts as *seen*, and the cells
that are RANSAC inliers count as *inliers*. Photos of different labels are
matched too: every putative match between them is a *false match* for both
cells. A cell's target is ``inliers / (seen + false matches)``, the fraction
of its chances that it turned into a correct, verified correspondence; cells
with no chance at all get no target (-1).

This is DELF's question (which locations are worth keeping) asked of real
viewpoint, scale and lighting changes instead of class labels: a kept cell
should give inliers against other photos of its place and no matches
elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairConf:
    partners: int = 4  # same-label photos matched per photo (all when fewer)
    distractors: int = 2  # other-label photos matched per photo
    # Candidate cells per photo: the strongest by feature norm, plus a random
    # quarter drawn from the rest, so that the head also learns about cells
    # the norm would drop (matching every cell of a 1024 px pyramid, ~12k,
    # would cost seconds per pair).
    cells: int = 4000
    random_fraction: float = 0.25
    min_inliers: int = 15  # a same-label pair counts only when it verifies with this many inliers
    residual_px: float = 20.0  # affine RANSAC threshold, photo pixels (as the search's re-ranking)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PhotoCells:
    """All pyramid cells of one photo."""

    raw: np.ndarray  # (N, C) raw feature vectors, float16
    locations: np.ndarray  # (N, 2) photo pixels
    descriptors: np.ndarray  # (N, D) the engine's descriptors (L2, PCA, L2)
    size: tuple[int, int]  # (width, height)


def photo_cells(extractor, levels, image_size, conf: PairConf | None = None,
                rng: np.random.Generator | None = None) -> PhotoCells:
    """The candidate cells of a photo (``conf.cells`` of them, see PairConf)."""
    conf = conf or PairConf()
    raw, locs, _ = extractor.cells_from_maps(levels, image_size)
    if len(raw) > conf.cells:
        rng = rng or np.random.default_rng(0)
        n_rand = int(round(conf.cells * conf.random_fraction))
        order = np.argsort(-np.linalg.norm(raw, axis=1), kind="stable")
        top, rest = order[: conf.cells - n_rand], order[conf.cells - n_rand :]
        keep = np.sort(np.concatenate([top, rng.choice(rest, n_rand, replace=False)]))
        raw, locs = raw[keep], locs[keep]
    return PhotoCells(raw.astype(np.float16), locs, extractor.describe(raw), tuple(image_size))


def draw_pairs(labels: list[str], conf: PairConf, seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(same-label pairs, different-label pairs) as index pairs i < j, drawn
    per photo with a seeded generator; each unordered pair once."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    labels = np.asarray(labels)
    n = len(labels)
    same, diff = set(), set()
    for i in range(n):
        mates = np.flatnonzero((labels == labels[i]) & (np.arange(n) != i))
        others = np.flatnonzero(labels != labels[i])
        for j in rng.permutation(mates)[: conf.partners]:
            same.add((min(i, j), max(i, j)))
        for j in rng.permutation(others)[: conf.distractors]:
            diff.add((min(i, j), max(i, j)))
    return sorted(same), sorted(diff)


def _inside(points: np.ndarray, size) -> np.ndarray:
    w, h = size
    return (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)


def _apply(model: np.ndarray, points: np.ndarray) -> np.ndarray:
    q = np.c_[points, np.ones(len(points))] @ np.asarray(model, np.float64).T
    return q[:, :2] / q[:, 2:3]


class Evidence:
    """Per-cell counts over all pairs: inliers, seen, false matches."""

    def __init__(self, cells: list[PhotoCells]):
        self.inliers = [np.zeros(len(c.raw), np.int32) for c in cells]
        self.seen = [np.zeros(len(c.raw), np.int32) for c in cells]
        self.false = [np.zeros(len(c.raw), np.int32) for c in cells]

    def targets(self, i: int) -> np.ndarray:
        """Soft target per cell of photo i, -1 where there is no evidence."""
        chances = self.seen[i] + self.false[i]
        out = np.full(len(chances), -1.0, np.float32)
        has = chances > 0
        out[has] = self.inliers[i][has] / chances[has]
        return out


def gather_evidence(cells: list[PhotoCells], same, diff, conf: PairConf, seed: int = 0, progress: bool = False,
                    log=None):
    """Match and verify the pairs; returns (Evidence, stats dict)."""
    from tqdm import tqdm

    from verify import ransac
    from verify.matching import match_descriptors

    ev = Evidence(cells)
    verified = 0
    bar = tqdm(total=len(same) + len(diff), desc="pairs", unit="pair", disable=None if progress else True, dynamic_ncols=True)
    for k, (i, j) in enumerate(same):
        a, b = cells[i], cells[j]
        m = match_descriptors(a.descriptors, b.descriptors)
        bar.update()
        if len(m) < max(conf.min_inliers, 3):
            continue
        pa, pb = a.locations[m.pairs[:, 0]], b.locations[m.pairs[:, 1]]
        r = ransac(pa, pb, model="affine", residual_threshold=conf.residual_px, quality=m.quality,
                   seed=seed * 1_000_003 + k)
        if r.model is None or r.num_inliers < conf.min_inliers:
            continue
        model = np.asarray(r.model, np.float64)
        if abs(np.linalg.det(model[:2, :2])) < 1e-6:
            continue
        verified += 1
        ev.seen[i] += _inside(_apply(model, a.locations), b.size)
        ev.seen[j] += _inside(_apply(np.linalg.inv(model), b.locations), a.size)
        inl = m.pairs[np.asarray(r.inliers, bool)]
        ev.inliers[i][inl[:, 0]] += 1
        ev.inliers[j][inl[:, 1]] += 1
        # An inlier is seen by construction (a border cell can map just outside).
        ev.seen[i][inl[:, 0]] = np.maximum(ev.seen[i][inl[:, 0]], ev.inliers[i][inl[:, 0]])
        ev.seen[j][inl[:, 1]] = np.maximum(ev.seen[j][inl[:, 1]], ev.inliers[j][inl[:, 1]])
    false_matches = 0
    for i, j in diff:
        m = match_descriptors(cells[i].descriptors, cells[j].descriptors)
        bar.update()
        ev.false[i][m.pairs[:, 0]] += 1
        ev.false[j][m.pairs[:, 1]] += 1
        false_matches += len(m)
    bar.close()
    stats = {"same_pairs": len(same), "verified_pairs": verified, "different_pairs": len(diff),
             "false_matches": false_matches}
    if log:
        log(f"pairs: {verified} of {len(same)} same-label pairs verified, {false_matches} false matches in "
            f"{len(diff)} different-label pairs")
    return ev, stats
