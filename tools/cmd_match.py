"""`delf match PHOTO1 PHOTO2 --out match.png`: extract, match, verify and draw one pair."""

from __future__ import annotations

import os

from .confargs import add_conf_args, conf_from_args

MODELS = ("affine", "similarity", "homography")
MATCHERS = ("default", "delf", "lowe")


def register(sub) -> None:
    p = sub.add_parser(
        "match", help="match two photos: features, putative matches, RANSAC, picture of the inliers",
        description="Extracts the features of both photos, matches the descriptors (mutual nearest neighbours "
                    "with a ratio test by default), verifies the matches with RANSAC and draws the inliers side "
                    "by side. Prints the number of inliers and the model mapping PHOTO1 pixels to PHOTO2 pixels.",
    )
    p.add_argument("photo1", metavar="PHOTO1", help="first photo (the model maps its pixels...)")
    p.add_argument("photo2", metavar="PHOTO2", help="second photo (...to this one's)")
    p.add_argument("--out", required=True, help="PNG picture of the inlier matches (written atomically)")
    p.add_argument("--json", help="also write the result as JSON here")
    p.add_argument("--model", choices=MODELS, default="affine", help="geometric model (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=20.0,
                   help="RANSAC inlier distance in PHOTO2 pixels (default: %(default)s, DELF's)")
    p.add_argument("--matcher", choices=MATCHERS, default="default",
                   help="putative matching: default = mutual nearest neighbours + ratio 0.9; delf = nearest "
                        "neighbour closer than 0.8; lowe = ratio 0.8 (default: %(default)s)")
    p.add_argument("--ratio", type=float, help="override the matcher's ratio test (0 < r <= 1)")
    p.add_argument("--ransac-seed", type=int, default=0, help="RANSAC seed (default: %(default)s)")
    p.add_argument("--border", type=float, default=16.0,
                   help="leave out matches whose two keypoints both lie within this many pixels of their photo's "
                        "edge (edge features describe the CNN's padding); 0 keeps all (default: %(default)s)")
    add_conf_args(p)
    p.set_defaults(func=run)


def _format_model(m) -> list[str]:
    return ["  [" + "  ".join(f"{v:12.6g}" for v in row) + " ]" for row in m]


def run(args) -> int:
    for path in (args.photo1, args.photo2):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such photo")
    if args.threshold is None or not args.threshold > 0:
        raise ValueError(f"--threshold must be a positive number of pixels, got {args.threshold}")
    if not args.border >= 0:
        raise ValueError(f"--border must be a number of pixels >= 0, got {args.border}")

    from delf.extractor import make_extractor
    from delf.image import load_image
    from verify.matching import MATCH_PRESETS

    from common.files import write_json
    from engine.pairs import draw_pair, match_pair

    match_conf = MATCH_PRESETS[args.matcher]
    if args.ratio is not None:
        match_conf = match_conf.replace(ratio=args.ratio)
    image1, image2 = load_image(args.photo1), load_image(args.photo2)
    extractor = make_extractor(conf_from_args(args))
    result = match_pair(extractor, image1, image2, model=args.model, residual_threshold=args.threshold,
                        match_conf=match_conf, seed=args.ransac_seed, border=args.border)
    v = result.verification
    name1, name2 = os.path.basename(args.photo1), os.path.basename(args.photo2)
    print(f"{name1}: {len(result.features1)} keypoints; {name2}: {len(result.features2)} keypoints")
    print(f"putative matches: {len(result.matches)} ({args.matcher} matcher)")
    if v.model is None:
        print(f"{args.model} RANSAC ({args.threshold:g} px): no model (too few or degenerate matches)")
    else:
        print(f"{args.model} RANSAC ({args.threshold:g} px): {v.num_inliers} inliers, spread {v.spread:.2f} "
              f"({name1} {v.spread_src:.2f}, {name2} {v.spread_dst:.2f}), {v.trials} trials")
        print(f"model ({name1} pixels -> {name2} pixels):")
        print("\n".join(_format_model(v.model)))
    draw_pair(result, image1, image2, args.out, title=f"{v.num_inliers} inliers ({args.model})")
    print(f"wrote {args.out}")
    if args.json:
        p1, p2 = result.inlier_points
        write_json(args.json, {
            "photo1": args.photo1,
            "photo2": args.photo2,
            "keypoints": [len(result.features1), len(result.features2)],
            "putative_matches": len(result.matches),
            "matcher": {"name": args.matcher, **match_conf.to_dict()},
            "ransac": {"model": args.model, "residual_threshold": args.threshold, "seed": args.ransac_seed,
                       "border": args.border},
            **v.to_dict(),
            "inliers": [[float(a), float(b), float(c), float(d)] for (a, b), (c, d) in zip(p1, p2)],
        })
        print(f"wrote {args.json}")
    return 0
