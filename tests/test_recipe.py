"""The fine-tuning recipe: optimizers, schedules, discriminative rates, BatchNorm, the
divergence guard, label smoothing, MixUp/CutMix, test-time augmentation, the rate finder."""

import math
import pickle
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import skconvnet
from skconvnet import FineTunedConvClassifier, suggest_learning_rate
from skconvnet._training import LR_SCHEDULES, BatchMixing, Recipe, scheduled_rate
from skconvnet.augmentation import TEST_TIME_VIEWS
from skconvnet.exceptions import DivergenceWarning, InvalidParameterError
from skconvnet.networks import block_rate_scales
from skconvnet.testing import make_shapes, tiny_classifier, tiny_regressor

#: The recipe parameters that reproduce the package's training before the recipe existed.
SEED_SETTINGS = dict(optimizer="rmsprop", lr_schedule="constant", weight_decay=None,
                     layer_lr_decay=1.0, train_bn=False, ema_momentum=None, tta=0)
SEED_CLASSIFIER_SETTINGS = dict(SEED_SETTINGS, label_smoothing=0.0, mixup=0.0, cutmix=0.0)
#: Non-default values of every recipe parameter.
EVERY_RECIPE_PARAMETER = dict(optimizer="sgd", weight_decay=1e-4, lr_schedule="one_cycle",
                              layer_lr_decay=0.8, train_bn=True, ema_momentum=0.9,
                              label_smoothing=0.1, mixup=0.3, cutmix=1.0, tta=2)
BEFORE_RECIPE = Path(__file__).parent / "data" / "predictions_before_recipe.npz"


@pytest.fixture(scope="module")
def three_classes():
    return make_shapes(40, n_classes=3)


# --------------------------------------------------------------------------- today's results
def test_seed_settings_reproduce_the_predictions_from_before_the_recipe(three_classes):
    """tests/data/predictions_before_recipe.npz was written by commit 4917fd9 (the last one
    without the recipe parameters) on the same fits; see the file's generator in the test
    module's git history. Bit for bit on the machine that wrote it; float32 rounding elsewhere."""
    X, y = three_classes
    before = np.load(BEFORE_RECIPE)
    now = {
        "classifier": tiny_classifier(unfreeze=2, **SEED_CLASSIFIER_SETTINGS).fit(X, y)
        .predict_proba(X),
        "classifier_cached": tiny_classifier(unfreeze=2, cache="memory",
                                             **SEED_CLASSIFIER_SETTINGS).fit(X, y)
        .predict_proba(X),
        "classifier_augmented": tiny_classifier(unfreeze="all", augment="standard",
                                                **SEED_CLASSIFIER_SETTINGS).fit(X, y)
        .predict_proba(X),
        "regressor": tiny_regressor(unfreeze=2, **SEED_SETTINGS).fit(X, np.arange(40.0))
        .predict(X),
    }
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference predictions were made on TensorFlow")
    for name, expected in before.items():
        np.testing.assert_allclose(now[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name, value, message", [
    ("optimizer", "lamb", r"'optimizer' parameter .* must be one of 'rmsprop', 'adam', "
                          r"'adamw' or 'sgd'.* Got 'lamb'"),
    ("weight_decay", -0.1, r"'weight_decay' parameter .* Got -0.1"),
    ("lr_schedule", "step", r"'lr_schedule' parameter .* 'constant', 'cosine' or 'one_cycle'"),
    ("layer_lr_decay", 0.0, r"'layer_lr_decay' parameter .* range \(0.0, 1.0\]"),
    ("layer_lr_decay", 1.5, r"'layer_lr_decay' parameter .* Got 1.5"),
    ("train_bn", "yes", r"'train_bn' parameter .* must be a bool. Got 'yes'"),
    ("ema_momentum", 1.0, r"'ema_momentum' parameter .* range \(0.0, 1.0\)"),
    ("label_smoothing", 1.0, r"'label_smoothing' parameter .* range \[0.0, 1.0\)"),
    ("mixup", -1.0, r"'mixup' parameter .* Got -1.0"),
    ("cutmix", float("nan"), r"'cutmix' parameter .* Got nan"),
    ("tta", len(TEST_TIME_VIEWS) + 1, rf"'tta' parameter .* \[0, {len(TEST_TIME_VIEWS)}\]"),
    ("tta", 1.0, r"'tta' parameter .* Got 1.0"),
])
def test_recipe_parameters_are_validated_in_fit(shapes, name, value, message):
    X, y = shapes
    clf = tiny_classifier(**{name: value})  # __init__ only stores
    assert getattr(clf, name) is value
    with pytest.raises(InvalidParameterError, match=message):
        clf.fit(X, y)


