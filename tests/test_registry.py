"""The base registry: every base builds, has its documented width, blocks and preprocessing."""

import keras
import numpy as np
import pytest

from skconvnet import BaseSpec, ConvFeatureExtractor, get_base_spec, list_bases, register_base
from skconvnet.layers import ImagePreprocessing
from skconvnet.registry import block_starts

KERAS_BASES = [name for name in list_bases() if name != "tiny"]
# Quick to build; the others run under the "slow" marker.
QUICK = {"vgg16", "resnet50", "mobilenetv2", "efficientnetb0", "inceptionv3", "xception",
         "densenet121", "mobilenetv3small"}


def _marked(names):
    return [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow)
            for name in names]


def test_every_keras_application_is_registered():
    expected = {
        "vgg16", "vgg19", "resnet50", "resnet101", "resnet152", "resnet50v2",
        "resnet101v2", "resnet152v2", "inceptionv3", "inceptionresnetv2", "xception",
        "mobilenet", "mobilenetv2", "mobilenetv3small", "mobilenetv3large",
        "densenet121", "densenet169", "densenet201",
        *(f"efficientnetb{i}" for i in range(8)),
        *(f"efficientnetv2{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")),
        *(f"convnext{v}" for v in ("tiny", "small", "base", "large", "xlarge")),
        "nasnetmobile", "nasnetlarge",
    }
    assert expected <= set(list_bases())


@pytest.mark.parametrize("name", _marked(KERAS_BASES))
def test_base_builds_at_min_size_with_documented_width(name):
    spec = get_base_spec(name)
    X = np.full((2, spec.min_size, spec.min_size, 3), 128, dtype=np.uint8)
    extractor = ConvFeatureExtractor(name, weights=None, input_size=spec.min_size,
                                     random_state=0, batch_size=2).fit(X)
    features = extractor.transform(X)
    assert features.shape == (2, spec.feature_width)
    assert extractor.n_features_out_ == spec.feature_width
    assert np.isfinite(features).all()
    blocks = block_starts(extractor.model_.get_layer(extractor.model_.layers[2].name), spec)
    assert len(blocks) >= 3, blocks
    starts = [start for _, start in blocks]
    assert starts == sorted(set(starts))


@pytest.mark.parametrize("name", KERAS_BASES)
def test_in_graph_preprocessing_matches_keras_preprocess_input(name, rng):
    spec = get_base_spec(name)
    X = rng.uniform(0, 255, size=(3, 8, 8, 3)).astype(np.float32)
    original = X.copy()
    ours = keras.ops.convert_to_numpy(ImagePreprocessing(spec.preprocessing)(X))
    reference = np.asarray(spec.preprocess_input(X.copy()))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(X, original)


def test_vgg16_blocks_are_its_five_blocks():
    spec = get_base_spec("vgg16")
    base = spec.builder(include_top=False, weights=None, input_shape=(32, 32, 3))
    names = [name for name, _ in block_starts(base, spec)]
    assert names == ["block1", "block2", "block3", "block4", "block5"]


def test_unknown_base_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown base 'vgg17'.*'vgg16'"):
        get_base_spec("vgg17")


def test_register_base_refuses_duplicates_and_non_specs():
    spec = get_base_spec("tiny")
    with pytest.raises(ValueError, match="already registered"):
        register_base(spec)
    with pytest.raises(TypeError, match="expects a BaseSpec"):
        register_base({"name": "x"})


def test_base_spec_validates_its_fields():
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        BaseSpec("x", builder=None, preprocessing="bgr", default_size=32, min_size=8,
                 feature_width=8, block_pattern="x")
    with pytest.raises(ValueError, match="min_size must be between"):
        BaseSpec("x", builder=None, preprocessing="tf", default_size=32, min_size=64,
                 feature_width=8, block_pattern="x")


@pytest.mark.parametrize("name", _marked(KERAS_BASES))
def test_inspect_base_works_for_every_base(name):
    from skconvnet import inspect_base
    from skconvnet.networks import weighted_layers

    spec = get_base_spec(name)
    table = inspect_base(name, input_size=spec.min_size)
    model = spec.builder(include_top=False, weights=None,
                         input_shape=(spec.min_size, spec.min_size, 3))
    # (auto-generated names such as conv2d_94 differ between builds; types do not)
    assert [row["type"] for row in table] == [type(layer).__name__ for layer in model.layers]
    assert sum(row["params"] for row in table) == model.count_params()
    unfreeze = [row["unfreeze"] for row in table if row["unfreeze"] is not None]
    assert unfreeze == list(range(len(weighted_layers(model)), 0, -1))
    assert [(row["block"], row["index"]) for row in table if row["block"]] == \
        block_starts(model, spec)
    assert table[-1]["output_shape"][-1] == spec.feature_width
