"""`delf bench ransac`: command line of evaluation.bench_ransac."""

from __future__ import annotations

import sys

from evaluation.bench_ransac import METHODS, SYNTHETIC


def register(sub) -> None:
    p = sub.add_parser(
        "ransac", help="RANSAC speed and accuracy: ours vs scikit-image and OpenCV USAC_MAGSAC",
        description="On the 20 homography/ pairs (ground-truth H) and the 33 wxbs/ pairs (hand-marked "
                    "correspondences): OpenCV RootSIFT matches (ratio 0.8) computed once, then five "
                    "estimators timed and scored on them: " + ", ".join(METHODS) + ".",
    )
    p.add_argument("--data", required=True, help="the data folder holding homography/ and wxbs/")
    p.add_argument("--json", required=True, help="write the results here (atomically)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per method and pair; the median is reported (default: %(default)s)")
    p.add_argument("--synthetic", type=int, default=SYNTHETIC,
                   help="also score this many warped copies of landmarks/ photos against their exact "
                        "homography; 0 skips them (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic warps (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from common.files import write_json
    from evaluation.bench_ransac import bench_ransac, print_table

    result = bench_ransac(args.data, repeats=args.repeats, log=lambda m: print(m, file=sys.stderr),
                          synthetic=args.synthetic, seed=args.seed)
    write_json(args.json, result)
    print_table(result)
    print(f"wrote {args.json}")
    return 0
