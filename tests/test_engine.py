"""The engine: one built network per signature, reused across fits (skconvnet._engine).

A reused network must start every fit exactly where a freshly built one would, never be
trained by two threads at once, trace its steps once, and keep memory bounded.
"""

import logging
import threading

import keras
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import skconvnet
from skconvnet._engine import NETWORK_POOL, Trainer
from skconvnet._runtime import call_on_arrays, predict_source
from skconvnet._training import ArraySource
from skconvnet.testing import make_shapes, tiny_classifier, tiny_regressor


@pytest.fixture
def shapes():
    return make_shapes(32, size=16)


@pytest.fixture
def fresh_pool():
    """An empty pool of the default size, emptied again afterwards."""
    previous = skconvnet.set_network_pool_size(4)
    skconvnet.clear_session()
    NETWORK_POOL.built = 0
    yield NETWORK_POOL
    skconvnet.clear_session()
    skconvnet.set_network_pool_size(previous)


def fresh_build(estimator, X, y, **fit_params):
    """The estimator fitted on a network built for it alone (the pool keeps none)."""
    previous = skconvnet.set_network_pool_size(0)
    try:
        return estimator.fit(X, y, **fit_params)
    finally:
        skconvnet.set_network_pool_size(previous)


@pytest.mark.parametrize("params", [
    dict(unfreeze=1),
    dict(unfreeze=1, augment="standard"),  # random layers: their seed states are reset too
    dict(unfreeze=1, cache="memory"),
    dict(unfreeze=0, validation_fraction=0.25, n_iter_no_change=1),
], ids=["plain", "augment", "cache", "early-stopping"])
def test_a_reused_network_gives_what_a_fresh_build_gives(fresh_pool, shapes, params):
    X, y = shapes
    expected = fresh_build(tiny_classifier(**params), X, y).predict_proba(X)
    first = tiny_classifier(**params).fit(X, y)
    built = fresh_pool.built
    second = tiny_classifier(**params).fit(X, y)  # leases the network the first one trained
    assert fresh_pool.built == built
    np.testing.assert_array_equal(second.predict_proba(X), expected)
    np.testing.assert_array_equal(first.predict_proba(X), expected)  # its own weights back


def test_fits_of_other_rates_reuse_the_traced_steps(fresh_pool, shapes):
    X, y = shapes
    tiny_classifier(unfreeze=1, learning_rate=1e-3).fit(X, y)
    (pooled,) = fresh_pool._idle.values()
    steps = {key: trainer.model.train_function for key, trainer in pooled.kept.items()
             if key[0] == "trainer"}
    assert steps
    slow = tiny_classifier(unfreeze=1, learning_rate=1e-5).fit(X, y)
    assert len(fresh_pool._idle) == 1
    for key, step in steps.items():
        assert pooled.kept[key].model.train_function is step  # not traced again
    # and the new rate was used: a fresh build at 1e-5 agrees
    np.testing.assert_array_equal(
        slow.predict_proba(X),
        fresh_build(tiny_classifier(unfreeze=1, learning_rate=1e-5), X, y).predict_proba(X))


def test_other_signatures_get_their_own_networks(fresh_pool, shapes):
    X, y = shapes
    for head_units in (0, 4, 8):
        tiny_classifier(head_units=head_units).fit(X, y)
    tiny_regressor().fit(X, y * 1.0)
    assert fresh_pool.built == 4 and len(fresh_pool._idle) == 4


@pytest.mark.parametrize("cache", [None, "memory"])
def test_every_depth_is_a_view_of_one_network(fresh_pool, shapes, cache):
    """One build serves every unfreeze depth, in any order, each as a fresh build would."""
    X, y = shapes
    expected = {depth: fresh_build(tiny_classifier(unfreeze=depth, cache=cache), X, y)
                .predict_proba(X) for depth in (2, 0, "all", 1)}
    skconvnet.clear_session()  # the networks those predictions were made on
    built = fresh_pool.built
    depths = (2, 0, "all", 1, 2)
    fitted = []
    for depth in depths:
        fitted.append(tiny_classifier(unfreeze=depth, cache=cache).fit(X, y))
        if len(fitted) > 1:  # loads another depth's weights into the network in between
            fitted[-2].predict_proba(X[:3])
    assert fresh_pool.built == built + 1 and len(fresh_pool._idle) == 1
    for depth, estimator in zip(depths, fitted):  # each predicts with its own weights
        np.testing.assert_array_equal(estimator.predict_proba(X), expected[depth])
    assert fresh_pool.built == built + 1


