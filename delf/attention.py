"""DELF's attention head: 1x1 conv (512) -> BatchNorm -> ReLU -> 1x1 conv (1)
-> softplus, over the L2-normalised feature map; heads trained with
``norm_input`` also see each cell's log feature norm, standardised, as one
more input channel (DELF's attention sees the raw features).

Inference runs in NumPy (two small matrix products per pyramid level); the
weights are a .npz with arrays conv1_w (C, 512), conv1_b (512,), bn_gamma,
bn_beta, bn_mean, bn_var (512,), conv2_w (512, 1), conv2_b (1,), and
optionally lognorm (2,): the mean and std of the log norm (then conv1_w has
C + 1 rows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import zipfile

import numpy as np

BN_EPS = 1e-3
HIDDEN = 512
_KEYS = ("conv1_w", "conv1_b", "bn_gamma", "bn_beta", "bn_mean", "bn_var", "conv2_w", "conv2_b")


def head_input(x: np.ndarray, lognorm=None) -> np.ndarray:
    """The head's input for raw cells (N, C): the L2-normalised vectors, and
    the standardised log norm as a last column when ``lognorm`` = (mean, std)."""
    norm = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    xn = x / norm
    if lognorm is None:
        return xn
    return np.concatenate([xn, (np.log(norm) - lognorm[0]) / lognorm[1]], axis=1).astype(np.float32)


def default_head_path(backbone: str) -> str:
    return os.path.join(os.path.dirname(__file__), "data", f"attention_{backbone}.npz")


@dataclass(frozen=True)
class AttentionHead:
    conv1_w: np.ndarray
    conv1_b: np.ndarray
    bn_gamma: np.ndarray
    bn_beta: np.ndarray
    bn_mean: np.ndarray
    bn_var: np.ndarray
    conv2_w: np.ndarray
    conv2_b: np.ndarray
    lognorm: np.ndarray | None = None  # (mean, std) of the log feature norm, when the head sees it

    @property
    def in_channels(self) -> int:
        """Channels of the feature map the head scores."""
        return self.conv1_w.shape[0] - (0 if self.lognorm is None else 1)

    @classmethod
    def load(cls, path: str) -> "AttentionHead":
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: no attention weights; train them with `delf train attention` or use --scoring norm"
            )
        try:
            with np.load(path) as z:
                extra = {"lognorm": z["lognorm"].astype(np.float32)} if "lognorm" in z.files else {}
                head = cls(**{k: z[k].astype(np.float32) for k in _KEYS}, **extra)
        except (KeyError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not an attention-head weights file ({exc})") from exc
        if head.lognorm is not None and (head.lognorm.shape != (2,) or not head.lognorm[1] > 0):
            raise ValueError(f"{path}: lognorm must be (mean, std > 0), got {head.lognorm.tolist()}")
        return head

    def save(self, path: str) -> None:
        import io

        from common.files import atomic_write_bytes

        buf = io.BytesIO()
        arrays = {k: getattr(self, k) for k in _KEYS}
        if self.lognorm is not None:
            arrays["lognorm"] = np.asarray(self.lognorm, np.float32)
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    def __call__(self, fmap: np.ndarray) -> np.ndarray:
        """Scores (h, w) of a raw feature map (h, w, C)."""
        h, w, c = fmap.shape
        if c != self.in_channels:
            raise ValueError(f"attention head expects {self.in_channels} channels, feature map has {c}")
        x = head_input(fmap.reshape(-1, c).astype(np.float32), self.lognorm)
        y = x @ self.conv1_w + self.conv1_b
        y = (y - self.bn_mean) / np.sqrt(self.bn_var + BN_EPS) * self.bn_gamma + self.bn_beta
        y = np.maximum(y, 0.0) @ self.conv2_w + self.conv2_b
        return np.logaddexp(0.0, y).reshape(h, w).astype(np.float32)  # softplus
