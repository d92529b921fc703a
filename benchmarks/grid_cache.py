"""GridSearchCV over unfreeze x learning_rate with the frozen-layer cache on and off.

Same data, same folds, same seeds; prints wall time, best parameters and the mean CV
score of every grid point for both runs.
Usage: python benchmarks/grid_cache.py [--base efficientnet_lite0] [--size 96] [--n 150]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

from skconvnet import FineTunedConvClassifier  # noqa: E402
from skconvnet.caching import clear_memory_cache  # noqa: E402
from skconvnet.datasets import fetch_food_photos  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--n", type=int, default=150, help="photos used (every k-th)")
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    paths, labels = fetch_food_photos("plant-animal")
    step = max(1, len(paths) // args.n)
    paths, labels = paths[::step][: args.n], labels[::step][: args.n]
    grid = {"unfreeze": [0, 3, 6], "learning_rate": [1e-4, 1e-5]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    print(f"GridSearchCV {grid}, cv=3, {args.base} ({args.weights}) @{args.size}, "
          f"{len(paths)} food photos (JPEG paths), warmup_epochs={args.warmup_epochs}, "
          f"epochs={args.epochs}, augment=None")
    results = {}
    for cache in (None, "memory", "folder"):
        clear_memory_cache()
        folder = tempfile.mkdtemp(prefix="skconvnet-cache-") if cache == "folder" else None
        clf = FineTunedConvClassifier(
            args.base, weights=args.weights, input_size=args.size, head_units=64,
            warmup_epochs=args.warmup_epochs, epochs=args.epochs,
            warmup_learning_rate=1e-3, batch_size=32, random_state=0,
            cache=folder if cache == "folder" else cache)
        start = time.perf_counter()
        search = GridSearchCV(clf, grid, cv=cv).fit(paths, labels)
        results[cache] = (time.perf_counter() - start, search)
    base_time = results[None][0]
    print("\n| cache | wall time (s) | speed-up | best params | best mean CV score |")
    print("|---|---|---|---|---|")
    for cache, (seconds, search) in results.items():
        print(f"| {cache} | {seconds:.0f} | {base_time / seconds:.1f}x | {search.best_params_} | "
              f"{search.best_score_:.3f} |")
    print("\n| grid point | " + " | ".join(f"cache={c}" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    first = results[None][1].cv_results_
    for i, params in enumerate(first["params"]):
        scores = [f"{r[1].cv_results_['mean_test_score'][i]:.3f}" for r in results.values()]
        print(f"| {params} | " + " | ".join(scores) + " |")
    diffs = [np.abs(r[1].cv_results_["mean_test_score"] - first["mean_test_score"]).max()
             for r in results.values()]
    print(f"\nlargest difference in a mean CV score against cache=None: {max(diffs):.4f}")


if __name__ == "__main__":
    main()