@pytest.mark.parametrize("cache", [None, "memory"])
def test_fits_with_and_without_sample_weights_train_one_network_alike(fresh_pool, shapes,
                                                                      cache):
    """Batches with and without weights need traced steps of their own, on one network;
    each fit must still train as on a fresh build (a compiled model shared by two
    trainers once made the third fit train with the second one's optimizer)."""
    X, y = shapes
    weights = np.linspace(0.5, 1.5, len(X))
    expected = {use: fresh_build(tiny_classifier(unfreeze=1, cache=cache), X, y,
                                 sample_weight=weights if use else None).predict_proba(X)
                for use in (False, True)}
    for use in (False, True, False, True):
        fitted = tiny_classifier(unfreeze=1, cache=cache).fit(
            X, y, sample_weight=weights if use else None)
        np.testing.assert_array_equal(fitted.predict_proba(X), expected[use])


def test_a_trainer_refuses_a_model_another_trainer_compiled():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    Trainer(model, keras.optimizers.SGD, "mse", [])
    with pytest.raises(RuntimeError, match="is compiled by another trainer"):
        Trainer(model, keras.optimizers.SGD, "mse", [])


def test_the_pool_has_a_ceiling(fresh_pool, shapes):
    X, y = shapes
    skconvnet.set_network_pool_size(2)
    for head_units in (4, 8, 12):
        tiny_classifier(head_units=head_units).fit(X, y)
    assert len(fresh_pool._idle) == 2
    skconvnet.clear_session()
    assert len(fresh_pool._idle) == 0


def test_fitted_estimators_survive_clear_session_and_reuse_by_others(fresh_pool, shapes):
    X, y = shapes
    first = tiny_classifier(unfreeze=1).fit(X, y)
    expected = first.predict_proba(X)
    tiny_classifier(unfreeze=1, learning_rate=1e-1).fit(X, y)  # retrains the same network
    np.testing.assert_array_equal(first.predict_proba(X), expected)
    skconvnet.clear_session()
    np.testing.assert_array_equal(first.predict_proba(X), expected)


def test_threads_never_share_a_network(fresh_pool, shapes):
    X, y = shapes
    expected = fresh_build(tiny_classifier(unfreeze=1), X, y).predict_proba(X)
    results, errors = [None] * 3, []

    def fit(i):
        try:
            results[i] = tiny_classifier(unfreeze=1).fit(X, y).predict_proba(X)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_a_grid_search_prints_no_retracing_warning(fresh_pool, shapes, capfd, caplog):
    X, y = shapes
    search = GridSearchCV(tiny_classifier(warmup_epochs=1, epochs=1),
                          {"unfreeze": [0, 1], "learning_rate": [1e-3, 1e-4]},
                          cv=StratifiedKFold(3, shuffle=True, random_state=0))
    with caplog.at_level(logging.WARNING):
        search.fit(X, y)  # 12 fits and the refit
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "retracing" not in logged
    assert fresh_pool.built == 1  # one network, seen at each unfreeze depth


class ShapeRecorder:
    """A stand-in model: the sum of each image, and the shape of every batch it was given."""

    def __init__(self):
        self.shapes = []

    def __call__(self, batch, training=False):
        self.shapes.append(batch.shape)
        return batch.sum(axis=(1, 2, 3))

    predict_on_batch = __call__


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_every_batch_a_model_sees_has_one_shape(n):
    """A short last batch and an input smaller than one batch are padded: one trace, and on
    a GPU one convolution algorithm, so an image gets the same arithmetic whichever call
    it is in (an H100 under JAX gave a lone image other probabilities than the same image
    in a full batch, 1e-4 apart, when the lone image ran as a batch of one)."""
    images = np.arange(n * 2 * 2 * 3, dtype="float32").reshape(n, 2, 2, 3)
    expected = images.sum(axis=(1, 2, 3))
    model = ShapeRecorder()
    np.testing.assert_array_equal(predict_source(model, ArraySource([images]), 8), expected)
    np.testing.assert_array_equal(call_on_arrays(model, [images], 8), expected)
    assert set(model.shapes) == {(8, 2, 2, 3)}


def test_the_pool_size_is_validated():
    with pytest.raises(ValueError, match="n_networks must be an int >= 0; got -1"):
        skconvnet.set_network_pool_size(-1)
    with pytest.raises(ValueError, match="got 'many'"):
        skconvnet.set_network_pool_size("many")
