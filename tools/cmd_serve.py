"""`delf serve INDEX [--host H] [--port P] [--token T] [--db-images DIR] [--max-upload-mb MB]`: the engine over HTTP."""

from __future__ import annotations

import os

TOKEN_ENV = "DELF_SERVE_TOKEN"


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve an index over HTTP: a JSON API (search, match, add, remove) and a web page",
        description="Opens the index once (memory-mapped), loads the extractor and the calibration once, and "
                    "serves a JSON API (OpenAPI at /docs) and a web page at / until Ctrl-C or SIGTERM. Searches "
                    "go on while photos are added or removed.",
    )
    p.add_argument("index", metavar="INDEX", help="index directory (from `delf index build`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free one)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"adding and removing photos needs 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; "
                        "none: writes are open)")
    p.add_argument("--db-images", metavar="DIR",
                   help="folder the database photo names are relative to: their images are served, and added "
                        "photos are saved there")
    p.add_argument("--max-upload-mb", type=float, default=20,
                   help="largest request body in MB; larger uploads get 413 (default: %(default)s)")
    p.add_argument("--labels", metavar="CSV", help="database photo labels (photo,label): each answer also gets "
                                                  "a predicted label")
    p.add_argument("--calibration", help="confidence calibration JSON (default: the shipped one)")
    p.add_argument("--threshold", type=float,
                   help="confidence at or above which the best result is a match (default: the calibration's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from common.errors import UserError
    from engine.server import serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise UserError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    return serve(args.index, host=args.host, port=args.port, token=args.token or None, db_images=args.db_images,
                 max_upload_mb=args.max_upload_mb, labels=args.labels, calibration=args.calibration,
                 threshold=args.threshold)
