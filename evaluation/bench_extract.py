"""Benchmark behind `delf bench extract`: seconds per photo of the full extractor
and of the bare backbone forward passes over the same pyramids, in the same run."""

from __future__ import annotations

import time

import numpy as np


def bench_extract(data: str, conf, limit: int = 20, repeats: int = 1, compare_scales=()) -> dict:
    """Time the extractor of ``conf`` on the first ``limit`` photos of the folder ``data``
    (the minimum of ``repeats`` timings per photo), and the bare backbone over the same
    pyramid levels. ``compare_scales``: other pyramids (tuples of scales) timed in the same
    run, interleaved per photo."""
    from delf.extractor import Extractor
    from delf.image import list_images, load_image

    items = list_images([data])[:limit]
    if not items:
        raise ValueError(f"{data}: no photos")
    ex = Extractor(conf)
    variants = [(ex.with_pyramid(scales=tuple(float(v) for v in scales)), []) for scales in compare_scales]
    ex.extract(items[0][0])  # warm-up: traces the network once
    full, bare = [], []
    for path, _ in items:
        for other, times in variants:
            t = time.perf_counter()
            other.extract(path)
            times.append(time.perf_counter() - t)
        tf_ = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            ex.extract(path)
            tf_.append(time.perf_counter() - t)
        levels = [lvl for _, lvl in ex.pyramid(load_image(path))]
        tb = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            for lvl in levels:
                ex.backbone(lvl)
            tb.append(time.perf_counter() - t)
        full.append(min(tf_))
        bare.append(min(tb))
    full_s, bare_s = float(np.mean(full)), float(np.mean(bare))
    return {
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


def format_table(result: dict) -> str:
    """The lines `delf bench extract` prints."""
    lines = [f"{result['photos']} photos, scales {','.join(map(str, result['scales']))}: "
             f"{result['seconds_per_image']:.3f} s/photo full, {result['backbone_seconds_per_image']:.3f} "
             f"s/photo backbone only, overhead {result['overhead_fraction']:.1%}"]
    for v in result["variants"]:
        lines.append(f"  scales {','.join(map(str, v['scales']))}: {v['seconds_per_image']:.3f} s/photo "
                     f"({v['time_vs_main']:.2f} x the main pyramid, same run)")
    return "\n".join(lines)


__all__ = ["bench_extract", "format_table"]
