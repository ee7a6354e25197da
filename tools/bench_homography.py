"""`delf bench homography`: command line of evaluation.bench_homography."""

from __future__ import annotations

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser("homography", help="keypoint/match accuracy on the Oxford affine sequences",
                       description="For each of the 20 pairs img1 -> imgN with ground-truth H: mutual nearest-"
                                   "neighbour matches; fraction whose img1 keypoint, mapped by H, lands within "
                                   "5, 10, 20 px of its match. Methods: delf (the conf given), random (same "
                                   "extractor, random locations), sift (OpenCV RootSIFT, 1000 keypoints).")
    p.add_argument("--data", required=True, help="folder with one subfolder per sequence (img1..img6, H1toNp)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--methods", default="delf,random,sift", help="comma-separated (default: %(default)s)")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from common.files import write_json
    from evaluation.bench_homography import bench_homography, format_table

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = bench_homography(args.data, methods=methods, conf=conf_from_args(args))
    print(format_table(result), flush=True)
    if args.json:
        write_json(args.json, result)
    return 0
