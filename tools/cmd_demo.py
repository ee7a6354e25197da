"""`delf demo`: the engine on the bundled sample photos (engine.demo.run_demo)."""

from __future__ import annotations

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the engine on the bundled sample photos",
                       description="Indexes the bundled photos of Lund (all but the last), then searches the "
                                   "index with the held-out photo (a match: its inliers are drawn) and with "
                                   "scikit-image's astronaut photo (no match), and prints what it did.")
    p.add_argument("--out", default="out/demo", help="folder for the index, pictures and answers (default: %(default)s)")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.demo import run_demo

    run_demo(args.out, conf_from_args(args))
    return 0