def test_the_regressor_has_the_shared_recipe_parameters_only():
    params = tiny_regressor().get_params()
    for name in ("optimizer", "weight_decay", "lr_schedule", "layer_lr_decay", "train_bn",
                 "ema_momentum", "tta"):
        assert name in params
    for name in ("label_smoothing", "mixup", "cutmix"):
        assert name not in params


def test_every_recipe_parameter_survives_clone_pickle_and_save(three_classes, tmp_path):
    X, y = three_classes
    clf = tiny_classifier(unfreeze=2, **EVERY_RECIPE_PARAMETER).fit(X, y)
    expected = clf.predict_proba(X)
    assert clone(clf).get_params() == clf.get_params()
    unpickled = pickle.loads(pickle.dumps(clf))
    assert unpickled.get_params() == clf.get_params()
    np.testing.assert_allclose(unpickled.predict_proba(X), expected, atol=1e-6)
    path = tmp_path / "clf.skconvnet"
    skconvnet.save(clf, path)
    loaded = skconvnet.load(path)
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_allclose(loaded.predict_proba(X), expected, atol=1e-6)


# --------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam", "adamw", "sgd"])
def test_every_optimizer_trains(shapes, optimizer):
    X, y = shapes
    clf = tiny_classifier(optimizer=optimizer, warmup_epochs=6,
                          warmup_learning_rate=0.1 if optimizer == "sgd" else 1e-2).fit(X, y)
    losses = [entry["loss"] for entry in clf.history_]
    assert losses[-1] < losses[0]


def test_weight_decay_shrinks_the_weights(shapes):
    X, y = shapes

    def head_norm(weight_decay):
        clf = tiny_classifier(optimizer="adamw", weight_decay=weight_decay, warmup_epochs=4)
        clf.fit(X, y)
        return float(np.linalg.norm(clf.model_.get_layer("head_dense").kernel.numpy()))

    assert head_norm(0.5) < head_norm(0.0)


# --------------------------------------------------------------------------- schedules
def test_schedules_move_the_rate_as_documented():
    rates = {schedule: [scheduled_rate(schedule, 1.0, step, 100) for step in range(100)]
             for schedule in LR_SCHEDULES}
    assert rates["constant"] == [1.0] * 100
    cosine = rates["cosine"]
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] > 0
    cycle = rates["one_cycle"]
    peak = int(np.argmax(cycle))
    assert cycle[0] == pytest.approx(1 / 25) and peak == 10 and cycle[peak] == pytest.approx(1.0)
    assert cycle[-1] < 1e-3
    sweep = [scheduled_rate("range_test", 1.0, step, 5, 1e-4) for step in range(5)]
    np.testing.assert_allclose(sweep, [1e-4, 1e-3, 1e-2, 1e-1, 1.0])


