"""Faults and properties: no state leaks between estimators, concurrent cache writers,
and property-based tests over image shapes, dtypes and label types."""

from functools import partial
import os
import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skconvnet.testing import make_shapes, tiny_extractor
from skconvnet import testing
from skconvnet.images import image_source


# This module's tiny classifier: the shared one with these settings.
tiny_classifier = partial(testing.tiny_classifier, head_units=8)


# --------------------------------------------------------------------------- state leaks
def test_differently_configured_estimators_do_not_leak_state_into_each_other():
    X, y = make_shapes(24)
    X3, y3 = make_shapes(24, n_classes=3, seed=1)

    def first():
        return tiny_classifier(unfreeze=1).fit(X, y).predict_proba(X)

    def second():
        clf = tiny_classifier(unfreeze="all", augment="standard", pooling="max",
                              input_size=24, class_weight="balanced", dropout=0.0,
                              random_state=7)
        return clf.fit(X3, y3).predict_proba(X3)

    def features():
        return tiny_extractor(weights=None, pooling="flatten", random_state=3).fit_transform(X)

    alone = [first(), second(), features()]
    mixed = [None, None, None]
    mixed[1] = second()
    mixed[2] = features()
    mixed[0] = first()
    for a, b in zip(alone, mixed):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- concurrent cache
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    import skconvnet.testing
    from skconvnet import FineTunedConvClassifier
    from skconvnet.testing import make_shapes
    X, y = make_shapes(40)
    clf = FineTunedConvClassifier("tiny", weights=None, input_size=16, head_units=8,
                                  warmup_epochs=1, unfreeze=1, epochs=1, batch_size=8,
                                  dropout=0.5, learning_rate=1e-5, warmup_learning_rate=1e-3,
                                  cache=sys.argv[1], random_state=0).fit(X, y)
    np.save(sys.argv[2], clf.predict_proba(X))
    """
)


def test_two_processes_filling_one_folder_cache(tmp_path):
    folder = tmp_path / "cache"
    (tmp_path / "writer.py").write_text(WRITER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    tests_dir = os.path.dirname(__file__)
    runs = [subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(folder),
                              str(tmp_path / f"p{i}.npy"), tests_dir], env=env,
                             stderr=subprocess.PIPE, text=True)
            for i in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    entries = sorted(folder.rglob("*.npz"))
    assert len(entries) == 40
    assert not [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".npz"]
    for entry in entries:  # every entry complete and readable
        with np.load(entry) as data:
            assert all(np.isfinite(data[name]).all() for name in data.files)
    np.testing.assert_allclose(np.load(tmp_path / "p0.npy"), np.load(tmp_path / "p1.npy"))
    # a third, serial fit reads the shared entries and agrees with both
    X, y = make_shapes(40)
    serial = tiny_classifier(head_units=8, warmup_epochs=1, unfreeze=1, epochs=1, dropout=0.5,
                             learning_rate=1e-5, warmup_learning_rate=1e-3,
                             cache=str(folder)).fit(X, y)
    np.testing.assert_allclose(serial.predict_proba(X), np.load(tmp_path / "p0.npy"), atol=1e-5)


# --------------------------------------------------------------------------- properties
DTYPES = [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64]


@st.composite
def image_batches(draw):
    n = draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    channels = draw(st.sampled_from([None, 1, 3]))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (n, height, width) + (() if channels is None else (channels,))
    values = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, shape)
    if channels == 3 and height > 3 and width > 3 and np.issubdtype(dtype, np.floating):
        values = values.astype(dtype) * 0.99 + 0.3  # non-integer pixels too
    return values.astype(dtype)


@settings(max_examples=40, deadline=None)
@given(batch=image_batches(), size=st.integers(8, 20))
def test_any_image_array_becomes_rgb_float32_in_range(batch, size):
    source = image_source(batch, size)
    loaded, failures = source.load(slice(None))
    assert failures == {}
    assert loaded.shape == (len(batch), size, size, 3) and loaded.dtype == np.float32
    assert np.isfinite(loaded).all() and loaded.min() >= 0 and loaded.max() <= 255
    if batch.shape[1:3] == (size, size) and (batch.ndim == 3 or batch.shape[-1] == 1):
        # grayscale at the model's size: all three channels are the pixel values
        gray = batch.reshape(len(batch), size, size).astype(np.float32)
        for c in range(3):
            np.testing.assert_allclose(loaded[..., c], gray, atol=1e-4)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=image_batches())
def test_extractor_gives_one_finite_row_per_image_for_any_array(batch):
    extractor = tiny_extractor(random_state=0)
    features = extractor.fit_transform(batch)
    assert features.shape == (len(batch), 8) and features.dtype == np.float32
    assert np.isfinite(features).all()
    if batch.ndim == 4 and batch.shape[1] == batch.shape[2] and batch.shape[3] == 3:
        flat = batch.reshape(len(batch), -1)  # square RGB images, flattened, read back the same
        np.testing.assert_allclose(extractor.fit(flat).transform(flat), features,
                                   rtol=1e-5, atol=1e-6)


LABELS = st.sampled_from([
    # (non-integral floats such as 1.5 are 'continuous' targets, refused as by sklearn)
    [0, 1], [3, 7], [-1, 1], [True, False], ["cat", "dog"], ["é", "猫"], [1.0, 2.0],
    [0, 1, 2], ["a", "b", "c"], [np.int64(10), np.int64(20)],
])


@settings(max_examples=6, deadline=None)
@given(classes=LABELS, seed=st.integers(0, 3))
def test_classifier_predicts_labels_of_the_type_it_was_given(classes, seed):
    X, codes = make_shapes(12, n_classes=len(classes), seed=seed)
    y = np.array(classes)[codes]
    clf = tiny_classifier(warmup_epochs=1, batch_size=12).fit(X, y)
    predicted = clf.predict(X)
    np.testing.assert_array_equal(clf.classes_, np.unique(y))
    assert predicted.dtype == clf.classes_.dtype
    assert set(predicted.tolist()) <= set(y.tolist())
    proba = clf.predict_proba(X)
    assert proba.shape == (12, len(classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
