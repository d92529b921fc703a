"""The learning-rate range test: a short sweep of rates, the loss against each, a suggestion.

Leslie Smith's range test, as fastai's ``lr_find``: train for a few dozen
batches while the rate climbs geometrically, record each batch's loss, stop
once the loss has blown up, and suggest a rate a decade below the one of the
lowest (smoothed) loss, where the loss still falls fast.
"""

from __future__ import annotations

import math
import numbers
import warnings

import keras
import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from ._finetune_base import FineTunedConvEstimator
from ._training import Phase, scheduled_rate
from ._validation import HasMethods, InstanceOf, Interval, Options, validate_params
from .exceptions import InvalidParameterError
from .plotting import _pyplot, smooth_curve

__all__ = ["RateFinderResult", "suggest_learning_rate"]

# The sweep stops once the smoothed loss exceeds this multiple of its minimum.
_BLOW_UP = 4.0
_SMOOTHING = 0.8
# A sweep whose smoothed loss never drops this fraction below its start found no rate.
_MIN_FALL = 0.01


class _LossRecorder(keras.callbacks.Callback):
    """Each batch's rate and loss (Keras logs the epoch's running mean: undone here).

    The rate is the schedule's for the step (the optimizer computes the same inside
    its compiled step; JAX's ``fit`` does not write it back between steps)."""

    def __init__(self, rate_of_step):
        super().__init__()
        self.rate_of_step = rate_of_step
        self.rates, self.losses = [], []
        self.best = math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self.seen, self.previous_mean = 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(self.rate_of_step(len(self.rates)))

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.seen += 1
        loss = self.seen * mean - (self.seen - 1) * self.previous_mean
        self.previous_mean = mean
        self.losses.append(loss)
        smoothed = smooth_curve(self.losses, _SMOOTHING)[-1]
        if not math.isfinite(loss) or smoothed > _BLOW_UP * self.best:
            self.model.stop_training = True
        self.best = min(self.best, smoothed)


class RateFinderResult(float):
    """The suggested rate (a float), with the sweep behind it.

    Attributes
    ----------
    rates : ndarray
        The rate of each batch of the sweep.
    losses : ndarray
        Each batch's training loss.
    smoothed : ndarray
        ``losses`` smoothed (exponential moving average, factor 0.8).
    phase : str
        The phase swept: ``"finetune"`` or ``"warmup"``.
    """

    def __new__(cls, rate, rates, losses, phase):
        result = super().__new__(cls, rate)
        result.rates, result.losses = np.asarray(rates), np.asarray(losses)
        result.smoothed = smooth_curve(result.losses, _SMOOTHING) if len(losses) else result.losses
        result.phase = phase
        return result