@pytest.mark.parametrize("schedule", ["cosine", "one_cycle", "range_test"])
def test_the_optimizer_computes_the_schedule_inside_its_step(schedule):
    """The rate is computed from the optimizer's iteration count in the compiled step (a
    callback assigning it between steps would be ignored by JAX's fit), by the formula
    history_ records."""
    optimizer = Recipe(optimizer="adam").make_optimizer(schedule)
    optimizer.build([keras.Variable(np.zeros(3, dtype=np.float32))])
    optimizer.learning_rate = 0.1
    optimizer.start_schedule(50, 1e-5)
    for step in (0, 3, 4, 5, 20, 49):
        optimizer.iterations.assign(step)
        rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        assert rate == pytest.approx(scheduled_rate(schedule, 0.1, step, 50, 1e-5), rel=1e-4)


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_history_records_each_epochs_rate(shapes, schedule):
    X, y = shapes
    clf = tiny_classifier(lr_schedule=schedule, warmup_epochs=4, unfreeze=2, epochs=3).fit(X, y)
    warmup = [e["learning_rate"] for e in clf.history_ if e["phase"] == "warmup"]
    finetune = [e["learning_rate"] for e in clf.history_ if e["phase"] == "finetune"]
    assert len(warmup) == 4 and len(finetune) == 3
    if schedule == "constant":
        assert warmup == [1e-2] * 4 and finetune == [1e-3] * 3
    elif schedule == "cosine":
        assert all(a > b for a, b in zip(warmup, warmup[1:])) and max(warmup) <= 1e-2
    else:
        assert warmup[0] < warmup[1] and warmup[1] > warmup[-1] and max(finetune) <= 1e-3


def test_the_rate_is_a_variable_so_schedules_do_not_retrace(shapes):
    """One traced step per signature: a second fit with another schedule's rates reuses it."""
    X, y = shapes
    skconvnet.clear_session()
    tiny_classifier(lr_schedule="cosine").fit(X, y)
    first = tiny_classifier(lr_schedule="cosine", warmup_learning_rate=5e-3).fit(X, y)
    assert first.history_[0]["learning_rate"] < 5e-3


# --------------------------------------------------------------------------- discriminative rates
def test_block_rate_scales_decay_down_the_blocks():
    clf = tiny_classifier(unfreeze="all", layer_lr_decay=0.5)
    X, y = make_shapes(8)
    clf.set_params(warmup_epochs=1, epochs=0).fit(X, y)
    network = clf._network if "_network" in clf.__dict__ else None
    network = network or clf._rebuild(clf._resolved)
    scales = block_rate_scales(network, 0.5, 0)
    by_layer = {layer.name: {scales[id(v)] for v in layer.weights}
                for layer in network.base.layers if layer.weights}
    assert by_layer["block3_conv"] == {0.5} and by_layer["block3_bn"] == {0.5}
    assert by_layer["block2_conv"] == {0.25} and by_layer["block1_conv"] == {0.125}
    assert block_rate_scales(network, 1.0, 0) is None
    assert block_rate_scales(network, 0.5, None) is None
    only_top = block_rate_scales(network, 0.5, network.base.layers.index(
        network.base.get_layer("block3_conv")))
    assert set(only_top.values()) == {0.5}


def test_per_layer_updates_follow_the_decay(shapes):
    """One SGD step (its first: momentum adds nothing) from the same weights on the same
    batch: each block's update is the undecayed update times decay ** depth, on every
    backend (the scaling is in the optimizer's update step, not a TensorFlow wrapper)."""
    X, y = shapes
    common = dict(warmup_epochs=0, unfreeze="all", epochs=1, optimizer="sgd", dropout=0.0,
                  batch_size=len(X), learning_rate=1e-2)

    def weights(**params):
        clf = tiny_classifier(**{**common, **params}).fit(X, y)
        return {layer.name: layer.get_weights()[0] for layer in clf.base_model_.layers
                if layer.name.endswith("_conv")}

    one, two = weights(), weights(learning_rate=2e-2)
    initial = {name: 2 * one[name] - two[name] for name in one}  # w0 - lr g, w0 - 2 lr g
    decayed = weights(layer_lr_decay=0.5)
    for name, depth in (("block3_conv", 1), ("block2_conv", 2), ("block1_conv", 3)):
        undecayed_step = one[name] - initial[name]
        np.testing.assert_allclose(decayed[name] - initial[name], undecayed_step * 0.5 ** depth,
                                   rtol=1e-3, atol=1e-7, err_msg=name)
        assert np.abs(undecayed_step).max() > 1e-5


