"""`delf bench index`: command line of evaluation.bench_index."""

from __future__ import annotations

DEFAULT_TREES = "16,64,128"
DEFAULT_SEARCH_K = "1000,2000,3000,4000,8000"
DEFAULT_CROSSOVER = "50000,100000,200000,400000"


def register(sub) -> None:
    p = sub.add_parser(
        "index", help="Annoy index vs exact search: recall, speed, shortlist agreement, scaled set",
        description="Builds indexes of a features file (several tree counts), searches the cropped queries "
                    "of GND.json with the exact search and with Annoy at several search_k, then repeats the "
                    "default settings on a scaled set (the real descriptors plus jittered, renormalised "
                    "copies).")
    p.add_argument("--features", required=True, help="database features (HDF5 from `delf extract`)")
    p.add_argument("--gnd", required=True, help="ground truth JSON with the queries and their bbx")
    p.add_argument("--json", required=True, dest="json_out", help="write the results here")
    p.add_argument("--queries", help="features of the cropped queries: read when the file exists, "
                                     "otherwise extracted with the database's conf and written there "
                                     "(default: extracted, not kept)")
    p.add_argument("--images", help="folder of the query photos (default: queries/ next to GND)")
    p.add_argument("--threads", type=int, default=0,
                   help="search threads, exact and Annoy (default: 0 = cores)")
    p.add_argument("--trees", default=DEFAULT_TREES, help="tree counts of the curve (default: %(default)s)")
    p.add_argument("--search-k", default=DEFAULT_SEARCH_K,
                   help="search_k values of the curve (default: %(default)s)")
    p.add_argument("--crossover-sizes", default=DEFAULT_CROSSOVER,
                   help="database sizes (descriptors) timed to find where Annoy overtakes the exact search; "
                        "empty to skip (default: %(default)s)")
    p.add_argument("--scaled", type=int, default=-1,
                   help="descriptors of the scaled set; -1: max(1M, 2 x real); 0: skip (default: -1)")
    p.add_argument("--jitter", type=float, default=0.3,
                   help="norm of the noise added to each copy before renormalising (default: %(default)s)")
    p.add_argument("--sample", type=int, default=2000,
                   help="query descriptors searched on the scaled set and for the crossover "
                        "(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs per setting, the minimum kept (default: 2)")
    p.add_argument("--workdir", help="where the indexes are built (default: a temporary folder, removed)")
    p.add_argument("--seed", type=int, default=0, help="sampling and jitter seed (default: 0)")
    p.set_defaults(func=run)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run(args) -> int:
    import json

    from common.files import write_json
    from evaluation.bench_index import bench_index

    result = bench_index(
        args.features, args.gnd, queries=args.queries, images=args.images, threads=args.threads,
        trees=_ints(args.trees), search_ks=_ints(args.search_k), crossover_sizes=_ints(args.crossover_sizes),
        scaled=args.scaled, jitter=args.jitter, sample=args.sample, repeats=args.repeats,
        workdir=args.workdir, seed=args.seed, log=print,
    )
    write_json(args.json_out, result)
    print(json.dumps({k: result[k] for k in ("descriptors", "bytes_per_descriptor", "exact", "default",
                                             "speedup_vs_exact", "shortlist_agreement", "scaled")}, indent=1))
    print(f"wrote {args.json_out}")
    return 0
