"""PCA of local descriptors: fit, save, load, apply (then L2-normalise)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import zipfile

import numpy as np

PCA_FORMAT_VERSION = 1


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, eps)).astype(np.float32)


@dataclass(frozen=True)
class PCA:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (K, D), rows sorted by decreasing variance
    variances: np.ndarray  # (K,)
    whiten: bool = False

    @property
    def input_dim(self) -> int:
        return self.components.shape[1]

    @property
    def max_dim(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, x: np.ndarray, dim: int = 128, whiten: bool = False) -> "PCA":
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"PCA needs an (N, D) array with N >= 2, got shape {x.shape}")
        dim = min(int(dim), x.shape[1], len(x))
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:dim]
        comps = vecs[:, order].T
        # Fix each component's sign so that fits are reproducible across BLAS builds.
        signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
        comps *= signs[:, None]
        return cls(mean.astype(np.float32), comps.astype(np.float32),
                   np.maximum(vals[order], 0).astype(np.float32), bool(whiten))

    def apply(self, x: np.ndarray, dim: int | None = None) -> np.ndarray:
        """Project (N, D) descriptors to ``dim`` dimensions and L2-normalise."""
        dim = self.max_dim if dim is None else int(dim)
        if dim > self.max_dim:
            raise ValueError(f"this PCA has {self.max_dim} components; cannot project to {dim}")
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"descriptors have {x.shape[1]} dimensions; this PCA expects {self.input_dim}")
        y = (x - self.mean) @ self.components[:dim].T
        if self.whiten:
            y = y / np.sqrt(self.variances[:dim] + 1e-6)
        return l2_normalise(y)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, components=self.components, variances=self.variances,
                 whiten=np.array(self.whiten), format_version=np.array(PCA_FORMAT_VERSION))
        return buf.getvalue()

    def save(self, path: str) -> None:
        from common.files import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str) -> "PCA":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such PCA file")
        try:
            with np.load(path) as z:
                version = int(z["format_version"])
                if version != PCA_FORMAT_VERSION:
                    raise ValueError(f"{path}: PCA format version {version}, expected {PCA_FORMAT_VERSION}")
                return cls(z["mean"], z["components"], z["variances"], bool(z["whiten"]))
        except (KeyError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, ValueError) and "format version" in str(exc):
                raise
            raise ValueError(f"{path}: not a PCA file of this engine ({exc})") from exc