# --------------------------------------------------------------------------- unfreeze="auto"
def test_auto_unfreeze_keeps_the_depth_of_higher_held_out_score(three_classes, tmp_path):
    X, y = three_classes
    clf = tiny_classifier(unfreeze="auto", epochs=2).fit(X, y)
    scores = clf.unfreeze_scores_
    assert set(scores) == {"0", "all"} and all(0 <= v <= 1 for v in scores.values())
    margin = np.sqrt(scores["0"] * (1 - scores["0"]) / len(X))
    assert clf.unfreeze_ == ("all" if scores["all"] > scores["0"] + margin else 0)
    assert clf.unfreeze == "auto"  # the parameter is left as it was
    # The final model is the chosen depth fitted on every image.
    chosen = tiny_classifier(unfreeze=clf.unfreeze_, epochs=2).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), chosen.predict_proba(X), atol=1e-6)
    assert clf.n_trainable_layers_ == chosen.n_trainable_layers_
    path = tmp_path / "auto.skconvnet"
    skconvnet.save(clf, path)
    loaded = skconvnet.load(path)
    assert loaded.unfreeze_ == clf.unfreeze_ and loaded.unfreeze_scores_ == scores
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=1e-6)
    # A depth set by hand records itself and no comparison.
    assert not hasattr(chosen, "unfreeze_scores_") and chosen.unfreeze_ == clf.unfreeze_


def test_auto_unfreeze_cross_validates_on_the_training_images(three_classes, monkeypatch):
    """Two folds (stratified), each depth fitted on one half and scored on the other."""
    X, y = three_classes
    seen = []
    real_fit, real_score = FineTunedConvClassifier.fit, FineTunedConvClassifier.score

    def recording_fit(self, X, y, sample_weight=None):
        seen.append(("fit", self.unfreeze, len(X)))
        return real_fit(self, X, y, sample_weight)

    def recording_score(self, X, y, sample_weight=None):
        score = real_score(self, X, y, sample_weight)
        seen.append(("score", self.unfreeze, len(X), score))
        return score

    monkeypatch.setattr(FineTunedConvClassifier, "fit", recording_fit)
    monkeypatch.setattr(FineTunedConvClassifier, "score", recording_score)
    clf = tiny_classifier(unfreeze="auto").fit(X, y)
    fits = [event[1:] for event in seen if event[0] == "fit"]
    assert fits == [("auto", 40), (0, 20), (0, 20), ("all", 20), ("all", 20)]
    held_out = [event for event in seen if event[0] == "score"]
    assert [event[2] for event in held_out] == [20] * 4
    for depth in (0, "all"):
        assert clf.unfreeze_scores_[str(depth)] == pytest.approx(
            np.mean([event[3] for event in held_out if event[1] == depth]))


def test_auto_unfreeze_prefers_the_warmup_on_a_tie(three_classes, monkeypatch):
    X, y = three_classes
    monkeypatch.setattr(FineTunedConvClassifier, "score", lambda self, X, y, w=None: 0.5)
    assert tiny_classifier(unfreeze="auto").fit(X, y).unfreeze_ == 0


@pytest.mark.parametrize("win, chosen", [(0.02, 0), (0.08, "all")])
def test_auto_unfreeze_asks_fine_tuning_to_win_by_more_than_the_noise(
        three_classes, monkeypatch, win, chosen):
    """A classifier's warm-up scoring 0.8 on 40 held-out images has a standard error of
    sqrt(0.8 * 0.2 / 40) = 0.063: fine-tuning wins by more than that, or the warm-up stays."""
    X, y = three_classes
    monkeypatch.setattr(FineTunedConvClassifier, "score", lambda self, X, y, w=None: 0.8 + (
        win if self.unfreeze == "all" else 0.0))
    clf = tiny_classifier(unfreeze="auto").fit(X, y)
    assert clf.unfreeze_ == chosen
    assert clf.unfreeze_scores_ == pytest.approx({"0": 0.8, "all": 0.8 + win})


def test_auto_unfreeze_works_for_regression_and_multilabel(shapes):
    X, y = shapes
    reg = tiny_regressor(unfreeze="auto").fit(X, np.arange(40.0))
    assert reg.unfreeze_ in (0, "all") and set(reg.unfreeze_scores_) == {"0", "all"}
    labels = np.stack([y, 1 - y, y], axis=1)
    multi = tiny_classifier(unfreeze="auto").fit(X, labels)
    assert multi.unfreeze_ in (0, "all") and multi.predict(X).shape == (40, 3)


