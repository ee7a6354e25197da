"""`delf calibrate (--data DIR | --images DIR --labels CSV ...) --out CALIBRATION.json`"""

from __future__ import annotations

import os
import sys

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="fit the match confidence on your own labelled photos",
        description="Every labelled photo queries an index of all the others, as `delf search` would; its "
                    "verified candidates (same label or not) train the logistic confidence. It then queries "
                    "again with every photo of its label left out, as a photo of a place the database does not "
                    "hold, and the default threshold is set above the confidence those searches reach. The "
                    "shipped calibration was made with --data on landmarks/, ukbench/ and wxbs/ (never Oxford).",
    )
    src = p.add_argument_group("labelled photos (one or both)")
    src.add_argument("--data", help="a data folder laid out like ../shared/data: uses landmarks/ and ukbench/ "
                                    "(labels.csv) and wxbs/ (each pair one place)")
    src.add_argument("--images", action="append", default=[], metavar="DIR",
                     help="folder of photos; repeat with one --labels each")
    src.add_argument("--labels", action="append", default=[], metavar="CSV",
                     help="CSV photo,label for the --images folder in the same position")
    p.add_argument("--out", required=True, help="calibration JSON to write (atomically)")
    p.add_argument("--work", help="folder for the features file (resumable; default: next to --out)")
    p.add_argument("--candidates", type=int, default=100, help="candidates verified per query (default: %(default)s)")
    p.add_argument("--min-inliers", type=int, default=5,
                   help="below this many inliers the confidence is 0 (default: %(default)s)")
    p.add_argument("--threshold", type=float,
                   help="decision threshold to record (default: the lowest, at least 0.5, at which at most "
                        "--max-false-accept-rate of the queries, searched with their own label left out, "
                        "answer match)")
    p.add_argument("--max-false-accept-rate", type=float, default=0.01,
                   help="fraction of those not-a-match searches allowed to accept a photo at the default "
                        "threshold (default: %(default)s)")
    p.add_argument("--model-version", type=int, choices=(1, 2, 3, 4),
                   help="4: unique inliers, spread and the fitted model's scale change, fitted on every candidate "
                        "and the best result of each not-a-match search; 1: unique inliers and spread, fitted on "
                        "every candidate; "
                        "3: also the result's margin over the strongest other place and the support of a second "
                        "photo of its place, 'same place' read from the database's match graph (`delf index build` "
                        "makes it); 2: as 3 with 'same place' read from shared query keypoints, "
                        "plus model distortion (default: the version of the shipped model)")
    p.add_argument("--report", help="also write the fit's report (counts, reliability table, cross-validation "
                                    "over places) as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from common.errors import UserError
    from common.files import write_json
    from common.labels import labelled_photos
    from engine.calibration import DEFAULT_VERSION, calibrate, shared_data_photos

    if len(args.images) != len(args.labels):
        raise UserError("give one --labels CSV per --images folder")
    if not args.data and not args.images:
        raise UserError("nothing to calibrate on: give --data DIR or --images DIR --labels CSV")
    photos = shared_data_photos(args.data) if args.data else []
    for i, (folder, labels) in enumerate(zip(args.images, args.labels)):
        photos += labelled_photos(folder, labels, prefix=f"set{i}" if len(args.images) > 1 or args.data else "")
    work = args.work or os.path.join(os.path.dirname(os.path.abspath(args.out)), "calibration-work")
    sources = ([os.path.abspath(args.data)] if args.data else []) + [os.path.abspath(d) for d in args.images]
    command = "delf calibrate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    cal, rep = calibrate(photos, args.out, work, conf_from_args(args), candidates=args.candidates,
                         min_inliers=args.min_inliers, threshold=args.threshold,
                         max_false_accept_rate=args.max_false_accept_rate, sources=sources, command=command,
                         progress=not args.quiet, log=print, version=args.model_version or DEFAULT_VERSION)
    if args.report:
        write_json(args.report, rep)
    print(json.dumps({k: v for k, v in rep.items() if k != "reliability"}, indent=1))
    print(f"wrote {args.out}: threshold {cal.threshold:g}")
    return 0
