"""FineTunedConvRegressor: two-phase fine-tuning of a pretrained base as a regressor."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin

from ._base import document_parameters
from ._finetune_base import FINETUNE_CONSTRAINTS, FINETUNE_PARAMETER_DOCS, FineTunedConvEstimator
from ._targets import REGRESSION_LOSSES, encode_regression_targets
from ._validation import Options

__all__ = ["FineTunedConvRegressor"]


@document_parameters
class FineTunedConvRegressor(RegressorMixin, FineTunedConvEstimator):
    """Fine-tune a pretrained convolutional base as a scikit-learn regressor.

    The same base, cut, head, phases, augmentation, cache and saving as
    :class:`FineTunedConvClassifier`, with a linear output layer: one output
    per target column. Targets are standardised (per column, from the training
    images) for training and mapped back by ``predict``, so learning rates do
    not depend on the targets' units.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    n_outputs_ : int
        Target columns (1 for a 1-D ``y``).
    out_activation_ : "linear"
        The output layer's activation.
    target_mean_, target_scale_ : ndarray of shape () or (n_outputs,)
        What was subtracted from the targets and divided into them (a scale of
        0 is taken as 1); 0-d when ``y`` was 1-D, and ``predict`` then returns
        1-D predictions.
    model_ : keras.Model
        The trained network: augmentation, preprocessing, base, head.
    base_model_ : keras.Model
        The (cut) base inside ``model_``, with its trained weights.
    history_ : list of dict
        One record per epoch of both phases: ``phase``, ``epoch``,
        ``learning_rate`` (the epoch's mean), ``loss`` (on the standardised
        targets) and, with a validation split, ``val_loss``.
    n_trainable_layers_ : int
        Layers of the base trained in phase 2.
    unfreeze_ : int or str
        The depth phase 2 trained: ``unfreeze``, or what ``unfreeze="auto"`` chose.
    unfreeze_scores_ : dict
        With ``unfreeze="auto"`` only: the mean held-out ``score`` of ``"0"`` (the
        warm-up alone) and ``"all"`` in the 2-fold comparison.
    input_size_ : int
        The side images are resized to.
    n_features_in_ : int
        Values per row, only when fitted on a 2-D array of flattened images.

    See Also
    --------
    FineTunedConvClassifier : The same recipe for class labels.
    ConvFeatureExtractor : Frozen features; ``extractor -> Ridge`` is the linear probe.

    Examples
    --------
    >>> import numpy as np
    >>> import skconvnet.testing  # registers the tiny test base
    >>> from skconvnet import FineTunedConvRegressor
    >>> X = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    >>> y = X.mean(axis=(1, 2, 3))  # brightness
    >>> reg = FineTunedConvRegressor("tiny", weights=None, input_size=16, head_units=4,
    ...                              warmup_epochs=2, random_state=0).fit(X, y)
    >>> reg.predict(X).shape
    (8,)
    """

    _parameter_constraints = {
        **FINETUNE_CONSTRAINTS,
        "loss": [Options(*REGRESSION_LOSSES)],
    }
    _parameter_docs = {
        **FINETUNE_PARAMETER_DOCS,
        "loss": ('{"squared_error", "huber", "absolute_error"}', """\
The training loss on the standardised targets (Keras' mean squared error,
Huber, mean absolute error)."""),
    }
    _required_fitted_names = FineTunedConvEstimator._required_fitted_names | {
        "target_mean_", "target_scale_"}
    _fitted_attribute_names = FineTunedConvEstimator._fitted_attribute_names | \
        _required_fitted_names

    def __init__(
        self,
        base="vgg16",
        *,
        weights="imagenet",
        layer=None,
        input_size=None,
        pooling="avg",
        head_units=0,
        dropout=0.2,
        augment=None,
        warmup_epochs=20,
        epochs=10,
        unfreeze="auto",
        learning_rate=3e-3,
        warmup_learning_rate=3e-3,
        optimizer="adamw",
        weight_decay=None,
        lr_schedule="cosine",
        layer_lr_decay=1.0,
        train_bn=True,
        ema_momentum=None,
        tta=0,
        batch_size=32,
        precision="float32",
        distribution=None,
        loss="squared_error",
        validation_fraction=None,
        n_iter_no_change=None,
        cache=None,
        image_shape=None,
        background="white",
        random_state=None,
        verbose=0,
    ):
        self._store_parameters(locals())

    def _encode_targets(self, y, n_images, sample_weight):
        return encode_regression_targets(y, n_images, sample_weight, self.loss,
                                         type(self).__name__)

    def _set_target_attributes(self, targets):
        self.target_mean_, self.target_scale_ = targets.mean, targets.scale

    def _check_fitted_state(self):
        super()._check_fitted_state()
        shape = () if self.n_outputs_ == 1 and np.ndim(self.target_mean_) == 0 else (
            self.n_outputs_,)
        for name in ("target_mean_", "target_scale_"):
            value = getattr(self, name)
            if not (isinstance(value, np.ndarray) and value.shape == shape
                    and np.isfinite(value).all()):
                raise ValueError(f"{name} is not a finite array of shape {shape}.")
        if self.out_activation_ != "linear" or not (self.target_scale_ > 0).all():
            raise ValueError("a regressor has a linear output and positive target scales.")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # As for the classifier: an epoch or two on tiny inputs is no strong regressor.
        tags.regressor_tags.poor_score = True
        tags.target_tags.multi_output = True  # a 2-D y: one output per column
        return tags

    def predict(self, X):
        """Predicted targets, in the units of ``y``.

        Parameters
        ----------
        X : array-like or sequence of paths
            Images, in any form ``fit`` accepts.

        Returns
        -------
        y_pred : ndarray of shape (n_images,) or (n_images, n_outputs_)
        """
        predicted = self._scores(X) * self.target_scale_ + self.target_mean_
        return predicted[:, 0] if np.ndim(self.target_mean_) == 0 else predicted
