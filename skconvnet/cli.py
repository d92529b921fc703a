"""The ``skconvnet`` command line: ``demo`` (the main job) and ``bases``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


def _demo(args):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .datasets import fetch_food_photos
    from .extraction import ConvFeatureExtractor
    from .images import image_source

    print("Fetching the food photos (task: plant vs animal) ...", flush=True)
    paths, labels = fetch_food_photos("plant-animal")
    if args.limit:
        paths, labels = paths[: args.limit], labels[: args.limit]
    names, counts = np.unique(labels, return_counts=True)
    print(f"{len(paths)} unique photos: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts)))
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)

    def probe():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))

    rows = []

    def run(name, make_features):
        print(f"- {name} ...", flush=True)
        start = time.perf_counter()
        features = make_features()
        extract = time.perf_counter() - start
        result = cross_validate(probe(), features, labels, cv=cv)
        rows.append((name, result["test_score"], extract + result["fit_time"].mean(),
                     result["score_time"].mean()))

    def raw_pixels():
        batch, _ = image_source(paths, 32).load(slice(None))
        return batch.reshape(len(batch), -1) / 255.0

    run("raw 32x32 pixels + LogisticRegression", raw_pixels)
    for weights in (None, args.weights):
        label = "random weights" if weights is None else f"weights={weights!r}"
        run(f"{args.base} ({label}) features + LogisticRegression",
            lambda w=weights: ConvFeatureExtractor(
                args.base, weights=w, layer=args.layer, input_size=args.input_size,
                random_state=0, verbose=args.verbose,
            ).fit_transform(paths))
    print()
    print(f"| approach | accuracy ({args.folds}-fold, mean +- std) | extract + fit (s) | "
          "probe predict (s) |")
    print("|---|---|---|---|")
    for name, scores, fit_time, predict_time in rows:
        print(f"| {name} | {scores.mean():.3f} +- {scores.std():.3f} | {fit_time:.1f} | "
              f"{predict_time:.3f} |")
    return 0


def _bases(args):
    from .registry import get_base_spec, list_bases

    print("| base | default size | min size | feature width | preprocessing | named weights |")
    print("|---|---|---|---|---|---|")
    for name in list_bases():
        spec = get_base_spec(name)
        print(f"| {name} | {spec.default_size} | {spec.min_size} | {spec.feature_width} | "
              f"{spec.preprocessing} | {', '.join(spec.weight_names)} |")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="skconvnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="the main job: pretrained features vs raw pixels on real food photos")
    demo.add_argument("--base", default="efficientnet_lite0")
    demo.add_argument("--weights", default="imagenet",
                      help="pretrained weights of the base (e.g. hed-bsds500 for vgg16)")
    demo.add_argument("--layer", default=None, help="cut the base at this layer")
    demo.add_argument("--input-size", type=int, default=160)
    demo.add_argument("--folds", type=int, default=5)
    demo.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    demo.add_argument("--verbose", type=int, default=1)
    demo.set_defaults(run=_demo)
    bases = commands.add_parser("bases", help="list the registered convolutional bases")
    bases.set_defaults(run=_bases)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