def test_auto_unfreeze_needs_both_phases(shapes):
    X, y = shapes
    with pytest.raises(InvalidParameterError, match=r"unfreeze='auto' makes "
                                                    r"FineTunedConvClassifier compare .* "
                                                    r"got warmup_epochs=2 and epochs=0"):
        tiny_classifier(unfreeze="auto", epochs=0).fit(X, y)


def test_the_rate_finder_sweeps_every_layer_for_auto(shapes):
    X, y = shapes
    rate = suggest_learning_rate(tiny_classifier(unfreeze="auto"), X, y, n_steps=10)
    assert rate.phase == "finetune"


# --------------------------------------------------------------------------- warm-up
@pytest.mark.parametrize("params, passes", [
    (dict(), 1), (dict(augment="standard"), 0), (dict(mixup=0.4), 0)])
def test_the_warmup_runs_the_frozen_base_once_without_augmentation(shapes, monkeypatch,
                                                                   params, passes):
    """A warm-up on unchanging images trains the head on the base's pooled outputs,
    computed in one pass; augmented or mixed images go through the base every epoch."""
    import skconvnet._training as training

    X, y = shapes
    calls = []
    original = training.predict_source

    def counting(model, source, *args, **kwargs):
        calls.append(len(source))
        return original(model, source, *args, **kwargs)

    monkeypatch.setattr(training, "predict_source", counting)
    clf = tiny_classifier(warmup_epochs=6, unfreeze=1, epochs=1, **params).fit(X, y)
    assert calls == [len(X)] * passes
    assert len(clf.history_) == 7


@pytest.mark.parametrize("head_units", [0, 16])
def test_the_warmup_on_the_base_outputs_trains_as_the_whole_network_would(
        shapes, monkeypatch, head_units):
    """The one-pass warm-up gives the predictions the epoch-by-epoch one gives, with the
    head's dropout acting in both (it once sat in the precomputed part with a linear head,
    where it never acted: every rate trained alike)."""
    import skconvnet._training as training

    X, y = shapes
    params = dict(warmup_epochs=4, head_units=head_units)
    one_pass = {rate: tiny_classifier(dropout=rate, **params).fit(X, y).predict_proba(X)
                for rate in (0.1, 0.5)}
    assert not np.allclose(one_pass[0.1], one_pass[0.5])
    original = training.FullNetworkInputs.__init__

    def every_epoch(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.precompute_warmup = False

    monkeypatch.setattr(training.FullNetworkInputs, "__init__", every_epoch)
    for rate, expected in one_pass.items():
        np.testing.assert_allclose(
            tiny_classifier(dropout=rate, **params).fit(X, y).predict_proba(X), expected,
            atol=1e-5)


@pytest.mark.parametrize("head_units, starts_uniform", [(0, True), (16, False)])
def test_a_linear_head_starts_from_zero(three_classes, head_units, starts_uniform):
    """Untrained, a linear head gives every class the same probability (zero weights, as
    a linear probe's solver starts); a hidden layer needs random weights to break symmetry."""
    X, y = three_classes
    # One step at a negligible rate: the fitted head is its starting point.
    clf = tiny_classifier(head_units=head_units, warmup_epochs=1, warmup_learning_rate=1e-12,
                          lr_schedule="constant", batch_size=len(X)).fit(X, y)
    assert bool(np.allclose(clf.predict_proba(X), 1 / 3, atol=1e-6)) is starts_uniform
    kernel = clf.model_.get_layer("predictions").kernel.numpy()
    assert bool(np.abs(kernel).max() < 1e-6) is starts_uniform


# --------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("train_bn", [False, True])
def test_train_bn_decides_whether_unfrozen_batchnorm_updates(shapes, train_bn):
    X, y = shapes
    clf = tiny_classifier(unfreeze=1, epochs=2, train_bn=train_bn).fit(X, y)
    top_bn = clf.base_model_.get_layer("block3_bn")
    low_bn = clf.base_model_.get_layer("block1_bn")
    moved = not np.allclose(top_bn.moving_mean.numpy(), 0.0)
    assert moved is train_bn
    assert top_bn.trainable is train_bn
    np.testing.assert_array_equal(low_bn.moving_mean.numpy(), 0.0)  # below the cut: frozen


def test_train_bn_recalibrates_the_moving_statistics_on_the_training_images(shapes):
    """After a phase that trains BatchNorm, its moving statistics are the mean over the
    training batches (no augmentation) of the batch statistics, with the trained weights."""
    X, y = shapes
    clf = tiny_classifier(unfreeze=1, epochs=2, train_bn=True, augment="standard").fit(X, y)
    base = clf.base_model_
    below_bn = keras.Model(base.input, base.get_layer("block3_conv").output)
    preprocess = clf.model_.get_layer("preprocessing")
    batches = [keras.ops.convert_to_numpy(below_bn(preprocess(X[i:i + 8].astype(np.float32))))
               for i in range(0, len(X), 8)]
    bn = base.get_layer("block3_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0),
                               rtol=1e-3, atol=1e-5)
    assert bn.momentum == 0.99  # put back


# --------------------------------------------------------------------------- divergence guard
def test_a_diverging_phase_warns_and_keeps_the_best_weights(shapes):
    X, y = shapes
    # The warm-up alone (SGD too: the optimizer is both phases').
    before = tiny_classifier(unfreeze="all", epochs=0, optimizer="sgd").fit(X, y)
    diverged = r"the finetune phase diverged at learning rate 1e\+06 .*kept the weights of its st"
    with pytest.warns(DivergenceWarning, match=diverged):
        clf = tiny_classifier(unfreeze="all", epochs=3, optimizer="sgd",
                              learning_rate=1e6).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), before.predict_proba(X), atol=1e-6)
    assert np.isfinite(clf.predict_proba(X)).all()  # the warm-up's classifier, not NaN


