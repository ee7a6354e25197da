"""`delf bench extract`: command line of evaluation.bench_extract."""

from __future__ import annotations

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser("extract", help="extraction speed, and the share spent outside the network",
                       description="Times the full extractor (decode, pyramid, network, scoring, selection, "
                                   "PCA) and the bare backbone forward passes over the same pyramid levels.")
    p.add_argument("--data", required=True, help="folder of photos")
    p.add_argument("--limit", type=int, default=20, help="photos timed (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="timings per photo; the minimum is kept (default: 1)")
    p.add_argument("--compare-scales", metavar="SETS",
                   help="other pyramids to time in the same run, interleaved per photo: scale lists separated "
                        "by ';', e.g. '0.5,1.0;1.0' (default: none)")
    p.add_argument("--json", help="write the results here")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from common.files import write_json
    from evaluation.bench_extract import bench_extract, format_table

    compare = [tuple(float(v) for v in text.split(","))
               for text in (args.compare_scales or "").split(";") if text.strip()]
    result = bench_extract(args.data, conf_from_args(args), limit=args.limit, repeats=args.repeats,
                           compare_scales=compare)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
    return 0
