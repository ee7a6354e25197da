"""Annoy descriptor index with segments, tombstones and an atomic manifest.

Importing this package is cheap and never imports TensorFlow.

    from index import build_index, add_to_index, Index, SearchConf
    build_index("db.idx", ["db.h5"])
    with Index("db.idx") as idx:
        cands = idx.search(query_features, SearchConf(top_n=100))
"""

from .candidates import Candidates
from .search import Index, SearchConf, open_index
from .store import FORMAT_VERSION, IndexFileError, IndexLockedError
from .writer import (IndexConf, add_features_to_index, add_to_index, build_index, build_index_from_features, compact_index,
                     index_info, remove_from_index)

__all__ = [
    "Candidates", "FORMAT_VERSION", "Index", "IndexConf", "IndexFileError", "IndexLockedError", "SearchConf",
    "add_features_to_index", "add_to_index", "build_index", "build_index_from_features", "compact_index", "index_info", "open_index",
    "remove_from_index",
]