def test_a_nan_loss_stops_the_phase_and_warns(shapes):
    X, y = shapes
    with pytest.warns(DivergenceWarning, match=r"warmup phase .*its loss became (NaN|inf)"):
        clf = tiny_classifier(optimizer="sgd", warmup_learning_rate=1e30, warmup_epochs=5)
        clf.fit(X, y)
    assert len(clf.history_) < 5
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.parametrize("break_network", [True, False])
def test_a_backend_error_on_nan_outputs_counts_as_divergence(shapes, monkeypatch,
                                                             break_network):
    """PyTorch's binary cross-entropy raises on NaN predictions before a NaN loss is logged:
    an error with a broken network is a divergence; with a sound one it is raised."""
    X, y = shapes
    real_fit = keras.Model.fit

    def fit_then_fail(self, *args, **kwargs):
        real_fit(self, *args, **{**kwargs, "epochs": 1})
        if break_network:
            for variable in self.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, dtype=variable.dtype))
        raise RuntimeError("all elements of input should be between 0 and 1")

    monkeypatch.setattr(keras.Model, "fit", fit_then_fail)
    clf = tiny_classifier(warmup_epochs=3)
    if not break_network:
        with pytest.raises(RuntimeError, match="between 0 and 1"):
            clf.fit(X, y)
        return
    with pytest.warns(DivergenceWarning, match=r"warmup phase .*its loss became NaN"):
        clf.fit(X, y)
    assert np.isfinite(clf.predict_proba(X)).all() and len(clf.history_) == 1


def test_a_healthy_fit_does_not_warn(shapes):
    X, y = shapes
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        tiny_classifier(unfreeze=2, lr_schedule="cosine").fit(X, y)


# --------------------------------------------------------------------------- regularisers
def test_label_smoothing_trains_on_smoothed_targets(three_classes):
    X, y = three_classes

    def confidence(smoothing):
        clf = tiny_classifier(label_smoothing=smoothing, warmup_epochs=8).fit(X, y)
        return float(clf.predict_proba(X).max(axis=1).mean())

    assert confidence(0.6) < confidence(0.0)


