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
import os
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


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (a bad option is an ordinary mistake too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="delf",
        description="Landmark retrieval engine: attentive local features, Annoy index, RANSAC verification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# Options that name something a command writes (a file or a folder).
OUTPUT_OPTIONS = ("out", "json", "json_out", "draw", "report", "curve", "checkpoint", "work", "cache")
# `delf index ACTION INDEX` writes to INDEX for these actions.
INDEX_WRITES = ("build", "add", "remove", "compact")


def outputs(args) -> list[str]:
    """What the parsed command will write: checked before any work starts."""
    out = [getattr(args, k) for k in OUTPUT_OPTIONS if isinstance(getattr(args, k, None), str)]
    if getattr(args, "index_command", None) in INDEX_WRITES:
        out.append(args.index)
    return out


def main(argv: list[str] | None = None) -> int:
    from common.errors import user_message
    from common.files import check_writable

    parser = build_parser()
    args = parser.parse_args(argv)
    command = " ".join(v for v in (args.command, getattr(args, "index_command", None),
                                   getattr(args, "evaluation", None), getattr(args, "bench", None)) if v)
    try:
        for path in outputs(args):
            check_writable(path)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"delf {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`delf index info IDX | head -3`): say so once, on stderr,
        # and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"delf {command}: error: <stdout>: closed before all the output was written", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - anticipated failures become one line, bugs keep their traceback
        message = user_message(exc)
        if message is None:
            raise
        print(f"delf {command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
