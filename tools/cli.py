"""`delf` console command.

Each subcommand lives in a module of this package that defines
``register(subparsers)``; the module adds its parser and sets ``func`` to a
function taking the parsed arguments and returning an exit code. Heavy imports
(TensorFlow, Numba) happen inside those functions so that ``delf --help`` is
instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Top-level subcommands, in the order `delf --help` lists them.
COMMAND_MODULES = [
    "tools.cmd_extract",
    "tools.cmd_pca",
    "tools.cmd_demo",
    "tools.cmd_match",
    "tools.cmd_index",
    "tools.cmd_train",
    "tools.cmd_search",
    "tools.cmd_serve",
    "tools.cmd_collection",
    "tools.cmd_calibrate",
    "tools.cmd_evaluate",
    "tools.bench",
]

# `delf bench <name>` subcommands.
BENCH_MODULES = [
    "tools.bench_homography",
    "tools.bench_extract",
    "tools.bench_pairs",
    "tools.bench_ransac",
    "tools.bench_index",
    "tools.bench_serve",
]


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="delf",
        description="Landmark retrieval engine: attentive local features, Annoy index, RANSAC verification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"delf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"delf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
