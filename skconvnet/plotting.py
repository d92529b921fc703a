"""Training curves and feature maps as matplotlib figures (``pip install "skconvnet[plot]"``)."""

from __future__ import annotations

import numbers

import keras
import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._validation import Interval, validate_params
from .exceptions import InvalidParameterError
from .images import image_source
from .networks import layer_index

__all__ = ["plot_feature_maps", "plot_history", "smooth_curve"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "Plotting needs matplotlib: pip install \"skconvnet[plot]\"."
        ) from exc
    return plt


def smooth_curve(points, factor=0.8):
    """Exponential moving average: ``s[i] = factor * s[i-1] + (1 - factor) * points[i]``.

    Parameters
    ----------
    points : array-like of shape (n,)
    factor : float in [0, 1), default=0.8
        0 returns the points unchanged.

    Returns
    -------
    smoothed : ndarray of shape (n,)

    Examples
    --------
    >>> from skconvnet.plotting import smooth_curve
    >>> smooth_curve([0.0, 1.0, 1.0], factor=0.5).tolist()
    [0.0, 0.5, 0.75]
    """
    points = np.asarray(points, dtype=float)
    smoothed = np.empty_like(points)
    for i, point in enumerate(points):
        smoothed[i] = point if i == 0 else factor * smoothed[i - 1] + (1 - factor) * point
    return smoothed


@validate_params({"smooth": [Interval(numbers.Real, 0.0, 1.0, closed="left")]})
def plot_history(classifier, *, smooth=0.8, figsize=(10, 4)):
    """Accuracy and loss per epoch of both training phases of a fitted classifier.

    Each panel shows the raw per-epoch values as points and their exponential
    moving average (``smooth``) as a line, for the training data and, when the
    classifier was fitted with ``validation_fraction``, the validation data. A
    dashed vertical line marks where fine-tuning (phase 2) starts.

    Parameters
    ----------
    classifier : FineTunedConvClassifier
        A fitted classifier (its ``history_`` is plotted).
    smooth : float in [0, 1), default=0.8
        Smoothing factor of the moving average; 0 draws the raw values only.
    figsize : tuple, default=(10, 4)
        Figure size in inches.

    Returns
    -------
    figure : matplotlib.figure.Figure
        Two axes: accuracy (left) and loss (right).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import skconvnet.testing  # registers the tiny test base
    >>> from skconvnet import FineTunedConvClassifier, plot_history
    >>> X = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    >>> clf = FineTunedConvClassifier("tiny", weights=None, input_size=16, head_units=4,
    ...                               warmup_epochs=2, unfreeze=1, epochs=2,
    ...                               random_state=0).fit(X, [0, 1] * 4)
    >>> [ax.get_title() for ax in plot_history(clf).axes]
    ['accuracy', 'loss']
    """
    check_is_fitted(classifier, "history_")
    plt = _pyplot()
    history = classifier.history_
    epochs = np.arange(1, len(history) + 1)
    figure, axes = plt.subplots(1, 2, figsize=figsize)
    boundary = next((i for i, entry in enumerate(history) if entry["phase"] == "finetune"), None)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for prefix, label, colour in (("", "training", "C0"), ("val_", "validation", "C1")):
            values = [entry.get(prefix + metric) for entry in history]
            if not values or any(v is None for v in values):
                continue
            ax.plot(epochs, values, "o", color=colour, alpha=0.4, markersize=4,
                    label=f"{label} (raw)")
            if smooth:
                ax.plot(epochs, smooth_curve(values, smooth), "-", color=colour,
                        label=f"{label} (smoothed {smooth:g})")
        if boundary is not None and boundary > 0:
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


@validate_params({"max_maps": [Interval(numbers.Integral, 1, None)],
                  "n_cols": [Interval(numbers.Integral, 1, None)]})
def plot_feature_maps(estimator, image, *, layer=None, max_maps=32, n_cols=8, size=1.5):
    """A grid of one layer's activation maps for one image.

    Parameters
    ----------
    estimator : ConvFeatureExtractor or FineTunedConvClassifier
        A fitted estimator; its base (with its trained weights) is run.
    image : path or array of shape (h, w) or (h, w, c)
        One image, resized to the estimator's input size.
    layer : str, int or None, default=None
        A layer of the estimator's (cut) base, by name or index in
        ``base_model_.layers``; None shows the base's output.
    max_maps : int, default=32
        Show the first ``max_maps`` channels.
    n_cols : int, default=8
        Panels per row.
    size : float, default=1.5
        Side of one panel in inches.

    Returns
    -------
    figure : matplotlib.figure.Figure
        One axis per channel shown, titled with the channel index.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skconvnet import plot_feature_maps
    >>> from skconvnet.testing import make_shapes, tiny_extractor  # the tiny test base
    >>> images, _ = make_shapes(1)
    >>> extractor = tiny_extractor().fit(images)
    >>> len(plot_feature_maps(extractor, images[0], layer="block1_relu").axes)
    4
    """
    model = estimator.model_  # raises NotFittedError when not fitted
    base = estimator.base_model_
    index = (len(base.layers) - 1 if layer is None
             else layer_index("plot_feature_maps", base, layer))
    chosen = base.layers[index]
    if len(chosen.output.shape) != 4:
        raise InvalidParameterError(
            f"The 'layer' parameter of plot_feature_maps must name a layer with 2-D maps "
            f"(output of rank 4); {chosen.name!r} outputs shape {tuple(chosen.output.shape)}."
        )
    probe = keras.Model(base.input, chosen.output)
    is_path = isinstance(image, (str, bytes)) or hasattr(image, "__fspath__")
    images = [image] if is_path else np.asarray(image)[None]
    batch, _ = image_source(images, estimator.input_size_).load(slice(None))
    preprocessed = model.get_layer("preprocessing")(batch)
    maps = keras.ops.convert_to_numpy(probe(preprocessed, training=False))[0]

    plt = _pyplot()
    n_maps = min(max_maps, maps.shape[-1])
    n_cols = min(n_cols, n_maps)
    n_rows = -(-n_maps // n_cols)
    figsize = (size * n_cols, (size + 0.25) * n_rows + 0.4)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=figsize,
                                squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n_maps:
            figure.delaxes(ax)
            continue
        ax.imshow(maps[..., i], cmap="viridis")
        ax.set_title(str(i), fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"{chosen.name}: {n_maps} of {maps.shape[-1]} maps")
    figure.tight_layout()
    return figure
