"""The main job, end to end: does transfer learning beat raw pixels on real photos?

``skconvnet demo`` runs four approaches on the same held-out splits of the
food photos (plant vs animal) and prints one table:

1. raw pixels + LogisticRegression (the floor);
2. ``Pipeline([ConvFeatureExtractor, StandardScaler, LogisticRegression])``, with the
   base's random initialisation (what the architecture alone gives) and with its
   pretrained weights;
3. ``FineTunedConvClassifier(unfreeze=0, augment="standard")`` (the seeds' approach II,
   with the seeds' optimizer and constant rate);
4. ``FineTunedConvClassifier`` fine-tuned with the package's recipe, ``unfreeze`` and
   ``learning_rate`` chosen by an inner ``GridSearchCV`` (frozen-layer cache on, so no
   augmentation);
5. ``FineTunedConvClassifier`` with its defaults, no search (only the demo's base,
   weights and input size set).

It also saves the training curves of a fine-tuned classifier and the feature
maps of one photo as PNG files.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .caching import clear_memory_cache
from .datasets import fetch_food_photos
from .extraction import ConvFeatureExtractor
from .finetune import FineTunedConvClassifier
from .images import image_source
from .inspection import inspect_base
from .plotting import plot_feature_maps, plot_history

__all__ = ["DemoConfig", "SEARCHED_RATES", "run_demo", "unfreeze_choices"]

#: The fine-tuning rates the demo's search tries.
SEARCHED_RATES = [1e-3, 1e-4]


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo` (the CLI's options)."""

    base: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    layer: str | None = None
    input_size: int = 160
    folds: int = 3
    limit: int | None = None
    warmup_epochs: int = 6
    epochs: int = 4
    output_dir: str = "."
    plots: bool = True
    verbose: int = 1
    approaches: tuple = ("raw", "random", "features", "frozen", "finetuned", "defaults")
    seed: int = 0


def unfreeze_choices(base, layer=None, input_size=None, n=2):
    """``unfreeze`` values that start training at the last ``n`` block boundaries.

    For VGG16 these are 3 (block5) and 6 (block4 and block5); for
    EfficientNet-Lite0 1 (the top convolution) and 4 (block7a and the top).
    """
    table = inspect_base(base, layer=layer, input_size=input_size)
    values = []
    for row in table:
        if row["block"]:
            first = next((r["unfreeze"] for r in table[row["index"]:]
                          if r["unfreeze"] is not None), None)
            if first is not None and first not in values:
                values.append(first)
    return sorted(values)[:n]


def _feature_map_layer(extractor, size):
    """The deepest layer of the base whose maps are still at least size/4 wide."""
    candidates = [layer.name for layer in extractor.base_model_.layers
                  if len(layer.output.shape) == 4 and layer.output.shape[1] is not None
                  and layer.output.shape[1] >= size / 4]
    return candidates[-1]


