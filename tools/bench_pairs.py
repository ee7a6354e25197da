"""`delf bench pairs`: command line of evaluation.bench_pairs."""

from __future__ import annotations

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser("pairs", help="same-scene retrieval mAP on a labelled collection, all pairs verified",
                       description="Extracts every photo listed in LABELS, matches and verifies every pair "
                                   "(mutual NN + ratio, affine RANSAC), ranks each photo's others by inliers "
                                   "and reports the mean average precision of same-label retrieval.")
    p.add_argument("--images", required=True, help="folder of the photos named in --labels")
    p.add_argument("--labels", required=True, help="CSV with columns image,scene (header line)")
    p.add_argument("--limit", type=int, help="use only the first N photos (default: all)")
    p.add_argument("--json", help="write the results here")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from common.files import write_json
    from evaluation.bench_pairs import bench_pairs, format_table

    result = bench_pairs(args.images, args.labels, conf_from_args(args), limit=args.limit)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
    return 0
