"""GridSearchCV over unfreeze x learning_rate with the frozen-layer cache on and off.

Same data, same folds, same seeds; prints wall time, best parameters, and the mean CV
score and mean fit time of every grid point for each run. First it prints the compute
bound: how much of the grid's arithmetic (multiply-adds of the conv and dense layers) the
cache can save at all, given that the unfrozen top still trains forward and backward.
Usage: python benchmarks/grid_cache.py [--base efficientnet_lite0] [--weights imagenet]
       [--size 96] [--n 150] [--caches none memory folder]
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
from skconvnet.networks import build_base, weighted_layers  # noqa: E402
from skconvnet.registry import get_base_spec  # noqa: E402


def layer_flops(layer):
    """Multiply-adds x 2 of one image through a conv or dense layer (0 for other layers)."""
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        h, w, c = layer.output.shape[1:]
        kh, kw = layer.kernel_size
        return 2 * h * w * c * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        h, w, c = layer.output.shape[1:]
        kh, kw, c_in, _ = layer.kernel.shape
        return 2 * h * w * c * kh * kw * c_in
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape))
    return 0


def compute_bound(base_name, size, unfreeze_values, warmup_epochs, epochs):
    """Per-unfreeze arithmetic of an uncached and a cached fit, in full forward passes.

    Uncached: every epoch runs the whole base forward, and phase 2 also runs the top
    backward (about twice its forward). Cached: the warm-up runs the top once over
    the bottom's outputs, phase 2 runs the top forward and backward each epoch; the
    bottom's single pass per image is left out, so the bound is an upper one.
    """
    base = build_base(get_base_spec(base_name), None, size)
    flops = [layer_flops(layer) for layer in base.layers]
    full = sum(flops)
    weighted = weighted_layers(base)
    rows = []
    for unfreeze in unfreeze_values:
        top = 0 if unfreeze == 0 else sum(flops[weighted[-unfreeze]:]) / full
        phase2 = epochs if unfreeze else 0
        uncached = warmup_epochs + phase2 * (1 + 2 * top)
        cached = top + phase2 * 3 * top
        rows.append((unfreeze, top, uncached, cached))
    return full, rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--n", type=int, default=150, help="photos used (every k-th)")
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--caches", nargs="+", default=["none", "memory", "folder"],
                        choices=["none", "memory", "folder"],
                        help="which runs to make (the first is the reference)")
    parser.add_argument("--bound-only", action="store_true",
                        help="print the compute bound and stop")
    args = parser.parse_args()
    paths, labels = fetch_food_photos("plant-animal")
    step = max(1, len(paths) // args.n)
    paths, labels = paths[::step][: args.n], labels[::step][: args.n]
    grid = {"unfreeze": [0, 3, 6], "learning_rate": [1e-4, 1e-5]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    print(f"GridSearchCV {grid}, cv=3, {args.base} ({args.weights}) @{args.size}, "
          f"{len(paths)} food photos (JPEG paths), warmup_epochs={args.warmup_epochs}, "
          f"epochs={args.epochs}, augment=None")
    full, rows = compute_bound(args.base, args.size, grid["unfreeze"], args.warmup_epochs,
                               args.epochs)
    print(f"\nCompute bound ({full / 1e9:.1f} GFLOP per image through the whole base):")
    print("| unfreeze | top's share of the base's FLOPs | uncached fit (full passes per image) "
          "| cached fit (full passes per image) |")
    print("|---|---|---|---|")
    for unfreeze, top, uncached, cached in rows:
        print(f"| {unfreeze} | {top:.2f} | {uncached:.1f} | {cached:.1f} |")
    bound = sum(r[2] for r in rows) / sum(r[3] for r in rows)
    print(f"The cache can speed the whole grid up by at most {bound:.1f}x "
          "(arithmetic only, fixed costs per fit left out).")
    if args.bound_only:
        return
    results = {}
    for cache in [None if c == "none" else c for c in args.caches]:
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
    base_time = next(iter(results.values()))[0]
    print("\n| cache | wall time (s) | speed-up | best params | best mean CV score |")
    print("|---|---|---|---|---|")
    for cache, (seconds, search) in results.items():
        print(f"| {cache} | {seconds:.0f} | {base_time / seconds:.1f}x | {search.best_params_} | "
              f"{search.best_score_:.3f} |")
    print("\n| grid point | " + " | ".join(f"cache={c}" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    first = next(iter(results.values()))[1].cv_results_
    for i, params in enumerate(first["params"]):
        scores = [f"{r[1].cv_results_['mean_test_score'][i]:.3f}" for r in results.values()]
        print(f"| {params} | " + " | ".join(scores) + " |")
    print("\n| grid point | " + " | ".join(f"fit s, cache={c}" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, params in enumerate(first["params"]):
        times = [f"{r[1].cv_results_['mean_fit_time'][i]:.1f}" for r in results.values()]
        print(f"| {params} | " + " | ".join(times) + " |")
    diffs = [np.abs(r[1].cv_results_["mean_test_score"] - first["mean_test_score"]).max()
             for r in results.values()]
    print(f"\nlargest difference in a mean CV score against cache={args.caches[0]}: "
          f"{max(diffs):.4f}")


if __name__ == "__main__":
    main()
