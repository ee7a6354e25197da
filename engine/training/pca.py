"""`delf pca fit`: the descriptor PCA, fitted on the raw (pre-PCA) descriptors of some photos.

Never fit it on your evaluation photos (the shipped one was fitted on landmarks/).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np


def fit_pca(inputs, out: str, conf=None, dim: int = 128, whiten: bool = False, features: str | None = None,
            log=print) -> dict:
    """Extract the raw descriptors of ``inputs`` with ``conf`` (its PCA switched
    off), keeping them in ``features`` (resumable) or a temporary file, fit a
    PCA of ``dim`` components and save it to ``out``. Returns a summary."""
    from delf.conf import ExtractorConf
    from delf.extract import extract_to_h5
    from delf.featio import FeatureFile
    from delf.image import require_inputs
    from delf.pca import PCA

    require_inputs(inputs)
    conf = (conf or ExtractorConf()).replace(pca=None)
    with tempfile.TemporaryDirectory(prefix="delf-pca-") as tmp:
        store = features or os.path.join(tmp, "raw.h5")
        report = extract_to_h5(inputs, store, conf)
        for path, problem in report.failed:
            print(f"{path}: {problem}", file=sys.stderr)
        if not report.extracted and not report.skipped:
            raise ValueError(f"{', '.join(map(str, inputs))}: no usable photos to fit a PCA on")
        with FeatureFile(store) as ff:
            names = ff.names
            desc = np.concatenate([ff[n].descriptors for n in names])
    pca = PCA.fit(desc, dim=dim, whiten=whiten)
    pca.save(out)
    explained = pca.variances.cumsum() / max(float(np.var(desc, axis=0).sum()), 1e-12)
    summary = {"out": out, "input_dim": pca.input_dim, "dim": pca.max_dim, "descriptors": len(desc),
               "photos": len(names), "variance_at_40": float(explained[min(39, pca.max_dim - 1)])}
    log(f"{out}: PCA {pca.input_dim} -> {pca.max_dim} dims from {len(desc)} descriptors of {len(names)} photos; "
        f"variance kept at 40 dims: {summary['variance_at_40']:.3f}")
    return summary


__all__ = ["fit_pca"]
