"""`delf pca fit PHOTOS_OR_DIR... --out pca.npz`"""

from __future__ import annotations

import sys

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
    import os
    import tempfile

    import numpy as np

    from delf.extract import extract_to_h5
    from delf.featio import FeatureFile
    from delf.pca import PCA

    conf = conf_from_args(args).replace(pca=None)
    store = args.features or os.path.join(tempfile.mkdtemp(prefix="delf-pca-"), "raw.h5")
    report = extract_to_h5(args.inputs, store, conf)
    print(report.summary(), file=sys.stderr)
    with FeatureFile(store) as ff:
        desc = np.concatenate([ff[n].descriptors for n in ff.names])
    pca = PCA.fit(desc, dim=args.dim, whiten=args.whiten)
    pca.save(args.out)
    explained = pca.variances.cumsum() / max(float(np.var(desc, axis=0).sum()), 1e-12)
    print(f"{args.out}: PCA {pca.input_dim} -> {pca.max_dim} dims from {len(desc)} descriptors of "
          f"{len(ff.names)} photos; variance kept at 40 dims: {explained[min(39, pca.max_dim - 1)]:.3f}")
    return 0
