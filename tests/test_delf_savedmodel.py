"""Running a DELF SavedModel: a small model with exactly the official serving
signature, exported here, goes through the interop conversions."""

import numpy as np
import pytest

from delf.conf import ExtractorConf
from delf.extractor import make_extractor

from .conftest import SAMPLES


@pytest.fixture(scope="module")
def savedmodel_dir(tmp_path_factory):
    import tensorflow as tf

    class FakeDelf(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, None, 3], tf.uint8, name="input_image"),
            tf.TensorSpec([None], tf.float32, name="input_scales"),
            tf.TensorSpec([], tf.int32, name="input_max_feature_num"),
            tf.TensorSpec([], tf.float32, name="input_abs_thres"),
        ])
        def serve(self, input_image, input_scales, input_max_feature_num, input_abs_thres):
            h = tf.cast(tf.shape(input_image)[0], tf.float32)
            w = tf.cast(tf.shape(input_image)[1], tf.float32)
            ys, xs = tf.stack([h / 4, h / 2, 3 * h / 4]), tf.stack([w / 4, w / 2, w / 8])
            boxes = tf.stack([ys - 8, xs - 8, ys + 8, xs + 8], axis=1)  # (y1, x1, y2, x2)
            feats = tf.one_hot([0, 1, 2], 8) * 3.0
            scores = tf.constant([3.0, 2.0, 1.0])
            keep = tf.logical_and(scores >= input_abs_thres, tf.range(3) < input_max_feature_num)
            return {
                "boxes": tf.boolean_mask(boxes, keep),
                "features": tf.boolean_mask(feats, keep),
                "scales": tf.boolean_mask(tf.fill([3], input_scales[0]), keep),
                "scores": tf.boolean_mask(scores, keep),
            }

    path = tmp_path_factory.mktemp("sm") / "delf_model"
    module = FakeDelf()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def test_savedmodel_outputs_are_converted(savedmodel_dir):
    conf = ExtractorConf(backbone="savedmodel", weights=savedmodel_dir, pca=None, scales=(1.0, 0.5),
                         max_image_size=320)
    ex = make_extractor(conf)
    f = ex.extract(SAMPLES / "lund_01.jpg")  # 640x480, fed to the model at 320x240
    assert f.image_size == (640, 480)
    # (y, x) = (60, 80) in the 320x240 image the model saw -> (x, y) original pixels.
    np.testing.assert_allclose(f.locations[0], [(80 + 0.5) * 2 - 0.5, (60 + 0.5) * 2 - 0.5])
    np.testing.assert_allclose(f.locations[2], [(40 + 0.5) * 2 - 0.5, (180 + 0.5) * 2 - 0.5])
    np.testing.assert_allclose(f.descriptors, np.eye(3, 8))  # L2-normalised
    np.testing.assert_allclose(f.scales, 0.5)  # model scale 1.0 of an image halved first
    np.testing.assert_allclose(f.scores, [3, 2, 1])
    assert ex.resolved_conf()["descriptor_dim"] == 8
    # The conf's selection knobs reach the model.
    f2 = make_extractor(conf.replace(max_features=2, abs_threshold=2.5)).extract(SAMPLES / "lund_01.jpg")
    assert len(f2) == 1


def test_savedmodel_errors(tmp_path, savedmodel_dir):
    with pytest.raises(FileNotFoundError, match="SavedModel"):
        make_extractor(ExtractorConf(backbone="savedmodel", weights=str(tmp_path / "none"), pca=None))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        make_extractor(ExtractorConf(backbone="savedmodel", weights=str(tmp_path / "empty"), pca=None))
