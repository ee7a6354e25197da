"""`delf search INDEX QUERY_PHOTOS... [--top K] [--json OUT] [--draw DIR]`"""

from __future__ import annotations

import os
import sys

DEFAULT_TOP = 5


def register(sub) -> None:
    p = sub.add_parser(
        "search", help="find the database photos that show the same place as each query, with a confidence",
        description="For each query (a photo, a folder of photos, a .txt list, or a features .h5 file whose every "
                    "photo is a query): extract its features with the index's extractor conf, take the top "
                    "candidates of the index, verify them with RANSAC in parallel, rank them by (inliers, votes), "
                    "give each a calibrated confidence and answer 'match' or 'no match'.",
    )
    p.add_argument("index", metavar="INDEX", help="index directory (from `delf index build`)")
    p.add_argument("queries", nargs="+", metavar="QUERY_PHOTOS", help="photos, folders, .txt lists or .h5 files")
    p.add_argument("--top", type=int, default=DEFAULT_TOP,
                   help="results shown and written per query (default: %(default)s)")
    p.add_argument("--candidates", type=int, default=100,
                   help="candidates taken from the index and verified (default: %(default)s)")
    p.add_argument("--search-k", type=int, default=None,
                   help="Annoy nodes inspected per query descriptor (default: %d; more is slower and "
                        "closer to exact search)" % _default_search_k())
    p.add_argument("--threshold", type=float,
                   help="confidence at or above which the best result is a match (default: the calibration's, "
                        "%s)" % _default_threshold())
    p.add_argument("--calibration", help="confidence calibration JSON (default: the shipped one)")
    p.add_argument("--labels", help="CSV of database photo labels (photo,label): each query also gets a "
                                    "predicted label, or none")
    p.add_argument("--json", help="write the answers as JSON here")
    p.add_argument("--draw", metavar="DIR", help="write pictures of the inliers of each query's top results here")
    p.add_argument("--draw-top", type=int, default=1, help="results drawn per query with --draw (default: %(default)s)")
    p.add_argument("--db-images", metavar="DIR",
                   help="folder the database photo names are relative to (needed by --draw)")
    p.add_argument("--seed", type=int, default=0, help="RANSAC seed (default: %(default)s)")
    p.add_argument("--expand", type=int, default=None, metavar="N",
                   help="query expansion: up to N results at or above the threshold lend their features to a "
                        "second search (default: %d; 0 turns it off)" % _default_expand())
    p.add_argument("--no-expand", dest="expand", action="store_const", const=0, help="no query expansion")
    p.add_argument("--diffuse", type=int, default=None, metavar="N",
                   help="diffusion over the index's match graph: results with at least N unique inliers lend "
                        "their standing to the photos linked to them (default: %d; 0 turns it off)"
                        % _default_diffuse())
    p.add_argument("--no-diffuse", dest="diffuse", action="store_const", const=0, help="no diffusion")
    p.add_argument("--workers", type=int,
                   help="search the index's shards on a local Dask cluster of this many worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="search the index's shards on this Dask scheduler's workers (e.g. tcp://host:8786; "
                        "they must see INDEX at the same path)")
    p.set_defaults(func=run)


def _default_search_k() -> int:
    from index import SearchConf

    return SearchConf.search_k


def _default_diffuse() -> int:
    from engine import EngineConf

    return EngineConf.diffuse


def _default_expand() -> int:
    from engine import EngineConf

    return EngineConf.expand


def _default_threshold() -> str:
    try:
        from verify.confidence import Calibration

        return f"{Calibration.load().threshold:g}"
    except (OSError, ValueError):
        return "none shipped"


def run(args) -> int:
    from common.errors import UserError
    from engine import Engine

    if args.top < 1 or args.candidates < 1:
        raise UserError("--top and --candidates must be at least 1")
    if args.search_k is not None and args.search_k < 1:
        raise UserError("--search-k must be at least 1")
    if args.expand is not None and args.expand < 0:
        raise UserError("--expand must be 0 or more")
    if args.diffuse is not None and args.diffuse < 0:
        raise UserError("--diffuse must be 0 or more")
    if args.draw and not args.db_images:
        raise UserError("--draw needs --db-images DIR (the folder the database photo names are relative to)")
    from .cmd_collection import dask_client

    with dask_client(args) as client:
        engine = Engine.open(args.index, calibration=args.calibration, threshold=args.threshold,
                             labels=args.labels, candidates=args.candidates,
                             search_k=args.search_k or _default_search_k(), seed=args.seed,
                             expand=_default_expand() if args.expand is None else args.expand, client=client,
                             diffuse=_default_diffuse() if args.diffuse is None else args.diffuse)
        return _search(engine, args)


def _search(engine, args) -> int:
    from common.files import write_json
    from engine.searching import format_answer

    labelled = engine.labels is not None
    answers, failed = [], []
    for name, ans, error in engine.search_many(args.queries):
        if error:
            print(error, file=sys.stderr)
            failed.append({"query": name, "error": error})
            continue
        answers.append(ans)
        print("\n".join(format_answer(ans, args.top)))
        if args.draw:
            _draw(ans, args)
    if args.json:
        out = {"index": os.path.abspath(args.index), "threshold": engine.threshold, "queries": []}
        out["queries"] = [ans.to_dict(args.top, labelled=labelled) for ans in answers]
        out["failed"] = failed
        write_json(args.json, out)
    if failed and answers:
        print(f"{len(failed)} of {len(failed) + len(answers)} queries could not be used (listed above)",
              file=sys.stderr)
    return 2 if failed and not answers else 0


def _draw(ans, args) -> None:
    from common.files import write_png
    from engine.searching import draw_result

    os.makedirs(args.draw, exist_ok=True)
    qpath = _query_path(ans.query, args.queries)
    for rank, r in enumerate(ans.results[: args.draw_top], start=1):
        if r.verification is None or qpath is None:
            continue
        dpath = os.path.join(args.db_images, r.name)
        if not os.path.isfile(dpath):
            print(f"--draw: {dpath}: no such database photo; skipped", file=sys.stderr)
            continue
        canvas = draw_result(qpath, dpath, ans.query, r)
        if canvas is None:
            continue
        stem = os.path.splitext(ans.query.replace("/", "_"))[0]
        write_png(os.path.join(args.draw, f"{stem}_{rank:02d}.png"), canvas)


def _query_path(name: str, inputs) -> str | None:
    for item in inputs:
        if os.path.isdir(item) and os.path.isfile(os.path.join(item, name)):
            return os.path.join(item, name)
        if os.path.isfile(item) and os.path.basename(item) == name:
            return item
    return None
