"""Targets for training: checked as scikit-learn checks them, encoded, weighted.

Single-label classes, multi-label indicator matrices and real-valued targets
each become a :class:`Targets` record: what the network's output layer is,
the Keras loss and metrics, the encoded targets and per-image weights.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from .exceptions import InvalidParameterError

__all__ = ["ClassWeights", "Targets", "check_sample_weight", "encode_class_labels",
           "encode_regression_targets"]


@dataclass(frozen=True)
class Targets:
    """Encoded targets and what the network needs to learn them.

    Attributes
    ----------
    encoded : ndarray of float32, shape (n_images,) or (n_images, n_outputs)
    sample_weight : ndarray of float32 of shape (n_images,) or None
        Per-image loss weights (class weights times sample weights).
    trained : ndarray of int
        The images trained on: those of weight > 0.
    n_outputs : int
    activation : {"sigmoid", "softmax", "linear"}
        The output layer's activation.
    loss : str
        The Keras loss.
    metrics : tuple of str
    stratify : bool
        Whether a validation split can be stratified on ``encoded``.
    classes : ndarray or None
        Class labels (classification).
    mean, scale : ndarray or None
        What was subtracted from and divided into real-valued targets.
    """

    encoded: np.ndarray
    sample_weight: np.ndarray | None
    trained: np.ndarray
    n_outputs: int
    activation: str
    loss: str
    metrics: tuple = ()
    stratify: bool = False
    classes: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None


def _check_no_missing_labels(y):
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(
            f"y contains NaN labels (at index {int(np.flatnonzero(np.isnan(y))[0])}); "
            "every image needs a label."
        )
    if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and math.isnan(v))
                                   for v in y):
        raise ValueError("y contains missing (None/NaN) labels; every image needs a label.")


class ClassWeights:
    """A dict of class weights: finite, non-negative numbers, at least one positive."""

    def is_satisfied_by(self, value):
        if not isinstance(value, dict) or not value:
            return False
        weights = list(value.values())
        return (all(isinstance(w, numbers.Real) and not isinstance(w, bool)
                    and math.isfinite(w) and w >= 0 for w in weights)
                and any(w > 0 for w in weights))

    def __str__(self):
        return "a dict of class weights (finite numbers >= 0, at least one > 0)"

    def invalid_values(self):
        return [{0: float("nan"), 1: 1.0}, {0: -1.0, 1: 1.0}, {0: 0.0}]


def check_sample_weight(sample_weight, n_images, caller):
    """``sample_weight`` as float32 ``(n_images,)``: finite, >= 0, one > 0; None stays None."""
    if sample_weight is None:
        return None
    try:
        weights = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"sample_weight of {caller} must be numbers; got "
                         f"{np.asarray(sample_weight).dtype} values.") from None
    if weights.ndim != 1 or len(weights) != n_images:
        raise ValueError(f"sample_weight of {caller} must have shape ({n_images},), one weight "
                         f"per image; got shape {weights.shape}.")
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if len(bad):
        raise ValueError(f"sample_weight of {caller} must be finite and >= 0; got "
                         f"{float(weights[bad[0]])!r} at index {int(bad[0])}.")
    if not (weights > 0).any():
        raise ValueError(f"sample_weight of {caller} must not be all zero: at least one "
                         "weight must be > 0.")
    return weights.astype(np.float32)


def _trained(weights, n_images):
    """The images trained on: all of them, or those of weight > 0."""
    return np.arange(n_images) if weights is None else np.flatnonzero(weights > 0)


def encode_class_labels(y, n_images, class_weight_param, sample_weight, caller):
    """Class labels (single-label or a multi-label indicator matrix) checked and encoded.

    Parameters
    ----------
    y : array-like of shape (n_images,), or (n_images, n_labels) of 0/1
    n_images : int
        The number of images, which ``y`` must match.
    class_weight_param : None, "balanced" or dict
        The classifier's ``class_weight`` (validated by its table); single-label only.
    sample_weight : array-like or None
    caller : str
        The class named in messages.

    Returns
    -------
    targets : Targets
    """
    if y is None:
        raise ValueError(f"{caller} requires y to be passed, but the target y is None.")
    weights = check_sample_weight(sample_weight, n_images, caller)
    y_array = np.asarray(y)
    if y_array.ndim == 2 and y_array.shape[1] > 1:
        return _encode_multilabel(y_array, n_images, class_weight_param, weights, caller)
    y = column_or_1d(y, warn=True)
    check_consistent_length(np.empty(n_images), y)
    _check_no_missing_labels(y)
    check_classification_targets(y)
    trained = _trained(weights, n_images)
    encoder = LabelEncoder().fit(y[trained])
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"{caller} needs samples of at least 2 classes in the data, "
            f"but the data contains only one class: {encoder.classes_[0].tolist()!r}."
        )
    known = np.isin(y, encoder.classes_)  # a class only weight-0 images have is not learned
    encoded = np.zeros(n_images, dtype=np.int64)
    encoded[known] = encoder.transform(y[known])
    if class_weight_param is not None:
        class_weight = class_weight_param
        if isinstance(class_weight, dict):
            class_weight = {encoder.transform([label])[0]: weight
                            for label, weight in class_weight.items()
                            if label in encoder.classes_}
        per_class = compute_class_weight(class_weight, classes=np.arange(len(encoder.classes_)),
                                         y=encoded[trained])
        class_weights = per_class[encoded].astype(np.float32)
        weights = class_weights if weights is None else class_weights * weights
    n_outputs = 1 if len(encoder.classes_) == 2 else len(encoder.classes_)
    return Targets(
        encoded=encoded.astype(np.float32), sample_weight=weights, trained=trained,
        n_outputs=n_outputs, activation="sigmoid" if n_outputs == 1 else "softmax",
        loss="binary_crossentropy" if n_outputs == 1 else "sparse_categorical_crossentropy",
        metrics=("accuracy",), stratify=True, classes=encoder.classes_)


def _encode_multilabel(y, n_images, class_weight_param, weights, caller):
    check_consistent_length(np.empty(n_images), y)
    if type_of_target(y) != "multilabel-indicator" or not np.isin(y, (0, 1)).all():
        raise ValueError(
            f"{caller} takes a 2-D y only as a multi-label indicator matrix (0/1, one column "
            f"per label, as MultiLabelBinarizer gives); got a y of type "
            f"{type_of_target(y)!r}.")
    if class_weight_param is not None:
        raise InvalidParameterError(
            f"The 'class_weight' parameter of {caller} must be None with multi-label y. Got "
            f"{class_weight_param!r} instead.")
    trained = _trained(weights, n_images)
    encoded = (np.asarray(y) > 0).astype(np.float32)
    return Targets(encoded=encoded, sample_weight=weights, trained=trained,
                   n_outputs=encoded.shape[1], activation="sigmoid", loss="binary_crossentropy",
                   metrics=("binary_accuracy",), classes=np.arange(encoded.shape[1]))


#: Keras losses of the regressor's ``loss`` values.
REGRESSION_LOSSES = {"squared_error": "mean_squared_error", "huber": "huber",
                     "absolute_error": "mean_absolute_error"}


def encode_regression_targets(y, n_images, sample_weight, loss, caller):
    """Real-valued targets, 1-D or 2-D, checked and standardised (per column)."""
    if y is None:
        raise ValueError(f"{caller} requires y to be passed, but the target y is None.")
    weights = check_sample_weight(sample_weight, n_images, caller)
    y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y of {caller} must be 1-D or 2-D; got shape {y.shape}.")
    check_consistent_length(np.empty(n_images), y)
    trained = _trained(weights, n_images)
    mean = np.asarray(y[trained].mean(axis=0))
    scale = np.asarray(y[trained].std(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    encoded = ((y - mean) / scale).astype(np.float32)
    return Targets(encoded=encoded, sample_weight=weights, trained=trained,
                   n_outputs=1 if y.ndim == 1 else y.shape[1], activation="linear",
                   loss=REGRESSION_LOSSES[loss], mean=mean, scale=scale)
