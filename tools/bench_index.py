"""`delf bench index`: command line of evaluation.bench_index."""

from __future__ import annotations

DEFAULT_SCALE = "1000000,3000000,10000000"


def register(sub) -> None:
    p = sub.add_parser(
        "index", help="the compact pq index against Annoy and exact search: bytes, agreement, speed, scale",
        description="Builds the pq index of a features file (twice: default threads and one thread, to check "
                    "that the bytes agree), searches the cropped queries of GND.json with it, with today's Annoy "
                    "index and with exact search of the uncompressed descriptors, then repeats the pq search on "
                    "scaled sets (the real descriptors plus jittered, renormalised copies).")
    p.add_argument("--features", required=True, help="database features (HDF5 from `delf extract`)")
    p.add_argument("--gnd", required=True, help="ground truth JSON with the queries and their bbx")
    p.add_argument("--json", required=True, dest="json_out", help="write the results here")
    p.add_argument("--queries", help="features of the cropped queries: read when the file exists, "
                                     "otherwise extracted with the database's conf and written there "
                                     "(default: extracted, not kept)")
    p.add_argument("--images", help="folder of the query photos (default: queries/ next to GND)")
    p.add_argument("--annoy-index", help="an Annoy index (`delf index build --kind annoy`) of the same features "
                                         "to reuse (default: built here, which takes minutes)")
    p.add_argument("--threads", type=int, default=0, help="search threads (default: 0 = cores)")
    p.add_argument("--scale", default=DEFAULT_SCALE,
                   help="descriptors of each scaled set, comma-separated; empty to skip (default: %(default)s)")
    p.add_argument("--jitter", type=float, default=0.3,
                   help="norm of the noise added to each copy before renormalising (default: %(default)s)")
    p.add_argument("--sample", type=int, default=2000,
                   help="query descriptors whose recall@1 is measured on each scaled set (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs per search, the minimum kept (default: 2)")
    p.add_argument("--workdir", help="where the indexes are built (default: a temporary folder, removed)")
    p.add_argument("--seed", type=int, default=0, help="sampling and jitter seed (default: 0)")
    p.set_defaults(func=run)


def _ints(text: str) -> list[int]:
    from common.errors import UserError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--scale: expected comma-separated descriptor counts, got {text!r}") from None
    if any(v < 1 for v in values):
        raise UserError(f"--scale: counts must be at least 1, got {text!r}")
    return values


def run(args) -> int:
    import json

    from common.errors import UserError
    from common.files import write_json
    from evaluation.bench_index import bench_index

    if args.repeats < 1 or args.sample < 1 or args.threads < 0:
        raise UserError("--repeats and --sample must be at least 1, --threads at least 0")
    result = bench_index(
        args.features, args.gnd, scales=_ints(args.scale), queries=args.queries, images=args.images,
        threads=args.threads, annoy_index=args.annoy_index, jitter=args.jitter, sample=args.sample,
        repeats=args.repeats, workdir=args.workdir, seed=args.seed, log=print,
    )
    write_json(args.json_out, result)
    print(json.dumps({k: result[k] for k in ("index", "oxford", "scaled", "deterministic")}, indent=1))
    print(f"wrote {args.json_out}")
    return 0
