"""The torch-free .pth reader, on the real Lite0 file (legacy layout) and on a
zip-layout file written here the way PyTorch writes it."""

import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from delf.backbones.lite0 import default_weights_path
from delf.pth import PthFormatError, load_state_dict


def test_reads_real_lite0_state_dict():
    sd = load_state_dict(default_weights_path())
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.10._project_conv.weight"].shape == (112, 672, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.weight"].dtype == np.float32
    assert np.isfinite(sd["_fc.weight"]).all() and sd["_fc.weight"].std() > 0
    # BatchNorm variances are never negative (a few channels are dead, at 0):
    # misaligned storage bytes would give negative or huge values.
    var = sd["_bn0.running_var"]
    assert (var >= 0).all() and 0.1 < np.median(var) < 100


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named like PyTorch's so that pickle writes the same GLOBALs."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):  # never called: the reader supplies its own
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


def _write_zip_pth(path, tensors, torch, utils):
    storages = {}

    class Tensor:
        def __init__(self, key, arr, offset=0, stride=None):
            self.key, self.arr, self.offset = key, arr, offset
            self.stride = stride or tuple(s // arr.itemsize for s in arr.strides)

        def __reduce__(self):
            return utils._rebuild_tensor_v2, (("storage", self.key), self.offset, self.arr.shape, self.stride,
                                              False, collections.OrderedDict())

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "storage":
                return ("storage", torch.FloatStorage, obj[1], "cpu", storages[obj[1]].size)
            return None

    objs = collections.OrderedDict()
    for i, (name, arr) in enumerate(tensors.items()):
        storages[str(i)] = np.ascontiguousarray(arr, np.float32).reshape(-1)
        objs[name] = Tensor(str(i), np.ascontiguousarray(arr, np.float32))
    buf = io.BytesIO()
    P(buf, protocol=2).dump(objs)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        for key, arr in storages.items():
            zf.writestr(f"archive/data/{key}", arr.tobytes())


def test_reads_zip_layout(tmp_path, fake_torch):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.normal(size=(4, 3, 2, 2)), "b.bias": rng.normal(size=(5,))}
    path = tmp_path / "model.pth"
    _write_zip_pth(path, tensors, *fake_torch)
    sd = load_state_dict(path)
    assert list(sd) == ["a.weight", "b.bias"]
    for k, v in tensors.items():
        np.testing.assert_array_equal(sd[k], v.astype(np.float32))


def test_rejects_non_pth_files(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(PthFormatError, match="x.pth"):
        load_state_dict(bad)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict(tmp_path / "nope.pth")