def test_batch_mixing_blends_images_and_targets_reproducibly():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(8, 8, 8, 3)).astype(np.float32)
    targets = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0), (0.4, 1.0)):
        mixed_images, mixed_targets = BatchMixing(mixup, cutmix, seed=3)(images, targets)
        again = BatchMixing(mixup, cutmix, seed=3)(images, targets)
        np.testing.assert_array_equal(mixed_images, again[0])
        np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-5)
        assert mixed_images.shape == images.shape and mixed_targets.shape == targets.shape
        assert not np.array_equal(mixed_targets, targets)
    binary = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=np.float32)
    _, mixed = BatchMixing(0.4, 0.0, seed=0)(images, binary)
    assert mixed.shape == (8,) and ((mixed >= 0) & (mixed <= 1)).all()
    assert not BatchMixing(0.0, 0.0, seed=0)


@pytest.mark.parametrize("mixing", [dict(mixup=0.4), dict(cutmix=1.0)])
def test_mixing_changes_training_and_never_predictions(three_classes, mixing):
    X, y = three_classes
    plain = tiny_classifier(warmup_epochs=3).fit(X, y)
    mixed = tiny_classifier(warmup_epochs=3, **mixing).fit(X, y)
    assert plain.history_[-1]["loss"] != mixed.history_[-1]["loss"]
    # Predictions are the trained network's alone: no mixing, the same twice.
    np.testing.assert_array_equal(mixed.predict_proba(X), mixed.predict_proba(X))
    np.testing.assert_allclose(mixed.predict_proba(X),
                               mixed.model_.predict(X.astype(np.float32), verbose=0),
                               atol=1e-5)


def test_mixed_batches_train_the_whole_network_even_with_a_cache(three_classes, model_calls):
    X, y = three_classes
    tiny_classifier(unfreeze=1, mixup=0.4, cache="memory").fit(X, y)
    assert model_calls == []  # no frozen-bottom outputs computed for training


def test_ema_momentum_ends_on_the_average(shapes):
    X, y = shapes
    plain = tiny_classifier(optimizer="adam").fit(X, y)
    averaged = tiny_classifier(optimizer="adam", ema_momentum=0.5).fit(X, y)
    assert not np.allclose(plain.predict_proba(X), averaged.predict_proba(X))
    np.testing.assert_allclose(averaged.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------- test-time views
def test_tta_averages_the_image_and_its_fixed_views(three_classes):
    X, y = three_classes
    clf = tiny_classifier(unfreeze=2, tta=3).fit(X, y)
    plain = clf.model_.predict(X.astype(np.float32), verbose=0)
    views = [clf.model_.predict(view(X), verbose=0) for view in TEST_TIME_VIEWS[:3]]
    expected = (plain + sum(views)) / 4
    expected = expected / expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-5)
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))  # deterministic


def test_tta_zero_is_the_plain_prediction_bit_for_bit(three_classes):
    X, y = three_classes
    clf = tiny_classifier(unfreeze=2).fit(X, y)
    assert clf.tta == 0
    np.testing.assert_array_equal(clf.predict_proba(X),
                                  clf.set_params(tta=0).predict_proba(X))
    with_views = clone(clf).set_params(tta=1).fit(X, y)
    assert not np.array_equal(with_views.predict_proba(X), clf.predict_proba(X))


def test_tta_goes_through_the_cache_and_matches_the_full_network(three_classes, model_calls):
    X, y = three_classes
    cached = tiny_classifier(unfreeze=1, tta=2, cache="memory").fit(X, y)
    model_calls.clear()
    first = cached.predict_proba(X)
    assert model_calls == [len(X), len(X)]  # each view's frozen outputs, once
    model_calls.clear()
    np.testing.assert_array_equal(cached.predict_proba(X), first)
    assert model_calls == []  # the second time, every view from the cache
    uncached = clone(cached).set_params(cache=None).fit(X, y)
    np.testing.assert_allclose(first, uncached.predict_proba(X), atol=1e-5)


