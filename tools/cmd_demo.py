"""`delf demo`: the main job on the sample photos shipped with the package."""

from __future__ import annotations

import os
import time

from .confargs import add_conf_args, conf_from_args


def sample_photos() -> list[str]:
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "delf", "data", "samples")
    photos = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    if len(photos) < 2:
        raise FileNotFoundError(f"{folder}: the sample photos are missing; reinstall the package")
    return photos


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the engine on the bundled sample photos",
                       description="Extracts features of two bundled photos taken in Lund, matches them, "
                                   "verifies the matches geometrically and draws the inliers.")
    p.add_argument("--out", default="out/demo", help="folder for the pictures (default: %(default)s)")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from delf.extractor import make_extractor

    from .pairs import draw_pair, match_pair

    photos = sample_photos()
    p1, p2 = photos[0], photos[1]
    conf = conf_from_args(args)
    t0 = time.perf_counter()
    extractor = make_extractor(conf)
    print(f"extractor: {conf.backbone}, scales {', '.join(map(str, conf.scales))}, up to {conf.max_features} "
          f"keypoints, {conf.scoring} scoring, PCA to {conf.pca_dim} dims ({time.perf_counter() - t0:.1f} s to load)")
    t0 = time.perf_counter()
    result = match_pair(extractor, p1, p2)
    v = result.verification
    print(f"{os.path.basename(p1)}: {len(result.features1)} keypoints; {os.path.basename(p2)}: "
          f"{len(result.features2)} keypoints ({time.perf_counter() - t0:.1f} s)")
    print(f"putative matches: {len(result.matches)}; affine RANSAC inliers: {v.num_inliers} "
          f"(spread {v.spread:.2f}, {v.trials} trials)")
    out = os.path.join(args.out, "match.png")
    draw_pair(result, p1, p2, out, title=f"{v.num_inliers} inliers")
    print(f"wrote {out}")
    return 0
