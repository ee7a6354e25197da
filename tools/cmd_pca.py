"""`delf pca fit PHOTOS_OR_DIR... --out pca.npz`"""

from __future__ import annotations

from .confargs import add_conf_args, conf_from_args


def register(sub) -> None:
    p = sub.add_parser("pca", help="fit the descriptor PCA")
    psub = p.add_subparsers(dest="pca_command", metavar="ACTION")
    psub.required = True
    f = psub.add_parser("fit", help="fit a PCA on the raw descriptors of some photos",
                        description="Extract raw (pre-PCA) descriptors of the photos with the given extractor "
                                    "options and fit a PCA on them. Never fit on your evaluation photos.")
    f.add_argument("inputs", nargs="+", metavar="PHOTOS_OR_DIR")
    f.add_argument("--out", required=True, help="PCA file to write (.npz)")
    f.add_argument("--dim", type=int, default=128, help="components kept (default: %(default)s)")
    f.add_argument("--whiten", action="store_true", help="whiten (divide by the component's std)")
    f.add_argument("--features", help="also keep the raw features in this HDF5 file (resumable)")
    add_conf_args(f)
    f.set_defaults(func=run_fit)


def run_fit(args) -> int:
    from engine.training.pca import fit_pca

    fit_pca(args.inputs, args.out, conf_from_args(args), dim=args.dim, whiten=args.whiten, features=args.features)
    return 0
