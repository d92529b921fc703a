"""Regression and multi-label on real photos: fine-tuning against the linear probe.

The food photos' file names are IFCT 2017 food codes, and the same publisher's
composition table gives each food's nutrients, so each photo has real targets:

* regression: the food's water content (g per 100 g): dry grains, pulses, spices
  and nuts against fresh vegetables, fruit, milk, meat and fish;
* multi-label: protein >= 10 g, fat >= 10 g, carbohydrate >= 40 g per 100 g
  (a photo may have none, one or two of them).

Each row is fitted on the same held-out folds (KFold, shuffled, seed 0); the
table prints mean +- std over the folds and the fit time per fold.

    python benchmarks/tasks.py [--folds 3] [--size 160] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression, RidgeCV  # noqa: E402
from sklearn.metrics import f1_score, mean_absolute_error, r2_score  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skconvnet import (  # noqa: E402
    ConvFeatureExtractor,
    FineTunedConvClassifier,
    FineTunedConvRegressor,
    clear_memory_cache,
)
from skconvnet.datasets import fetch_food_photos  # noqa: E402


def rows(task, size):
    common = dict(base="efficientnet_lite0", weights="imagenet", input_size=size)
    recipe = dict(common, head_units=256, dropout=0.5, warmup_epochs=6, epochs=4,
                  warmup_learning_rate=1e-3, batch_size=32, cache="memory", random_state=0)
    features = ConvFeatureExtractor(**common, cache="memory", random_state=0)
    if task == "moisture":
        return {
            "linear probe: features + StandardScaler + RidgeCV": lambda: make_pipeline(
                features, StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 11))),
            "FineTunedConvRegressor, head only (unfreeze=0)": lambda: FineTunedConvRegressor(
                **recipe, unfreeze=0),
            "FineTunedConvRegressor, unfreeze=4, learning_rate=1e-4": lambda: (
                FineTunedConvRegressor(**recipe, unfreeze=4, learning_rate=1e-4)),
        }
    return {
        "linear probe: features + StandardScaler + OneVsRest(LogisticRegression(C=0.1))":
            lambda: make_pipeline(features, StandardScaler(), OneVsRestClassifier(
                LogisticRegression(C=0.1, max_iter=2000))),
        "FineTunedConvClassifier (multi-label), head only (unfreeze=0)":
            lambda: FineTunedConvClassifier(**recipe, unfreeze=0),
        "FineTunedConvClassifier (multi-label), unfreeze=4, learning_rate=1e-4":
            lambda: FineTunedConvClassifier(**recipe, unfreeze=4, learning_rate=1e-4),
    }


def f1_samples(y, predicted):
    # Almost half the photos have none of the tags: predicting none for them is right (1).
    return f1_score(y, predicted, average="samples", zero_division=1)


def subset_accuracy(y, predicted):
    return float(np.mean((y == predicted).all(axis=1)))


METRICS = {
    "moisture": (("R^2", r2_score), ("MAE (g/100 g)", mean_absolute_error)),
    "nutrients": (("F1 (samples)", f1_samples), ("subset accuracy", subset_accuracy)),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    for task in ("moisture", "nutrients"):
        paths, y = fetch_food_photos(task)
        paths = np.asarray(paths)
        if args.limit:
            paths, y = paths[:args.limit], y[:args.limit]
        folds = list(KFold(args.folds, shuffle=True, random_state=0).split(paths))
        names = [name for name, _ in METRICS[task]]
        print(f"\n{task}: {len(paths)} photos, {args.folds} folds, EfficientNet-Lite0 @ "
              f"{args.size}")
        print(f"| approach | {' | '.join(names)} | fit (s per fold) |")
        print("|---|" + "---|" * len(names) + "---|")
        for name, make in rows(task, args.size).items():
            scores, seconds = [], []
            for train, test in folds:
                model = make()
                start = time.perf_counter()
                model.fit(list(paths[train]), y[train])
                seconds.append(time.perf_counter() - start)
                predicted = model.predict(list(paths[test]))
                scores.append([metric(y[test], predicted) for _, metric in METRICS[task]])
            scores = np.array(scores)
            cells = " | ".join(f"{m:.3f} +- {s:.3f}" for m, s in
                               zip(scores.mean(axis=0), scores.std(axis=0)))
            print(f"| {name} | {cells} | {np.mean(seconds):.1f} |", flush=True)
        clear_memory_cache()


if __name__ == "__main__":
    main()
