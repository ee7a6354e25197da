"""Features HDF5: round trip, float16, resume after an interruption, refusals."""

import h5py
import numpy as np
import pytest

from delf.extract import extract_to_h5
from delf.featio import FeatureFile, FeatureFileError, FeatureWriter
from delf.features import Features

from .conftest import SAMPLES


def _feats(n, d=40, seed=0):
    rng = np.random.default_rng(seed)
    desc = rng.normal(size=(n, d)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return Features(rng.uniform(0, 600, (n, 2)), desc, rng.uniform(0.25, 2, n), rng.uniform(0, 9, n), (640, 480))


CONF = {"backbone": "lite0", "scales": [1.0], "pca": "default", "pca_dim": 40, "scoring": "norm"}


@pytest.mark.parametrize("float16", [False, True])
def test_round_trip(tmp_path, float16):
    path = tmp_path / "f.h5"
    a, b, empty = _feats(100), _feats(7, seed=1), _feats(0)
    with FeatureWriter(path, CONF, float16=float16) as w:
        w.write("dir/a.jpg", a)
        w.write("b.jpg", b)
        w.write("empty.jpg", empty)
    assert not (tmp_path / "f.h5.partial").exists()
    with FeatureFile(path) as ff:
        assert ff.names == ["b.jpg", "dir/a.jpg", "empty.jpg"]
        assert ff.conf == CONF
        got = ff["dir/a.jpg"]
        tol = 2e-3 if float16 else 0
        np.testing.assert_allclose(got.descriptors, a.descriptors, atol=tol)
        np.testing.assert_allclose(got.locations, a.locations, atol=0.5 if float16 else 0)
        np.testing.assert_array_equal(got.scores, a.scores)
        assert got.image_size == (640, 480) and got.descriptors.dtype == np.float32
        assert len(ff["empty.jpg"]) == 0 and ff["empty.jpg"].descriptors.shape == (0, 40)
        with pytest.raises(KeyError, match="nope"):
            ff["nope"]


def test_refuses_other_conf_and_bad_files(tmp_path):
    path = tmp_path / "f.h5"
    with FeatureWriter(path, CONF) as w:
        w.write("a.jpg", _feats(3))
    with pytest.raises(FeatureFileError, match="pca_dim: 40 vs 128"):
        FeatureWriter(path, dict(CONF, pca_dim=128))
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF junk")
    with pytest.raises(FeatureFileError, match="junk.h5"):
        FeatureFile(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(FeatureFileError, match="version 99"):
        FeatureFile(tmp_path / "old.h5")
    with pytest.raises(FileNotFoundError):
        FeatureFile(tmp_path / "missing.h5")


class _Interrupting:
    """Wraps an extractor and stops the batch (like Ctrl-C) after n photos."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0

    def resolved_conf(self):
        return self.inner.resolved_conf()

    def extract(self, path):
        if self.calls == self.n:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.extract(path)


def test_batch_resumes_after_interruption(tmp_path, small_extractor):
    photos = sorted(SAMPLES.glob("lund_0[1-4].jpg"))
    out = tmp_path / "f.h5"
    with pytest.raises(KeyboardInterrupt):
        extract_to_h5(photos, out, extractor=_Interrupting(small_extractor, 2), progress=False)
    # The target is never half-written: it does not exist yet, the partial holds 2.
    assert not out.exists()
    with h5py.File(str(out) + ".partial", "r") as f:
        assert sorted(f) == ["lund_01.jpg", "lund_02.jpg"]
    counting = _Interrupting(small_extractor, 99)
    report = extract_to_h5(photos, out, extractor=counting, progress=False)
    assert counting.calls == 2 and report.skipped == ["lund_01.jpg", "lund_02.jpg"]
    assert report.extracted == ["lund_03.jpg", "lund_04.jpg"]
    # Same result as one uninterrupted run.
    with FeatureFile(out) as ff:
        assert ff.names == [p.name for p in photos]
        np.testing.assert_array_equal(ff["lund_03.jpg"].descriptors, small_extractor.extract(photos[2]).descriptors)
    # Running again extracts nothing.
    again = extract_to_h5(photos, out, extractor=_Interrupting(small_extractor, 0), progress=False)
    assert again.extracted == [] and len(again.skipped) == 4
