"""The Keras Lite0 conversion and the receptive-field geometry of both backbones."""

import cv2
import numpy as np
import pytest
from skimage import data

from delf.backbones import lite0
from delf.receptive import output_size

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def classifier():
    model = lite0.build(include_top=True)
    lite0.load_weights(model)
    return model


def _top5(model, rgb):
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    logits = model(lite0.preprocess(x[None]), training=False).numpy()[0]
    return list(np.argsort(logits)[::-1][:5])


def test_converted_lite0_labels_imagenet_photos(classifier):
    cat, coffee = _top5(classifier, data.chelsea()), _top5(classifier, data.coffee())
    assert cat[0] in CAT_CLASSES, cat
    assert coffee[0] in COFFEE_CLASSES, coffee
    # And not by accident: the astronaut is neither.
    assert _top5(classifier, data.astronaut())[0] not in CAT_CLASSES | COFFEE_CLASSES


@pytest.mark.parametrize("hw", [(64, 64), (65, 97), (250, 333), (321, 480)])
def test_lite0_geometry_predicts_feature_map_size(small_extractor, hw):
    fmap = small_extractor.backbone(np.zeros((*hw, 3), np.uint8))
    assert fmap.shape == (*small_extractor.backbone.output_size(*hw), 112)


def test_resnet50_geometry_predicts_feature_map_size():
    from delf.backbones.resnet50 import GEOMETRY, ResNet50Backbone

    bb = ResNet50Backbone("random")
    for hw in [(64, 80), (97, 131)]:
        fmap = bb(np.zeros((*hw, 3), np.uint8))
        assert fmap.shape == (*output_size(*hw, GEOMETRY), 1024)
    xs, ys = bb.grid(97, 131)
    np.testing.assert_allclose(xs[:3], [0, 16, 32])  # DELF's ResNet centres: 16 i (rf 291, padding 145)


def test_lite0_centre_offset_is_the_effective_receptive_field(small_extractor):
    """The shipped offset equals the centroid of the input gradient of a cell
    (its effective receptive field) minus the geometric centre."""
    import tensorflow as tf

    from delf.receptive import feature_grid

    bb = small_extractor.backbone
    rng = np.random.default_rng(5)
    offsets = []
    for h, w in [(256, 320), (257, 321), (250, 330), (300, 301)]:
        img = tf.Variable(rng.uniform(30, 225, (1, h, w, 3)).astype(np.float32))
        with tf.GradientTape() as tape:
            f = bb.model(bb.preprocess(img), training=False)
            iy, ix = f.shape[1] // 2, f.shape[2] // 2
            out = tf.reduce_sum(tf.square(f[0, iy - 1:iy + 2, ix - 1:ix + 2]))
        g = np.abs(tape.gradient(out, img).numpy()[0]).sum(axis=2)
        xs, ys = feature_grid(h, w, bb.geometry)
        offsets.append(((g.sum(0) * np.arange(w)).sum() / g.sum() - xs[ix],
                        (g.sum(1) * np.arange(h)).sum() / g.sum() - ys[iy]))
    assert np.abs(np.mean(offsets, axis=0) - bb.centre_offset).max() < 1.5, offsets


def test_lite0_geometry_by_hand():
    # 64 px: every stride-2 'same' layer sees an even size and pads (k - 2) // 2
    # before, i.e. 0 for 3x3 and 1 for 5x5; the four stride-2 layers (stem 3x3,
    # block 1 3x3, block 3 5x5, block 5 3x3) shift the centre by 1 + 2 + 4 + 8.
    from delf.receptive import feature_grid

    xs, ys = feature_grid(64, 64, lite0.Lite0Backbone.geometry)
    np.testing.assert_array_equal(xs, [15, 31, 47, 63])
    # 65 px: sizes 65, 33, 17, 9 are odd, padding is symmetric, no shift.
    xs, _ = feature_grid(65, 65, lite0.Lite0Backbone.geometry)
    np.testing.assert_array_equal(xs, [0, 16, 32, 48, 64])


@pytest.mark.parametrize("dot", [(100, 60), (173, 141), (55, 200)])
def test_bright_dot_lands_on_its_keypoint(small_extractor, dot):
    """A bright dot on a flat grey image: the strongest feature-map cell is the
    one whose receptive-field centre is nearest the dot."""
    h, w = 256, 320
    img = np.full((h, w, 3), 128, np.uint8)
    x0, y0 = dot
    cv2.circle(img, (x0, y0), 2, (255, 255, 255), -1)
    bb = small_extractor.backbone
    fmap = bb(img)
    flat = np.full((h, w, 3), 128, np.uint8)
    response = np.linalg.norm(fmap - bb(flat), axis=2)  # what the dot changed
    iy, ix = np.unravel_index(response.argmax(), response.shape)
    xs, ys = bb.grid(h, w)
    assert abs(xs[ix] - x0) <= 8 and abs(ys[iy] - y0) <= 8, (xs[ix], ys[iy], dot)
