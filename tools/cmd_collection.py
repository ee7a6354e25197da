"""`delf collection DIR... --out OUT_DIR [--workers N | --scheduler ADDRESS]`"""

from __future__ import annotations

import contextlib
import logging

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "collection", help="batch matching of a photo collection: match graph, groups of photos of one place",
        description="Extract every photo (resumable), index them, let every photo query the index and verify its "
                    "candidates, then write the match graph (edges.csv, graph.json), the groups of photos of one "
                    "place (groups.csv) and one HTML contact sheet per group (sheets/). Exact duplicate photos are "
                    "flagged. A run killed at any point continues where it stopped when started again. With "
                    "--workers or --scheduler, extraction and queries run on a Dask cluster (workers must see "
                    "the photos and the output folder at the same paths).",
    )
    add_collection_args(p)
    p.add_argument("inputs", nargs="+", metavar="DIR", help="folders of photos (or photos, .txt lists)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    p.set_defaults(func=run)


def add_collection_args(p) -> None:
    """Options shared with `delf evaluate collection`."""
    from engine.collection import REFINES, CollectionConf

    d = CollectionConf()
    p.add_argument("--work", help="working files: features, index, per-photo results (default: OUT_DIR/work)")
    p.add_argument("--verify-top", type=int, default=d.verify_top,
                   help="candidates verified per photo (default: %(default)s)")
    p.add_argument("--threshold", type=float,
                   help="confidence at or above which a pair is an edge (default: the calibration's)")
    p.add_argument("--calibration", help="confidence calibration JSON (default: the shipped one)")
    p.add_argument("--refine", choices=REFINES, default=d.refine,
                   help="'triangle': an edge joins groups only when a third photo is linked to both of its photos; "
                        "a photo that no triangle joins is attached by its most confident edge; 'none': connected "
                        "components (default: %(default)s)")
    p.add_argument("--workers", type=int, help="run on a local Dask cluster of this many worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask scheduler (e.g. tcp://host:8786)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_conf_args(p)


def collection_conf_from_args(args):
    from engine.collection import CollectionConf

    return CollectionConf(verify_top=args.verify_top, threshold=args.threshold, refine=args.refine)


@contextlib.contextmanager
def dask_client(args):
    """A distributed.Client for --scheduler / --workers, or None."""
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.scheduler and args.workers:
        raise ValueError("give --scheduler or --workers, not both")
    if not args.scheduler and not args.workers:
        yield None
        return
    from distributed import Client, LocalCluster

    if args.scheduler:
        with Client(args.scheduler) as client:
            yield client
        return
    # One thread per worker process: each runs its own TensorFlow and Numba pools.
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cl, \
            Client(cl) as client:
        yield client


def run(args) -> int:
    from verify.confidence import Calibration

    from engine.collection import run_collection

    cal = Calibration.load(args.calibration) if args.calibration else None
    with dask_client(args) as client:
        rep = run_collection(args.inputs, args.out, collection_conf_from_args(args), conf_from_args(args),
                             work=args.work, client=client, calibration=cal, progress=not args.quiet)
    print(rep.summary())
    return 0
