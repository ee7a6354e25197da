"""`delf evaluate roxford|reject ...`"""

from __future__ import annotations

import os

from .confargs import add_conf_args, conf_from_args

DEFAULT_WORK = os.path.join("out", "evaluate")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="retrieval quality (Revisited Oxford) and rejection of unknown places")
    ev = p.add_subparsers(dest="evaluation", metavar="EVALUATION")
    ev.required = True

    r = ev.add_parser(
        "roxford", help="Revisited Oxford protocol: mAP and mP@1/5/10, Medium and Hard, with and without re-ranking",
        description="Queries (cropped to their box) search an index of the database photos; the top candidates "
                    "are verified and re-ranked. Reports mAP and mP@k in percent, the same figures without "
                    "re-ranking, and per-query times of search, verification and of scikit-image's RANSAC at "
                    "DELF's settings on the same candidates. --method sift runs the classic RootSIFT reference.",
    )
    r.add_argument("--data", required=True, help="folder with jpg/, queries/ and gnd.json")
    r.add_argument("--method", choices=("delf", "sift"), default="delf", help="(default: %(default)s)")
    _common(r)
    r.add_argument("--expand", type=int, default=None, metavar="N",
                   help="also answer every query with query expansion from up to N confident results, "
                        "reported apart (default: the engine's; 0: not at all)")
    r.add_argument("--diffuse", type=int, default=None, metavar="N",
                   help="also answer every query with diffusion over the database's match graph from results "
                        "with at least N unique inliers, reported apart, and with expansion and diffusion "
                        "together (default: the engine's; 0: not at all)")
    r.add_argument("--skimage-queries", type=int, default=2,
                   help="queries whose candidates are also verified with scikit-image, for the time ratio "
                        "(default: %(default)s)")
    r.add_argument("--index-kind", choices=("pq", "annoy"), default="pq",
                   help="the database index's kind (default: %(default)s)")
    r.add_argument("--compare-index", choices=("pq", "annoy"), action="append", default=[],
                   help="also evaluate an index of this kind in the same run, on the same query features "
                        "(reported under \"compare\"; repeatable)")
    r.set_defaults(func=run_roxford)

    j = ev.add_parser(
        "reject", help="false accepts of photos of other places, true-accept rate and GAP",
        description="Every photo of landmarks/ and ukbench/ (none shows Oxford) queries the Oxford database, "
                    "and so do the Oxford queries. Reports false accepts at the threshold, the Oxford queries' "
                    "true-accept rate (top-1 a positive and accepted), the margin (lowest confidence of an "
                    "accepted right answer minus highest confidence of a photo of another place) and the GAP "
                    "over all queries.",
    )
    j.add_argument("--data", required=True, help="folder with oxford/, landmarks/ and ukbench/")
    j.add_argument("--calibration", help="confidence calibration JSON to search with (default: the shipped one)")
    j.add_argument("--compare-calibration", metavar="CALIBRATION",
                   help="another calibration JSON (e.g. an older model, version 1 or 2) scored on the same "
                        "searches at its own threshold, reported beside")
    _common(j)
    j.set_defaults(func=run_reject)

    _register_collection(ev)

    o = ev.add_parser(
        "loo", help="leave-one-out search of landmarks/ + ukbench/ (202 photos): where search settings are chosen",
        description="Each labelled photo of landmarks/ and ukbench/ searches an index of all the others; reports "
                    "mAP, positives in the top 100 and time per query for each --expand value. Search settings "
                    "are chosen here, never on Oxford.")
    o.add_argument("--data", required=True, help="folder with landmarks/ and ukbench/")
    o.add_argument("--expand", default="0,1", help="query expansion values, comma-separated (default: %(default)s)")
    o.add_argument("--diffuse", default="0", help="diffusion values (engine.diffusion: unique inliers a result needs "
                                                  "to lend its standing), comma-separated; every pair with --expand "
                                                  "is run (default: %(default)s)")
    o.add_argument("--json", help="write the results here")
    o.add_argument("--work", default=DEFAULT_WORK, help="features and index, reused across runs (default: %(default)s)")
    o.add_argument("--candidates", type=int, default=100, help="candidates verified per query (default: %(default)s)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    add_conf_args(o)
    o.set_defaults(func=run_loo)


def _common(p) -> None:
    p.add_argument("--json", help="write the results here")
    p.add_argument("--work", default=DEFAULT_WORK,
                   help="cache of database features and index, reused across runs (default: %(default)s)")
    p.add_argument("--db-features", help="features .h5 of the database photos to use instead of extracting them")
    p.add_argument("--candidates", type=int, default=100, help="candidates verified per query (default: %(default)s)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the calibration's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_conf_args(p)


def run_roxford(args) -> int:
    from common.files import write_json
    from evaluation.roxford import evaluate_roxford, report_lines
    from evaluation.sift import evaluate_roxford_sift

    if args.method == "sift":
        res = evaluate_roxford_sift(args.data, args.work, progress=not args.quiet)
    else:
        res = evaluate_roxford(args.data, args.work, conf_from_args(args), verify_top=args.candidates,
                               skimage_queries=args.skimage_queries, db_features=args.db_features,
                               threshold=args.threshold, expand=args.expand, index_kind=args.index_kind,
                               compare_kinds=args.compare_index, progress=not args.quiet, diffuse=args.diffuse)
    print("\n".join(report_lines(res)))
    if args.json:
        write_json(args.json, res)
    return 0


def run_reject(args) -> int:
    from common.files import write_json
    from evaluation.reject import evaluate_reject

    from verify.confidence import Calibration

    cal = Calibration.load(args.calibration) if args.calibration else None
    compare = Calibration.load(args.compare_calibration) if args.compare_calibration else None
    res = evaluate_reject(args.data, args.work, conf_from_args(args), verify_top=args.candidates,
                          threshold=args.threshold, db_features=args.db_features, progress=not args.quiet,
                          calibration=cal, compare=compare)
    for title, r in (("", res), ("compared calibration: ", res.get("compare"))):
        if r is None:
            continue
        margin = "-" if r["margin"] is None else f"{r['margin']:.3f}"
        print(f"{title}false accepts: {r['false_accepts']} of {r['not_a_match_queries']} not-a-match queries "
              f"(highest confidence {r['max_not_a_match_confidence']}); true-accept rate {r['true_accept_rate']:.3f} "
              f"({r['accepted_right']} of {r['oxford_queries']}); margin {margin}; GAP {r['gap']}; "
              f"threshold {r['threshold']:g}")
    if args.json:
        write_json(args.json, res)
    return 0


def run_loo(args) -> int:
    from common.files import write_json
    from evaluation.loo import evaluate_loo

    lists = {}
    for opt in ("expand", "diffuse"):
        text = getattr(args, opt)
        try:
            lists[opt] = [int(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"--{opt} takes whole numbers separated by commas, got {text!r}") from None
        if any(v < 0 for v in lists[opt]):
            raise ValueError(f"--{opt} values must be 0 or more, got {text!r}")
    res = evaluate_loo(args.data, args.work, lists["expand"], conf_from_args(args), candidates=args.candidates,
                       progress=not args.quiet, diffuse_values=lists["diffuse"])
    if args.json:
        write_json(args.json, res)
    return 0


def _register_collection(ev) -> None:
    from .cmd_collection import add_collection_args

    p = ev.add_parser(
        "collection", help="batch matching of landmarks/ + ukbench/ (202 photos): pair precision/recall, ARI, speed",
        description="Runs `delf collection` on landmarks/images and ukbench/images together and scores the "
                    "confident edges (pair_precision, pair_recall against same-label pairs) and the groups "
                    "(adjusted Rand index against the labels; group-pair precision/recall), with the throughput "
                    "of the whole run (photos_per_minute: honest only for a run from scratch, see 'resumed') and "
                    "the share of pairs verified.",
    )
    p.add_argument("--data", required=True, help="folder with landmarks/ and ukbench/ (each with images/ and labels.csv)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--out", default=os.path.join("out", "evaluate", "collection"), help="output folder of the collection run (default: %(default)s)")
    add_collection_args(p)
    p.set_defaults(func=run_collection)


def run_collection(args) -> int:
    from common.files import write_json
    from evaluation.collection import evaluate_collection
    from verify.confidence import Calibration

    from .cmd_collection import collection_conf_from_args, dask_client

    cal = Calibration.load(args.calibration) if args.calibration else None
    with dask_client(args) as client:
        res = evaluate_collection(args.data, args.out, collection_conf_from_args(args), conf_from_args(args),
                                  work=args.work, client=client, calibration=cal, progress=not args.quiet)
    print(f"pair_precision {res['pair_precision']:.4f}  pair_recall {res['pair_recall']:.4f}  ari {res['ari']:.4f}  "
          f"groups {res['groups']} (+{res['singletons']} single photos, {res['labels']} labels)  "
          f"threshold {res['threshold']:g}")
    print(f"pairs verified {res['pairs_verified']} of {res['pairs_total']} ({100 * res['pairs_verified_fraction']:.1f}%)"
          f"  {res['photos_per_minute']:.1f} photos/minute{' (resumed run: not a from-scratch time)' if res['resumed'] else ''}")
    if args.json:
        write_json(args.json, res)
    return 0
