"""`Engine`: the one object a script needs. Open an index, search it with a
photo, read the answer.

    from engine import Engine

    with Engine.open("out/demo/index") as engine:
        answer = engine.search("query.jpg")
        print(answer.match, answer.best.name, answer.confidence)

The command line (`delf search`, `delf match`, `delf demo`, ...) and the
evaluations call this same object, so they cannot drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from index import Index, IndexConf, SearchConf
from verify.confidence import Calibration
from verify.matching import MATCH_PRESETS, MatchConf
from verify.rerank import Answer, RerankConf

from .diffusion import MIN_SOURCE
from .pairs import Pair, match_features
from .searching import SearchSettings, answer_query, conf_from_resolved, query_items

FEATURE_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class EngineConf:
    """How an Engine searches; one default per knob.

    candidates: photos taken from the index by descriptor votes and verified.
    search_k:   Annoy nodes inspected per query descriptor (SearchConf's default).
    seed:       RANSAC seed of each query (candidate i uses ``pair_seed(seed, i)``).
    threshold:  confidence at or above which the best result is a match (None: the calibration's).
    expand:     up to this many confident results expand the query for a second search
                (engine.expansion; 0: off).
    diffuse:    results with at least this many unique inliers lend their standing to the photos
                linked to them in the index's match graph (engine.diffusion; 0: off).
    """

    candidates: int = 100
    search_k: int = SearchConf.search_k
    seed: int = 0
    threshold: float | None = None
    # Query expansion from the best confident result. Chosen by leave-one-out search of the 202
    # labelled landmarks/ and ukbench/ photos (evaluation.loo, 2026-11-29): mAP 96.70 without,
    # 96.89 / 96.86 / 96.80 expanding from 1 / 2 / 3 results, 432 ms -> 556 ms per query.
    expand: int = 1
    # Diffusion over the match graph. Chosen by the same leave-one-out search (2026-11-29, compact index,
    # docs/results.md#diffusion-over-the-match-graph): mAP 96.68 without, 98.97 / 98.73 / 98.35 / 97.70
    # from results with >= 3 / 5 / 10 / 20 unique inliers (1 and 2: as 3).
    diffuse: int = MIN_SOURCE

    def __post_init__(self):
        for name in ("candidates", "search_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("expand", "diffuse"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")


class Engine:
    """An index opened for searching and matching, with its extractor and calibration.

    The extractor (TensorFlow) is built on the first photo that needs it, with
    the conf the index was built with, so queries always match the database.
    """

    def __init__(self, index_dir, calibration: Calibration | str | os.PathLike | None = None,
                 threshold: float | None = None, labels: dict | str | os.PathLike | None = None,
                 candidates: int = EngineConf.candidates, search_k: int = EngineConf.search_k,
                 seed: int = EngineConf.seed, expand: int = EngineConf.expand, extractor=None, client=None,
                 diffuse: int = EngineConf.diffuse):
        self.conf = EngineConf(candidates=candidates, search_k=search_k, seed=seed, threshold=threshold,
                               expand=expand, diffuse=diffuse)
        if not os.path.isdir(index_dir):
            raise FileNotFoundError(f"{index_dir}: no such index directory")
        cal = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
        self.settings = SearchSettings(
            search=SearchConf(top_n=candidates, search_k=search_k),
            rerank=RerankConf(verify_top=candidates, seed=seed), calibration=cal, threshold=threshold,
        ).resolved()
        # client: a distributed.Client whose workers search the index's shards (segments)
        self.index = Index(index_dir, client=client)
        self.index_dir = os.fspath(index_dir)
        self._labels_source = labels
        self._labels = None  # (index generation, {name: label})
        self._extractor = extractor
        self.failed: list[str] = []  # photos the last build or add could not use ("path: problem")

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, index_dir, **kwargs) -> "Engine":
        """An Engine over an existing index (``delf index build`` or ``Engine.build``)."""
        return cls(index_dir, **kwargs)

    @classmethod
    def build(cls, index_dir, photos, extractor=None, overwrite: bool = False, index_conf: IndexConf | None = None,
              graph: bool | None = None, **kwargs) -> "Engine":
        """Extract ``photos`` (photo files, folders, .txt lists, or features
        .h5 files from `delf extract`) and index them at ``index_dir``; returns
        the Engine over the new index. ``extractor``: an Extractor or an
        ExtractorConf (default: the default conf). ``graph``: also build the
        database's match graph (every photo searches the index once; a
        version 3 confidence reads which photos are one place from it, and
        diffusion walks it, engine.graph); None: when diffusion is on or the
        calibration reads it."""
        from index import build_index, build_index_from_features

        photos = [photos] if isinstance(photos, (str, os.PathLike)) else list(photos)
        if not photos:
            raise ValueError("build needs at least one photo, folder or features file")
        index_conf = index_conf or IndexConf(build_threads=1)
        if all(os.fspath(p).lower().endswith(FEATURE_SUFFIXES) for p in photos if not isinstance(p, tuple)) \
                and not any(isinstance(p, tuple) for p in photos):
            build_index(index_dir, photos, index_conf, overwrite=overwrite)
            engine = cls(index_dir, **kwargs)
            if engine._wants_graph(graph):
                engine._graph_from_files(photos, rebuild=True)
            return engine
        ex = _as_extractor(extractor)
        items, failed = _extract_all(ex, photos)
        if not items:
            raise ValueError("no usable photos to index" + (f": {failed[0]}" if failed else ""))
        build_index_from_features(index_dir, items, ex.resolved_conf(), index_conf, overwrite=overwrite)
        engine = cls(index_dir, extractor=ex, **kwargs)
        engine.failed = failed
        if engine._wants_graph(graph):
            engine._graph(items, rebuild=True)
        return engine

    # ------------------------------------------------------------ match graph

    def _wants_graph(self, graph: bool | None, keep_current: bool = False) -> bool:
        """Whether to search for the match graph: as told; else at a build when diffusion or the calibration
        reads it, and when adding photos (``keep_current``) when the index has a current one (a graph file of
        an older version is left alone: the new photos alone would make a partial graph)."""
        from .graph import MatchGraph

        if graph is not None:
            return bool(graph)
        if keep_current:
            return MatchGraph.load(self.index_dir) is not None
        return self.settings.calibration.uses_graph or self.conf.diffuse > 0

    def _graph(self, items, rebuild: bool = False) -> None:
        from .graph_update import update_graph

        self.index.refresh()
        update_graph(self.index, items, self.settings, rebuild=rebuild)

    def _graph_from_files(self, feature_files, names=None, rebuild: bool = False) -> None:
        from .graph_update import update_graph_from_features

        self.index.refresh()
        update_graph_from_features(self.index_dir, feature_files, names, self.settings, rebuild=rebuild)

    # ------------------------------------------------------------ searching

    @property
    def extractor(self):
        """The extractor of the index's conf (built on first use)."""
        if self._extractor is None:
            from delf.extractor import make_extractor

            self._extractor = make_extractor(conf_from_resolved(self.index.extractor_conf))
        return self._extractor

    @property
    def labels(self) -> dict | None:
        """{photo name: label} of the indexed photos, when labels were given."""
        src = self._labels_source
        if src is None:
            return None
        from common.labels import labels_for, load_labels

        # One read of the cached pair: threads searching at once (delf serve) see a consistent one.
        cached, generation = self._labels, self.index.generation
        if cached is None or cached[0] != generation:
            table = src if isinstance(src, dict) else load_labels(src)
            cached = (generation, labels_for(self.index.photos(), table))
            self._labels = cached
        return cached[1]

    @property
    def threshold(self) -> float:
        return float(self.settings.threshold)

    def features(self, query, name: str | None = None):
        """(name, Features, conf that made them) of a photo path, an RGB uint8 array or a Features."""
        from delf.features import Features

        if isinstance(query, Features):
            return name or "query", query, None
        if isinstance(query, np.ndarray):
            return name or "query", self.extractor.extract(query, name), self.extractor.resolved_conf()
        path = os.fspath(query)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such photo")
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path}: a folder, not a photo (use search_many for folders)")
        return name or os.path.basename(path), self.extractor.extract(path), self.extractor.resolved_conf()

    def search(self, query, top: int | None = None, exclude=(), name: str | None = None,
               expand: int | None = None, diffuse: int | None = None) -> Answer:
        """Search with one photo (path, RGB array or Features): the candidates
        are verified and ranked, each with a calibrated confidence, and the
        answer is a match when the best one reaches the threshold. Photos named
        in ``exclude`` are searched as if they were not in the index. ``top``
        keeps the first results only. ``expand`` and ``diffuse`` override the
        engine's query expansion and diffusion over the match graph (0: off)."""
        qname, feats, qconf = self.features(query, name)
        ans = answer_query(self.index, feats, qname, self.settings, exclude=exclude, labels=self.labels,
                           query_conf=qconf, expand=self.conf.expand if expand is None else int(expand),
                           diffuse=self.conf.diffuse if diffuse is None else int(diffuse))
        if top is not None:
            ans.results = ans.results[: max(int(top), 0)]
        return ans

    def search_many(self, inputs, exclude=()):
        """(name, Answer or None, error or None) per query of ``inputs``
        (photos, folders, .txt lists, features .h5 files): a bad photo gives
        its error and the batch goes on."""
        labels = self.labels
        for name, feats, error, qconf in query_items(inputs, lambda: self.extractor):
            if error:
                yield name, None, error
                continue
            yield name, answer_query(self.index, feats, name, self.settings, exclude=exclude, labels=labels,
                                     query_conf=qconf, expand=self.conf.expand), None

    def match(self, a, b, model: str = "affine", residual_threshold: float | None = None,
              matcher: MatchConf | str = "default", border: float = RerankConf.border) -> Pair:
        """Verify two photos (paths, RGB arrays or Features) against each
        other: putative matches, RANSAC, and the confidence a search would give."""
        match_conf = MATCH_PRESETS[matcher] if isinstance(matcher, str) else matcher
        _, f1, _ = self.features(a, "a")
        _, f2, _ = self.features(b, "b")
        return match_features(f1, f2, model=model, residual_threshold=residual_threshold, match_conf=match_conf,
                              seed=self.conf.seed, border=border, calibration=self.settings.calibration)

    # ------------------------------------------------------------ keeping the index current

    @property
    def photos(self) -> list[str]:
        """Names of the photos in the index."""
        return self.index.photos()

    def add(self, photos, graph: bool | None = None) -> list[str]:
        """Extract ``photos`` (files, folders, .txt lists, (path, name) pairs;
        or features .h5 files; or (name, Features) pairs extracted with this
        engine's extractor) and add them to the index as one new segment,
        atomically: readers see all of them or none; then (``graph``; None:
        when the index has a match graph) the new photos search the index for
        the match graph. Returns the names added."""
        from delf.features import Features
        from index import add_features_to_index, add_to_index

        photos = [photos] if isinstance(photos, (str, os.PathLike)) else list(photos)
        before = set(self.index.photos())
        h5, given, rest = [], [], []
        for p in photos:
            if isinstance(p, tuple):
                (given if isinstance(p[1], Features) else rest).append(p)
            else:
                (h5 if os.fspath(p).lower().endswith(FEATURE_SUFFIXES) else rest).append(p)
        for p in h5:
            add_to_index(self.index_dir, p)
        self.failed = []
        items = list(given)
        if rest:
            extracted, self.failed = _extract_all(self.extractor, rest)
            items += extracted
        if items:
            add_features_to_index(self.index_dir, items, self.extractor.resolved_conf())
        self.index.refresh()
        added = sorted(set(self.index.photos()) - before)
        if added and self._wants_graph(graph, keep_current=True):
            if h5:
                self._graph_from_files(h5, names=added)
            new = set(added)
            if items:
                self._graph([(n, f) for n, f in items if n in new])
        return added

    def remove(self, names) -> list[str]:
        """Remove photos by name (searches skip them at once; `delf index
        compact` frees their bytes). Returns the names removed."""
        from index import remove_from_index

        names = [names] if isinstance(names, str) else list(names)
        remove_from_index(self.index_dir, names)
        self.index.refresh()
        return names

    def info(self) -> dict:
        """Photos, descriptors, segments and bytes on disk (as `delf index info`)."""
        from index import index_info

        return index_info(self.index_dir)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_extractor(extractor):
    from delf.conf import ExtractorConf
    from delf.extractor import make_extractor

    if extractor is None or isinstance(extractor, ExtractorConf):
        return make_extractor(extractor)
    return extractor


def _extract_all(extractor, inputs) -> tuple[list, list]:
    """([(name, Features)], ["path: problem"]) of every photo of ``inputs``; bad photos do not stop the batch."""
    from delf.image import ImageError, list_images, problem_of

    items, failed = [], []
    for path, name in list_images(inputs):
        try:
            items.append((name, extractor.extract(path)))
        except (ImageError, FileNotFoundError) as exc:
            failed.append(f"{path}: {problem_of(exc, path)}")
    return items, failed


__all__ = ["Engine", "EngineConf"]
