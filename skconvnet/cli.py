"""The ``skconvnet`` command line: ``demo`` (the main job), ``bases``, ``inspect``, ``extract``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .demo import DemoConfig, run_demo
from .exceptions import ImageReadError, InvalidParameterError
from .extraction import ConvFeatureExtractor
from .images import IMAGE_EXTENSIONS, load_image_folder
from .inspection import inspect_base
from .registry import get_base_spec, list_bases

__all__ = ["main"]


def _demo(args):
    weights = None if args.weights in ("none", "None") else args.weights
    config = DemoConfig(
        base=args.base, weights=weights, layer=_layer_arg(args.layer),
        input_size=args.input_size, folds=args.folds, limit=args.limit,
        warmup_epochs=args.warmup_epochs, epochs=args.epochs, output_dir=args.output_dir,
        plots=not args.no_plots, verbose=args.verbose, approaches=tuple(args.only),
    )
    result = run_demo(config, log=lambda line: print(line, flush=True))
    print()
    print(result["table"])
    print(f"\n{len(result['rows'])} approaches in {result['seconds']:.0f} s")
    return 0


def _bases(args):
    print("| base | default size | min size | feature width | preprocessing | named weights |")
    print("|---|---|---|---|---|---|")
    for name in list_bases():
        spec = get_base_spec(name)
        print(f"| {name} | {spec.default_size} | {spec.min_size} | {spec.feature_width} | "
              f"{spec.preprocessing} | {', '.join(spec.weight_names)} |")
    return 0


def _inspect(args):
    print(inspect_base(args.base, layer=_layer_arg(args.layer), input_size=args.input_size))
    return 0


def _layer_arg(layer):
    """A ``--layer`` value: an int index when it looks like one, else a layer name."""
    if layer is None:
        return None
    try:
        return int(layer)
    except ValueError:
        return layer


def _folder_images(root):
    """Images of ``root``: its class sub-folders (labelled) and loose files (label "")."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder of images.")
    loose = sorted(str(p) for p in root.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    try:
        paths, labels = load_image_folder(root)
    except ValueError:
        if not loose:
            raise
        paths, labels = [], np.array([], dtype=str)
    return loose + list(paths), np.concatenate([np.full(len(loose), ""), labels]).astype(str)


def _extract(args):
    paths, labels = _folder_images(args.folder)
    weights = None if args.weights in ("none", "None") else args.weights
    extractor = ConvFeatureExtractor(
        args.base, weights=weights, layer=_layer_arg(args.layer), pooling=args.pooling,
        input_size=args.input_size, batch_size=args.batch_size, on_error=args.on_error,
        random_state=0, verbose=args.verbose,
    )
    start = time.perf_counter()
    features = extractor.fit_transform(paths)
    elapsed = time.perf_counter() - start
    failed = list(getattr(extractor, "failed_files_", []))
    # np.savez adds ".npz" to a name without it: say the name it really writes.
    output = args.output if args.output.endswith(".npz") else args.output + ".npz"
    np.savez(output, paths=np.array(paths), labels=labels, features=features,
             failed=np.array(failed, dtype=str))
    print(f"{len(paths)} images -> features {features.shape} in {elapsed:.1f} s "
          f"({len(paths) / max(elapsed, 1e-9):.1f} img/s); {len(failed)} unreadable; "
          f"saved to {output}")
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
    demo.add_argument("--folds", type=int, default=3,
                      help="held-out folds (stratified); each approach is fitted once per fold")
    demo.add_argument("--limit", type=int, default=None,
                      help="use a random subset of N photos (quicker)")
    demo.add_argument("--warmup-epochs", type=int, default=DemoConfig.warmup_epochs,
                      help="warm-up epochs of the frozen and searched rows")
    demo.add_argument("--epochs", type=int, default=DemoConfig.epochs,
                      help="fine-tuning epochs of the searched row")
    demo.add_argument("--only", nargs="+", default=list(DemoConfig.approaches),
                      choices=list(DemoConfig.approaches), help="run only these approaches")
    demo.add_argument("--output-dir", default=".", help="where the PNG pictures go")
    demo.add_argument("--no-plots", action="store_true", help="do not draw the pictures")
    demo.add_argument("--verbose", type=int, default=1)
    demo.set_defaults(run=_demo)
    bases = commands.add_parser("bases", help="list the registered convolutional bases")
    bases.set_defaults(run=_bases)

    inspect = commands.add_parser(
        "inspect", help="the layers of a base: shapes, parameters, blocks, unfreeze values")
    inspect.add_argument("base", help="a registered base (see 'skconvnet bases')")
    inspect.add_argument("--layer", default=None, help="cut the base at this layer first")
    inspect.add_argument("--input-size", type=int, default=None)
    inspect.set_defaults(run=_inspect)

    extract = commands.add_parser(
        "extract", help="features for a folder of images, saved as .npz "
        "(paths, labels from sub-folders, features)")
    extract.add_argument("folder", help="images, in one sub-folder per class or loose")
    extract.add_argument("-o", "--output", required=True, help="the .npz file to write")
    extract.add_argument("--base", default="efficientnet_lite0")
    extract.add_argument("--weights", default="imagenet",
                         help="imagenet, a named offline source, a weights file, or none")
    extract.add_argument("--layer", default=None, help="cut the base at this layer")
    extract.add_argument("--pooling", default="avg", choices=["avg", "max", "flatten"])
    extract.add_argument("--input-size", type=int, default=None)
    extract.add_argument("--batch-size", type=int, default=32)
    extract.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                         help="skip: unreadable files give NaN rows, listed in 'failed'")
    extract.add_argument("--verbose", type=int, default=1)
    extract.set_defaults(run=_extract)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (InvalidParameterError, ImageReadError, ValueError, OSError) as exc:
        # A user's mistake (bad name, folder, file): one line, no traceback.
        print(f"skconvnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
