"""`delf bench extract`: seconds per photo of the full extractor and of the bare
backbone forward passes over the same pyramids, in the same run."""

from __future__ import annotations

import time

import numpy as np

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
    from delf.extractor import Extractor
    from delf.image import list_images, load_image

    from .common import write_json

    conf = conf_from_args(args)
    items = list_images([args.data])[: args.limit]
    if not items:
        raise ValueError(f"{args.data}: no photos")
    ex = Extractor(conf)
    variants = []
    for text in (args.compare_scales or "").split(";"):
        if text.strip():
            variants.append((ex.with_pyramid(scales=tuple(float(v) for v in text.split(","))), []))
    ex.extract(items[0][0])  # warm-up: traces the network once
    full, bare = [], []
    for path, _ in items:
        for other, times in variants:
            t = time.perf_counter()
            other.extract(path)
            times.append(time.perf_counter() - t)
        tf_ = []
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            ex.extract(path)
            tf_.append(time.perf_counter() - t)
        levels = [lvl for _, lvl in ex.pyramid(load_image(path))]
        tb = []
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            for lvl in levels:
                ex.backbone(lvl)
            tb.append(time.perf_counter() - t)
        full.append(min(tf_))
        bare.append(min(tb))
    full_s, bare_s = float(np.mean(full)), float(np.mean(bare))
    result = {
        "photos": len(items),
        "scales": list(conf.scales),
        "seconds_per_image": full_s,
        "backbone_seconds_per_image": bare_s,
        "overhead_fraction": 1.0 - bare_s / full_s,
        "conf": conf.to_dict(),
        "variants": [
            {"scales": list(o.conf.scales), "seconds_per_image": float(np.mean(t)),
             "time_vs_main": float(np.mean(t)) / full_s}
            for o, t in variants
        ],
    }
    print(f"{len(items)} photos, scales {','.join(map(str, conf.scales))}: {full_s:.3f} s/photo full, "
          f"{bare_s:.3f} s/photo backbone only, overhead {result['overhead_fraction']:.1%}")
    for v in result["variants"]:
        print(f"  scales {','.join(map(str, v['scales']))}: {v['seconds_per_image']:.3f} s/photo "
              f"({v['time_vs_main']:.2f} x the main pyramid, same run)")
    if args.json:
        write_json(args.json, result)
    return 0