def test_views_keep_shape_and_range():
    images = np.random.default_rng(0).uniform(0, 255, size=(3, 17, 17, 3)).astype(np.float32)
    for view in TEST_TIME_VIEWS:
        seen = view(images)
        assert seen.shape == images.shape and seen.dtype == np.float32
        assert seen.min() >= -1e-3 and seen.max() <= 255 + 1e-3
    np.testing.assert_array_equal(TEST_TIME_VIEWS[0](images), images[:, :, ::-1])


def test_export_refuses_test_time_views_rather_than_dropping_them(three_classes, tmp_path):
    pytest.importorskip("skl2onnx")
    X, y = three_classes
    clf = tiny_classifier(tta=2).fit(X, y)
    with pytest.raises(ValueError, match=r"this FineTunedConvClassifier has tta=2 .* Set tta=0"):
        skconvnet.export(clf, tmp_path / "clf.onnx")


# --------------------------------------------------------------------------- the rate finder
def test_suggest_learning_rate_sweeps_and_suggests_a_tenth_of_the_best(shapes):
    X, y = shapes
    clf = tiny_classifier(unfreeze=2)
    rate = suggest_learning_rate(clf, X, y, min_rate=1e-5, max_rate=10.0, n_steps=30)
    assert 1e-6 <= rate <= 1.0
    assert len(rate.rates) == len(rate.losses) <= 30 and rate.phase == "finetune"
    assert all(a < b for a, b in zip(rate.rates, rate.rates[1:]))
    best = int(np.argmin(rate.smoothed))
    assert float(rate) == pytest.approx(rate.rates[best] / 10)
    assert not hasattr(clf, "history_")  # the estimator itself is not fitted


def test_suggest_learning_rate_warns_when_the_loss_never_falls(shapes):
    # One batch of every image, no dropout, rates too small to move the weights: the loss
    # stays at its start (up to rounding), so its lowest point is the noise's choice.
    X, y = shapes
    clf = tiny_classifier(unfreeze=2, dropout=0.0, batch_size=64)
    message = r"did not fall .* within 1% of its first.*n_steps=10 gave 10"
    with pytest.warns(ConvergenceWarning, match=message):
        suggest_learning_rate(clf, X, y, min_rate=1e-12, max_rate=1e-11, n_steps=10)


def test_suggest_learning_rate_is_silent_when_the_loss_falls(shapes):
    X, y = shapes
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        suggest_learning_rate(tiny_classifier(unfreeze=2), X, y, min_rate=1e-5, max_rate=10.0,
                              n_steps=30)


def test_suggest_learning_rate_sweeps_the_warmup_without_unfreezing(shapes):
    X, y = shapes
    rate = suggest_learning_rate(tiny_classifier(), X, y, n_steps=10)
    assert rate.phase == "warmup" and math.isfinite(rate)


def test_suggest_learning_rate_plots_the_curve(shapes):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = shapes
    fig, ax = plt.subplots()
    suggest_learning_rate(tiny_classifier(), X, y, n_steps=10, ax=ax)
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    plt.close(fig)


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_rate=1.0, max_rate=0.1), r"min_rate must be below max_rate"),
    (dict(n_steps=2), r"'n_steps' parameter of suggest_learning_rate must be an int >= 5"),
    (dict(min_rate=0.0), r"'min_rate' parameter"),
])
def test_suggest_learning_rate_checks_its_arguments(shapes, kwargs, message):
    X, y = shapes
    with pytest.raises(InvalidParameterError, match=message):
        suggest_learning_rate(tiny_classifier(), X, y, **kwargs)
    with pytest.raises(InvalidParameterError, match=r"'estimator' parameter .* "
                                                    r"FineTunedConvClassifier or"):
        suggest_learning_rate(skconvnet.ConvFeatureExtractor(), X, y)


def test_the_defaults_are_documented():
    doc = FineTunedConvClassifier.__doc__
    for name in ("optimizer", "weight_decay", "lr_schedule", "layer_lr_decay", "train_bn",
                 "ema_momentum", "label_smoothing", "mixup", "cutmix", "tta"):
        assert f"{name} :" in doc
