"""`delf bench ...`: benchmarks of the product, each writing JSON with --json."""

from __future__ import annotations

import importlib


def register(sub) -> None:
    from .cli import BENCH_MODULES

    p = sub.add_parser("bench", help="benchmarks (homography, extract, ...)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    bsub.required = True
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bsub)
