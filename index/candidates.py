"""What a search hands to verification: plain arrays, no index objects.

``verify/`` consumes this without importing ``index``: every field is a NumPy
array (or a list of names), so the same data can come from a file or another
process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Candidates:
    """Top-N database photos for one query, ranked by (weighted) votes, with
    their putative correspondences.

    Per candidate photo (M rows, best first):
      names        list of M photo names (as in the features file)
      photo_ids    int64 (M,)  the index's photo ids
      votes        int32 (M,)  query keypoints with a counted match in the photo (one of
                   their k nearest neighbours, within SearchConf.cutoff)
      scores       float32 (M,) those matches' summed weights (SearchConf.weighting): the
                   ranking key; votes, then photo id, break ties
      image_sizes  int32 (M, 2) (width, height) of each database photo
      offsets      int64 (M+1,) candidate i owns correspondence rows offsets[i]:offsets[i+1]

    Per putative correspondence (C rows, grouped by candidate, then by query keypoint;
    at most one per query keypoint and photo: its nearest keypoint there):
      candidate    int32 (C,)  row of the candidate photo above
      query_idx    int32 (C,)  keypoint index in the query's Features
      db_idx       int32 (C,)  keypoint index in the database photo's Features
      distances    float32 (C,) Euclidean distance of the unit descriptors (= Annoy's angular)
      query_xy     float32 (C, 2) (x, y) of the query keypoint, query pixels
      db_xy        float32 (C, 2) (x, y) of the database keypoint, that photo's pixels
    """

    names: list
    photo_ids: np.ndarray
    votes: np.ndarray
    scores: np.ndarray
    image_sizes: np.ndarray
    offsets: np.ndarray
    candidate: np.ndarray
    query_idx: np.ndarray
    db_idx: np.ndarray
    distances: np.ndarray
    query_xy: np.ndarray
    db_xy: np.ndarray
    n_query: int = 0  # query descriptors searched
    generation: int = -1  # the index state (manifest generation) that answered
    mode: str = ""  # "annoy", "exact" or "mixed" (per segment)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.photo_ids)

    def correspondences(self, i: int) -> dict:
        """The putative correspondences of candidate ``i`` as aligned arrays."""
        s = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return {
            "query_idx": self.query_idx[s],
            "db_idx": self.db_idx[s],
            "distances": self.distances[s],
            "query_xy": self.query_xy[s],
            "db_xy": self.db_xy[s],
        }

    def select(self, rows) -> "Candidates":
        """The candidates at ``rows`` (indices or a boolean mask over candidates), in that order,
        with their correspondences."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if len(rows) != len(self):
                raise ValueError(f"mask has {len(rows)} entries for {len(self)} candidates")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        counts = self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        sel = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in rows]) if len(rows) \
            else np.zeros(0, np.int64)
        return Candidates(
            names=[self.names[i] for i in rows], photo_ids=self.photo_ids[rows], votes=self.votes[rows],
            scores=self.scores[rows], image_sizes=self.image_sizes[rows], offsets=offsets,
            candidate=np.repeat(np.arange(len(rows), dtype=np.int32), counts), query_idx=self.query_idx[sel],
            db_idx=self.db_idx[sel], distances=self.distances[sel], query_xy=self.query_xy[sel],
            db_xy=self.db_xy[sel], n_query=self.n_query, generation=self.generation, mode=self.mode,
            extra=dict(self.extra),
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self.names[i], self.correspondences(i)
