"""`delf demo`: the main job on the sample photos shipped with the package.

Indexes nine bundled photos of Lund, then asks two questions: a held-out photo
of Lund (a match, drawn), and scikit-image's bundled `astronaut` photo (a
place the index does not hold: no match).
"""

from __future__ import annotations

import os
import time

from .confargs import add_conf_args, conf_from_args


def sample_photos() -> list[str]:
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "delf", "data", "samples")
    photos = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    if len(photos) < 3:
        raise FileNotFoundError(f"{folder}: the sample photos are missing; reinstall the package")
    return photos


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the engine on the bundled sample photos",
                       description="Indexes the bundled photos of Lund (all but the last), then searches the "
                                   "index with the held-out photo (a match: its inliers are drawn) and with "
                                   "scikit-image's astronaut photo (no match), and prints what it did.")
    p.add_argument("--out", default="out/demo", help="folder for the index, pictures and answers (default: %(default)s)")
    add_conf_args(p)
    p.set_defaults(func=run)


def run_demo(out: str, conf=None, log=print) -> dict:
    """The demo as a function (the test calls it): returns the two answers and what was written."""
    import skimage.data

    from delf.extractor import make_extractor
    from index import Index, build_index_from_features
    from verify.draw import draw_matches, read_image

    from .cmd_search import format_answer
    from .common import write_json, write_png
    from .searching import SearchSettings, answer_query

    photos = sample_photos()
    db, held_out = photos[:-1], photos[-1]
    t0 = time.perf_counter()
    extractor = make_extractor(conf)
    c = extractor.conf
    log(f"extractor: {c.backbone}, scales {', '.join(map(str, c.scales))}, up to {c.max_features} keypoints, "
        f"{c.scoring} scoring, PCA to {c.pca_dim} dims ({time.perf_counter() - t0:.1f} s to load)")
    t0 = time.perf_counter()
    feats = [(os.path.basename(p), extractor.extract(p)) for p in db]
    log(f"extracted {len(feats)} sample photos of Lund ({time.perf_counter() - t0:.1f} s)")
    idx = os.path.join(out, "index")
    info = build_index_from_features(idx, feats, extractor.resolved_conf(), overwrite=True)
    log(f"indexed {info.get('photos', len(feats))} photos, {info.get('descriptors', '?')} descriptors -> {idx}")
    settings = SearchSettings().resolved()
    astronaut = skimage.data.astronaut()
    answers = {}
    with Index(idx) as index:
        for name, image in ((os.path.basename(held_out), held_out), ("astronaut (scikit-image)", astronaut)):
            q = extractor.extract(image, name)
            if not answers:  # load the compiled search and RANSAC kernels outside the timings
                answer_query(index, q, name, settings)
            ans = answer_query(index, q, name, settings, query_conf=extractor.resolved_conf())
            answers[name] = ans
            log("")
            log("\n".join(format_answer(ans, 3)))
            log(f"  search {ans.search_ms:.1f} ms, verification of {sum(r.verified for r in ans.results)} "
                f"candidates {ans.verify_ms:.1f} ms")
    match = answers[os.path.basename(held_out)]
    written = {"index": idx}
    if match.best is not None and match.best.verification is not None:
        b = match.best
        canvas = draw_matches(read_image(held_out), read_image(os.path.join(os.path.dirname(held_out), b.name)),
                              b.query_xy, b.db_xy, inliers=b.verification.inliers,
                              title=f"{match.query} -> {b.name}: {b.inliers} inliers, confidence {b.confidence:.2f}")
        written["picture"] = os.path.join(out, "match.png")
        write_png(written["picture"], canvas)
    written["answers"] = os.path.join(out, "answers.json")
    write_json(written["answers"], {"threshold": settings.threshold,
                                    "queries": [a.to_dict(5) for a in answers.values()]})
    log("")
    for k in ("picture", "answers"):
        if k in written:
            log(f"wrote {written[k]}")
    return {"answers": answers, "written": written}


def run(args) -> int:
    run_demo(args.out, conf_from_args(args))
    return 0
