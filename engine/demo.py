"""`delf demo`: the main job on the sample photos shipped with the package.

Indexes nine bundled photos of Lund, then asks two questions: a held-out photo
of Lund (a match, drawn), and scikit-image's bundled `astronaut` photo (a
place the index does not hold: no match).
"""

from __future__ import annotations

import os
import time


def sample_photos() -> list[str]:
    """The bundled photos of Lund (delf/data/samples), sorted."""
    import delf

    folder = os.path.join(os.path.dirname(os.path.abspath(delf.__file__)), "data", "samples")
    photos = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    if len(photos) < 3:
        raise FileNotFoundError(f"{folder}: the sample photos are missing; reinstall the package")
    return photos


def run_demo(out: str, conf=None, log=print) -> dict:
    """The demo: returns the two answers and what was written."""
    import skimage.data

    from common.files import write_json, write_png
    from delf.extractor import make_extractor

    from .engine import Engine
    from .searching import draw_result, format_answer

    photos = sample_photos()
    db, held_out = photos[:-1], photos[-1]
    t0 = time.perf_counter()
    extractor = make_extractor(conf)
    c = extractor.conf
    log(f"extractor: {c.backbone}, scales {', '.join(map(str, c.scales))}, up to {c.max_features} keypoints, "
        f"{c.scoring} scoring, PCA to {c.pca_dim} dims ({time.perf_counter() - t0:.1f} s to load)")
    t0 = time.perf_counter()
    idx = os.path.join(out, "index")
    engine = Engine.build(idx, db, extractor=extractor, overwrite=True)
    info = engine.info()
    log(f"extracted {len(db)} sample photos of Lund ({time.perf_counter() - t0:.1f} s)")
    log(f"indexed {info['photos']} photos, {info['descriptors']} descriptors -> {idx}")
    answers = {}
    with engine:
        for name, image in ((os.path.basename(held_out), held_out), ("astronaut (scikit-image)", skimage.data.astronaut())):
            q = extractor.extract(image, name)
            if not answers:  # load the compiled search and RANSAC kernels outside the timings
                engine.search(q, name=name)
            ans = engine.search(q, name=name)
            answers[name] = ans
            log("")
            log("\n".join(format_answer(ans, 3)))
            log(f"  search {ans.search_ms:.1f} ms, verification of {sum(r.verified for r in ans.results)} "
                f"candidates {ans.verify_ms:.1f} ms")
        threshold = engine.threshold
    match = answers[os.path.basename(held_out)]
    written = {"index": idx}
    canvas = None if match.best is None else draw_result(
        held_out, os.path.join(os.path.dirname(held_out), match.best.name), match.query, match.best)
    if canvas is not None:
        written["picture"] = os.path.join(out, "match.png")
        write_png(written["picture"], canvas)
    written["answers"] = os.path.join(out, "answers.json")
    write_json(written["answers"], {"threshold": threshold, "queries": [a.to_dict(5) for a in answers.values()]})
    log("")
    for k in ("picture", "answers"):
        if k in written:
            log(f"wrote {written[k]}")
    return {"answers": answers, "written": written}


__all__ = ["run_demo", "sample_photos"]
