"""`delf extract PHOTOS_OR_DIR... --out features.h5`"""

from __future__ import annotations

from .confargs import add_conf_args, conf_from_args, report_batch


def register(sub) -> None:
    p = sub.add_parser("extract", help="extract local features of photos into an HDF5 file",
                       description="Extract attentive local features of photos (files, folders, or .txt lists "
                                   "of paths) into one HDF5 file. Resumes: photos already in the file are skipped.")
    p.add_argument("inputs", nargs="+", metavar="PHOTOS_OR_DIR")
    p.add_argument("--out", required=True, help="features file (HDF5) to create or add to")
    p.add_argument("--float16", action="store_true", help="store locations and descriptors as float16")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_conf_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from delf.extract import extract_to_h5

    report = extract_to_h5(args.inputs, args.out, conf_from_args(args), float16=args.float16,
                           progress=not args.quiet)
    return report_batch(report)