def run_demo(config, log=print):
    """Run the demo; return its rows and the paths of the pictures written.

    Parameters
    ----------
    config : DemoConfig
    log : callable
        Receives progress lines.

    Returns
    -------
    result : dict
        ``rows`` (one dict per approach: name, scores, fit and predict times,
        notes), ``table`` (the printed Markdown table), ``pictures`` (paths).
    """
    started = time.perf_counter()
    # Each fold builds new models, so TensorFlow's "retracing" notices are expected here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def say(message):
        log(f"[{time.perf_counter() - started:6.0f} s] {message}")

    say("fetching the food photos (task: plant vs animal) ...")
    paths, labels = fetch_food_photos("plant-animal")
    if config.limit:
        order = np.random.default_rng(config.seed).permutation(len(paths))[: config.limit]
        paths, labels = [paths[i] for i in sorted(order)], labels[sorted(order)]
    paths = np.asarray(paths)
    names, counts = np.unique(labels, return_counts=True)
    say(f"{len(paths)} unique photos: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts)))
    splits = list(StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
                  .split(paths, labels))
    common = dict(base=config.base, weights=config.weights, layer=config.layer,
                  input_size=config.input_size)
    choices = unfreeze_choices(config.base, config.layer, config.input_size)
    classifier = dict(common, warmup_epochs=config.warmup_epochs, batch_size=32,
                      random_state=config.seed)
    # The seeds' approach II: their head, optimizer and constant rate.
    seeds = dict(classifier, head_units=256, dropout=0.5, warmup_learning_rate=1e-3,
                 optimizer="rmsprop", lr_schedule="constant", label_smoothing=0.0)

    def probe():
        return [StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)]

    raw_pixels = None
    approaches = {
        "raw": ("raw 32x32 pixels + LogisticRegression",
                lambda: make_pipeline(*probe())),
        "random": (f"{config.base} random-init features + LogisticRegression",
                   lambda: make_pipeline(ConvFeatureExtractor(**dict(common, weights=None),
                                                              random_state=0), *probe())),
        "features": (f"{config.base} {config.weights} features + LogisticRegression",
                     lambda: make_pipeline(ConvFeatureExtractor(**common, random_state=0),
                                           *probe())),
        "frozen": (f"FineTunedConvClassifier, frozen base, augment='standard', "
                   f"{config.warmup_epochs} epochs",
                   lambda: FineTunedConvClassifier(**seeds, unfreeze=0, augment="standard")),
        "finetuned": (f"FineTunedConvClassifier fine-tuned, GridSearchCV over unfreeze "
                      f"{choices} x learning_rate {SEARCHED_RATES}",
                      lambda: GridSearchCV(
                          FineTunedConvClassifier(**classifier, epochs=config.epochs,
                                                  cache="memory"),
                          {"unfreeze": choices, "learning_rate": SEARCHED_RATES},
                          cv=StratifiedKFold(2, shuffle=True, random_state=config.seed))),
        "defaults": ("FineTunedConvClassifier with its defaults, no search",
                     lambda: FineTunedConvClassifier(**common, random_state=config.seed)),
    }
    rows = []
    for key in config.approaches:
        name, make = approaches[key]
        say(f"{name}")
        scores, fit_times, predict_times, notes = [], [], [], []
        for fold, (train, test) in enumerate(splits, start=1):
            if key == "raw":
                if raw_pixels is None:  # decode once; every fold reuses the pixels
                    batch, _ = image_source(list(paths), 32).load(slice(None))
                    raw_pixels = batch.reshape(len(batch), -1) / 255.0
                X_train, X_test = raw_pixels[train], raw_pixels[test]
            else:
                X_train, X_test = list(paths[train]), list(paths[test])
            model = make()
            tick = time.perf_counter()
            model.fit(X_train, labels[train])
            fit_time = time.perf_counter() - tick
            tick = time.perf_counter()
            predicted = model.predict(X_test)
            predict_time = time.perf_counter() - tick
            scores.append(float(np.mean(predicted == labels[test])))
            fit_times.append(fit_time)
            predict_times.append(predict_time)
            if key == "finetuned":
                notes.append(model.best_params_)
            say(f"  fold {fold}/{len(splits)}: accuracy {scores[-1]:.3f}, fit {fit_time:.0f} s, "
                f"predict {predict_time:.1f} s"
                + (f", best {model.best_params_}" if key == "finetuned" else ""))
        rows.append(dict(key=key, name=name, scores=np.array(scores), fit=np.mean(fit_times),
                         predict=np.mean(predict_times), notes=notes))

    lines = [f"| approach | accuracy (held-out, {config.folds} folds, mean +- std) | "
             "fit (s per fold) | predict (s per fold) |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['scores'].mean():.3f} +- {row['scores'].std():.3f}"
                     f" | {row['fit']:.1f} | {row['predict']:.2f} |")
    table = "\n".join(lines)

    pictures = []
    if config.plots:
        pictures = _pictures(config, paths, labels, splits, classifier, rows, choices, say)
    clear_memory_cache()
    say("done")
    return {"rows": rows, "table": table, "pictures": pictures,
            "seconds": time.perf_counter() - started}


def _pictures(config, paths, labels, splits, classifier, rows, choices, say):
    """Training curves of a fine-tuned classifier and feature maps of one photo."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say('no plots: matplotlib is missing (pip install "skconvnet[plot]")')
        return []
    os.makedirs(config.output_dir, exist_ok=True)
    found = [row["notes"][0] for row in rows if row["key"] == "finetuned" and row["notes"]]
    best = found[0] if found else {"unfreeze": choices[-1], "learning_rate": SEARCHED_RATES[-1]}
    say(f"training curves: fine-tuning with {best} and a 20% validation split ...")
    train = splits[0][0]
    clf = FineTunedConvClassifier(**dict(classifier, **best), epochs=config.epochs,
                                  cache="memory", validation_fraction=0.2)
    clf.fit(list(paths[train]), labels[train])
    curves = os.path.join(config.output_dir, "skconvnet-demo-curves.png")
    figure = plot_history(clf, smooth=0.6)
    figure.suptitle(f"{config.base}: warm-up then fine-tuning ({best})", y=1.02)
    figure.savefig(curves, dpi=90, bbox_inches="tight")
    plt.close(figure)

    # The first photo of the smallest class (an animal product): a plain object on white
    # shows more in its maps than the first photo overall, a close-up of grains.
    names, counts = np.unique(labels, return_counts=True)
    photo = paths[labels == names[np.argmin(counts)]][0]
    extractor = ConvFeatureExtractor(config.base, weights=config.weights, layer=config.layer,
                                     input_size=config.input_size).fit([photo])
    layer = _feature_map_layer(extractor, config.input_size)
    maps = os.path.join(config.output_dir, "skconvnet-demo-feature-maps.png")
    figure = plot_feature_maps(extractor, photo, layer=layer, max_maps=16, size=1.2)
    figure.suptitle(f"{config.base} ({config.weights}), {layer}, photo "
                    f"{os.path.basename(photo)}: first 16 of "
                    f"{extractor.base_model_.get_layer(layer).output.shape[-1]} maps")
    figure.savefig(maps, dpi=80, bbox_inches="tight")
    plt.close(figure)
    say(f"saved {curves} and {maps}")
    return [curves, maps]
