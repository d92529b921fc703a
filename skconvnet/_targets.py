"""Targets for training: labels checked as scikit-learn checks them, encoded, weighted."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets

__all__ = ["ClassWeights", "Targets", "encode_class_labels"]


@dataclass(frozen=True)
class Targets:
    """Class labels encoded for training."""

    classes: np.ndarray
    encoded: np.ndarray  # float32 class indices
    sample_weight: np.ndarray | None

    @property
    def n_outputs(self):
        return 1 if len(self.classes) == 2 else len(self.classes)

    @property
    def loss(self):
        return "binary_crossentropy" if self.n_outputs == 1 else "sparse_categorical_crossentropy"


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


def encode_class_labels(y, n_images, class_weight_param, caller):
    """Class labels checked, encoded as float32 indices, with per-sample class weights.

    Parameters
    ----------
    y : array-like of shape (n_images,)
    n_images : int
        The number of images, which ``y`` must match.
    class_weight_param : None, "balanced" or dict
        The classifier's ``class_weight`` (validated by its table).
    caller : str
        The class named in messages.

    Returns
    -------
    targets : Targets
    """
    if y is None:
        raise ValueError(f"{caller} requires y to be passed, but the target y is None.")
    y = column_or_1d(y, warn=True)
    check_consistent_length(np.empty(n_images), y)
    _check_no_missing_labels(y)
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"{caller} needs samples of at least 2 classes in the data, "
            f"but the data contains only one class: {encoder.classes_[0].tolist()!r}."
        )
    encoded = encoder.transform(y)
    sample_weight = None
    if class_weight_param is not None:
        class_weight = class_weight_param
        if isinstance(class_weight, dict):
            class_weight = {encoder.transform([label])[0]: weight
                            for label, weight in class_weight.items()
                            if label in encoder.classes_}
        per_class = compute_class_weight(class_weight, classes=np.arange(len(encoder.classes_)),
                                         y=encoded)
        sample_weight = per_class[encoded].astype(np.float32)
    return Targets(encoder.classes_, encoded.astype(np.float32), sample_weight)
