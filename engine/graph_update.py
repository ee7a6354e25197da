"""Making the match graph's rows (engine.graph): database photos search the index, itself left out."""

from __future__ import annotations

import os

from .graph import MIN_INLIERS, MatchGraph, graph_path, index_id


def graph_rows(answer) -> list:
    """The rows a photo's answer contributes: its verified results with at least MIN_INLIERS unique inliers."""
    return [(r.name, int(r.unique_inliers), int(r.putative), float(r.spread), float(r.scale_change))
            for r in answer.results if r.verified and r.unique_inliers >= MIN_INLIERS]


def update_graph(index, items, settings=None, progress: bool = False, rebuild: bool = False) -> MatchGraph:
    """Search ``index`` (an open index.Index) with each (name, Features) of
    ``items`` (photos of the index), itself left out, and store their rows in
    the index's graph (replacing the rows that touch them). ``rebuild``:
    start from an empty graph. Returns the graph written."""
    from tqdm import tqdm

    from .searching import SearchSettings, answer_query

    index_dir = index.path
    old = None if rebuild else MatchGraph.load(index_dir)
    if old is None and not rebuild and os.path.isfile(graph_path(index_dir)):
        raise ValueError(f"{graph_path(index_dir)}: a match graph of an older version or of another build of the "
                         f"index; build a new one (`delf index build`, or Engine.build) rather than add to it")
    graph = old if old is not None else MatchGraph(index_id(index_dir))
    s = (settings or SearchSettings()).resolved()
    # The rows hold what the pair model scores, and no graph is read while searching.
    s = SearchSettings(s.search, s.rerank, s.calibration.pair_model, s.calibration.pair_model.threshold)
    rows = {}  # photos are read one at a time (``items`` may be a generator over a features file)
    for name, feats in tqdm(items, desc="match graph", unit="photo", disable=None if progress else True):
        rows[name] = graph_rows(answer_query(index, feats, name, s, exclude=(name,)))
    graph = graph.replace(rows)
    graph.save(index_dir)  # readers notice the new file by its stamp (engine.graph.rows_for)
    return graph


def update_graph_from_features(index_dir, feature_files, names=None, settings=None, progress: bool = False,
                               rebuild: bool = False) -> MatchGraph:
    """``update_graph`` for photos read from features files (`delf index build/add`); ``names``: only these
    (default: every photo of the files that the index holds)."""
    from delf.featio import FeatureFile
    from index import Index

    with Index(os.fspath(index_dir)) as index:
        held = set(index.photos())
        want = held if names is None else set(names) & held

        def items():
            for path in feature_files:
                with FeatureFile(os.fspath(path)) as ff:
                    for name, feats in ff.items():
                        if name in want:
                            yield name, feats

        return update_graph(index, items(), settings, progress, rebuild)


__all__ = ["graph_rows", "update_graph", "update_graph_from_features"]