@validate_params({
    "estimator": [InstanceOf(FineTunedConvEstimator,
                             "a FineTunedConvClassifier or FineTunedConvRegressor")],
    "min_rate": [Interval(numbers.Real, 0.0, None, closed="neither")],
    "max_rate": [Interval(numbers.Real, 0.0, None, closed="neither")],
    "n_steps": [Interval(numbers.Integral, 5, None)],
    "plot": [InstanceOf(bool, "a bool")],
    "ax": [Options(None), HasMethods("plot", "axvline", description="a matplotlib Axes")],
})
def suggest_learning_rate(estimator, X, y, *, min_rate=1e-7, max_rate=1.0, n_steps=100,
                          plot=False, ax=None):
    """Suggest ``learning_rate`` (or, with ``unfreeze=0``, ``warmup_learning_rate``) for
    a fine-tuned estimator with the range test.

    A copy of ``estimator`` runs its warm-up as configured, then trains what
    phase 2 trains for up to ``n_steps`` batches while the rate climbs
    geometrically from ``min_rate`` to ``max_rate``, with the estimator's
    optimizer and recipe; it stops early once the loss has blown up (4x its
    smoothed minimum). The suggestion is a tenth of the rate of the lowest
    smoothed loss. With ``unfreeze=0`` the warm-up itself is swept. Where the
    smoothed loss never falls 1% below its start, a ``ConvergenceWarning`` says
    the suggestion means nothing.

    Parameters
    ----------
    estimator : FineTunedConvClassifier or FineTunedConvRegressor
        Not fitted or changed (a clone is trained).
    X, y : array-like
        Training images and targets, as ``fit`` takes them.
    min_rate, max_rate : float, default=1e-7, 1.0
        The sweep's range.
    n_steps : int, default=100
        Batches of the sweep (whole epochs over ``X``; at least 5).
    plot : bool, default=False
        Draw the loss against the rate (log scale) with the suggestion marked.
    ax : matplotlib Axes or None, default=None
        Where to draw (a new figure if None); implies ``plot``.

    Returns
    -------
    rate : RateFinderResult
        The suggested rate, a float; ``rate.rates`` and ``rate.losses`` hold the
        sweep.

    Examples
    --------
    >>> from skconvnet import suggest_learning_rate
    >>> from skconvnet.testing import make_shapes, tiny_classifier
    >>> X, y = make_shapes(32)
    >>> rate = suggest_learning_rate(tiny_classifier(unfreeze=2), X, y, n_steps=40)
    >>> 1e-3 < rate < 1.0
    True
    """
    if min_rate >= max_rate:
        raise InvalidParameterError(f"min_rate must be below max_rate; got min_rate={min_rate!r}"
                                    f" and max_rate={max_rate!r}.")
    finder = clone(estimator)
    n_batches = max(1, math.ceil(len(y) / finder.batch_size))
    epochs = max(1, math.ceil(n_steps / max(n_batches, 1)))
    swept = {}

    def phases_of(network):
        phases = estimator._phases(network)
        swept["phase"] = "finetune" if network.start is not None else "warmup"
        head = phases[:1] if network.start is not None else []
        return head + [Phase(f"{swept['phase']} (rate range test)", network.start,
                             max_rate, epochs, "range_test",
                             min_rate=min_rate)]

    n_total = epochs * n_batches
    recorder = _LossRecorder(lambda step: scheduled_rate("range_test", max_rate, step, n_total,
                                                         min_rate))
    # "auto" compares the warm-up alone with fine-tuning every layer: sweep the latter.
    unfreeze = "all" if estimator.unfreeze == "auto" else estimator.unfreeze
    finder._fit(X, y, None, phases_of=phases_of, unfreeze=unfreeze,
                callbacks_of=lambda phase: [recorder] if phase.schedule == "range_test" else [])
    n = min(len(recorder.rates), len(recorder.losses), n_steps)
    rates, losses = recorder.rates[:n], recorder.losses[:n]
    smoothed = smooth_curve(losses, _SMOOTHING)
    finite = np.isfinite(smoothed)
    if not finite.any():
        raise ValueError("The rate range test saw no finite loss; check X and y.")
    best = int(np.argmin(np.where(finite, smoothed, np.inf)))
    rate = rates[best] / 10.0
    if smoothed[best] > (1 - _MIN_FALL) * smoothed[0]:
        # The loss never fell: the rate of its lowest point is the noise's choice.
        warnings.warn(
            f"The loss did not fall during the rate range test: its lowest (smoothed) value, "
            f"{smoothed[best]:.4g}, is within {_MIN_FALL:.0%} of its first, "
            f"{smoothed[0]:.4g}, so the suggestion ({rate:.3g}) says nothing about the data. "
            f"Sweep more steps (n_steps={n_steps} gave {n}), more images or a wider range "
            f"(min_rate={min_rate!r}, max_rate={max_rate!r}) before using it.",
            ConvergenceWarning, stacklevel=3)  # past validate_params, to the caller
    result = RateFinderResult(rate, rates, losses, swept["phase"])
    if plot or ax is not None:
        _plot_sweep(result, ax)
    return result


def _plot_sweep(result, ax):
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(5, 3.5))
    ax.plot(result.rates, result.smoothed, label="loss (smoothed)")
    ax.axvline(float(result), color="tab:red", linestyle="--",
               label=f"suggested {float(result):.2g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({result.phase} phase)")
    ax.set_ylabel("training loss")
    ax.legend()
    return ax
