"""The fine-tuning recipe against the linear probe, on several real sets: an ablation table.

Sets (each on the same held-out folds for every row: StratifiedKFold, shuffled, seed 0):

* ``food``: the food photos, plant vs animal (463 photos);
* ``food-groups``: the same photos, their food group (20 classes, the harder task);
* ``fashion``: a 600-image Fashion-MNIST subset (the first 600 training images),
  a domain far from ImageNet.

Rows: the linear probe (``ConvFeatureExtractor`` + ``StandardScaler`` +
``LogisticRegression(C=0.1)``, the demo's), the seed recipe (``skconvnet.testing.SEED_RECIPE``:
the defaults before issue #18, one constant RMSprop rate per phase, BatchNorm frozen),
``FineTunedConvClassifier`` with its defaults, then fine-tuning every layer with one
ingredient of the defaults changed at a time. Each row prints mean +- std of the held-out
accuracy and the mean wall time per fit (the probe's includes its share of feature
extraction: the cache keeps the features of images another fold extracted).

    python benchmarks/recipe.py --set fashion [--size 96] [--folds 3] [--rows "a;b"]
    python benchmarks/recipe.py --list          # the rows' names
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skconvnet import (  # noqa: E402
    ConvFeatureExtractor,
    FineTunedConvClassifier,
    clear_memory_cache,
    clear_session,
)
from skconvnet.datasets import fetch_fashion_mnist, fetch_food_photos  # noqa: E402
from skconvnet.testing import SEED_RECIPE  # noqa: E402


def load(name, limit=None):
    if name == "fashion":
        images, labels = fetch_fashion_mnist("train")
        n = limit or 600
        return images[:n], labels[:n]
    paths, labels = fetch_food_photos("groups" if name == "food-groups" else "plant-animal")
    paths, labels = np.asarray(paths), np.asarray(labels)
    if limit:
        keep = np.random.default_rng(0).permutation(len(paths))[:limit]
        paths, labels = paths[keep], labels[keep]
    return paths, labels


def rows(base, size):
    common = dict(base=base, input_size=size, random_state=0)
    default = FineTunedConvClassifier(**common)

    def variant(**changes):
        return lambda: clone(default).set_params(**changes)

    # Today's recipe (before the recipe parameters): its defaults, at this size.
    seed = {**SEED_RECIPE, "input_size": size}
    return {
        "linear probe": lambda: make_pipeline(
            ConvFeatureExtractor(**common, cache="memory"), StandardScaler(),
            LogisticRegression(C=0.1, max_iter=3000)),
        "seed recipe (the old defaults), head only": variant(**seed),
        "seed recipe, unfreeze='all'": variant(**{**seed, "unfreeze": "all"}),
        "defaults": lambda: clone(default),
        "defaults, tta=2": variant(tta=2),
        "defaults, unfreeze=0 (the warm-up alone)": variant(unfreeze=0),
        "defaults, unfreeze='all'": variant(unfreeze="all"),
        "unfreeze='all', optimizer='rmsprop'": variant(unfreeze="all", optimizer="rmsprop"),
        "unfreeze='all', lr_schedule='constant'": variant(unfreeze="all",
                                                          lr_schedule="constant"),
        "unfreeze='all', train_bn=False": variant(unfreeze="all", train_bn=False),
        "unfreeze='all', label_smoothing=0": variant(unfreeze="all", label_smoothing=0.0),
        "unfreeze='all', short warm-up (3 epochs at 1e-3)": variant(
            unfreeze="all", warmup_epochs=3, warmup_learning_rate=1e-3),
        "unfreeze='all', learning_rate=1e-3": variant(unfreeze="all", learning_rate=1e-3),
        "unfreeze='all', mixup=0.2": variant(unfreeze="all", mixup=0.2),
        "defaults, unfreeze=0, tta=2": variant(unfreeze=0, tta=2),
        "defaults, unfreeze='all', tta=2": variant(unfreeze="all", tta=2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="fashion", choices=("food", "food-groups", "fashion"))
    parser.add_argument("--base", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=None,
                        help="input size (default: 96 for fashion, the base's 224 otherwise)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rows", default=None,
                        help="row names separated by semicolons (default: all)")
    parser.add_argument("--set-params", default=None,
                        help="JSON of parameters set on every fine-tuned row (exploration)")
    parser.add_argument("--json", default=None, help="append each row's result to this file")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    size = args.size or (96 if args.set == "fashion" else 224)
    table = rows(args.base, size)
    if args.list:
        print("\n".join(table))
        return
    chosen = list(table) if args.rows is None else [name.strip() for name in args.rows.split(";")]
    extra = json.loads(args.set_params) if args.set_params else {}
    X, y = load(args.set, args.limit)
    splitter = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    folds = list(splitter.split(np.zeros(len(y)), y))
    cpu = "with" if "avx512_bf16" in open("/proc/cpuinfo").read() else "without"
    print(f"# {args.set}: {len(y)} images, {len(set(y.tolist()))} classes, {args.base} @{size}, "
          f"{args.folds} folds; {os.cpu_count()} CPUs {cpu} avx512_bf16, "
          f"{platform.python_version()}; extra settings {extra or 'none'}")
    print("| row | accuracy | s per fit |\n|---|---|---|")
    for name in chosen:
        scores, seconds, chosen_depths, depth_scores = [], [], [], []
        for train, test in folds:
            estimator = table[name]()
            if extra and isinstance(estimator, FineTunedConvClassifier):
                estimator.set_params(**extra)
            start = time.perf_counter()
            estimator.fit(X[train], y[train])
            seconds.append(time.perf_counter() - start)
            scores.append(float(np.mean(estimator.predict(X[test]) == y[test])))
            # What unfreeze="auto" chose in this fold, and the scores it chose from.
            chosen_depths.append(getattr(estimator, "unfreeze_", None))
            depth_scores.append(getattr(estimator, "unfreeze_scores_", None))
            clear_session()
        clear_memory_cache()
        print(f"| {name} | {np.mean(scores):.3f} +- {np.std(scores):.3f} | "
              f"{np.mean(seconds):.1f} |", flush=True)
        if args.json:
            with open(args.json, "a") as out:
                out.write(json.dumps(dict(set=args.set, base=args.base, size=size, row=name,
                                          extra=extra,
                                          scores=scores, seconds=seconds,
                                          unfreeze=chosen_depths,
                                          unfreeze_scores=depth_scores), default=str) + "\n")


if __name__ == "__main__":
    main()
