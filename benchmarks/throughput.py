"""Feature-extraction throughput: skconvnet on JPEG files vs the bare model on preloaded arrays,
and bfloat16 vs float32 (speed, cosine similarity, linear-probe accuracy).

Targets (issue #6):
1. ``ConvFeatureExtractor.transform`` on JPEG paths >= 90% of the bare compiled model's img/s
   on the same images preloaded as arrays (VGG16 @150, MobileNetV2 @224);
3. ``precision="bfloat16"`` >= 1.7x the float32 img/s, cosine similarity >= 0.99, probe
   accuracy within 1 point.

Run:  python benchmarks/throughput.py [--images 320] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

BATCH = 32


def best_of(repeats, run):
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    return min(times)


def bare_model(base, size):
    """What a user writes by hand: the Keras application, pooled, with its preprocess_input."""
    import keras

    from skconvnet import get_base_spec

    spec = get_base_spec(base)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Lambda(spec.preprocess_input)(inputs) if spec.preprocess_input else inputs
    x = spec.builder(include_top=False, weights=None, input_shape=(size, size, 3))(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def throughput_table(paths, repeats):
    from skconvnet import ConvFeatureExtractor
    from skconvnet.images import image_source

    rows = []
    for base, size in (("vgg16", 150), ("mobilenetv2", 224)):
        arrays, _ = image_source(paths, size).load(slice(None))  # preloaded, resized
        model = bare_model(base, size)
        model.predict(arrays[:BATCH], batch_size=BATCH, verbose=0)  # trace once

        def bare_predict():
            model.predict(arrays, batch_size=BATCH, verbose=0)

        def bare_batches():
            for start in range(0, len(arrays), BATCH):
                model.predict_on_batch(arrays[start:start + BATCH])

        t_predict = best_of(repeats, bare_predict)
        t_batches = best_of(repeats, bare_batches)
        t_bare = min(t_predict, t_batches)
        extractor = ConvFeatureExtractor(base, weights=None, input_size=size, random_state=0,
                                         batch_size=BATCH).fit(paths)
        extractor.transform(paths[:BATCH])  # trace once
        t_files = best_of(repeats, lambda: extractor.transform(paths))
        t_arrays = best_of(repeats, lambda: extractor.transform(arrays))
        n = len(paths)
        rows.append((f"{base} @{size}", n / t_predict, n / t_batches, n / t_arrays, n / t_files,
                     t_bare / t_files))
        print(f"  {base}: bare {n / t_bare:.1f} img/s, skconvnet on files {n / t_files:.1f}",
              flush=True)
    return rows


def precision_table(paths, labels, repeats):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skconvnet import ConvFeatureExtractor
    from skconvnet.images import image_source

    rows = []
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    for base, weights, size in (("vgg16", "hed-bsds500", 150),
                                ("efficientnet_lite0", "imagenet", 160),
                                ("mobilenetv2", None, 224)):
        arrays, _ = image_source(paths, size).load(slice(None))
        result = {}
        for precision in ("float32", "bfloat16"):
            extractor = ConvFeatureExtractor(base, weights=weights, input_size=size,
                                             precision=precision, random_state=0,
                                             batch_size=BATCH).fit(arrays[:1])
            extractor.transform(arrays[:BATCH])
            seconds = best_of(repeats, lambda: extractor.transform(arrays))
            features = extractor.transform(arrays)
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            accuracy = cross_val_score(probe, features, labels, cv=cv).mean()
            result[precision] = (len(arrays) / seconds, features, accuracy)
        (f32_speed, f32, f32_acc), (bf_speed, bf, bf_acc) = result["float32"], result["bfloat16"]
        f32, bf = f32.astype(np.float64), bf.astype(np.float64)  # random nets: norms ~1e-11
        cosine = (f32 * bf).sum(1) / np.maximum(
            np.linalg.norm(f32, axis=1) * np.linalg.norm(bf, axis=1), np.finfo(np.float64).tiny)
        rows.append((f"{base} @{size} ({weights or 'random'})", f32_speed, bf_speed,
                     bf_speed / f32_speed, cosine.min(), cosine.mean(), f32_acc, bf_acc))
        print(f"  {base}: float32 {f32_speed:.1f} img/s, bfloat16 {bf_speed:.1f} img/s", flush=True)
    return rows


def bare_vs_skconvnet_bf16(paths, repeats, base="vgg16", size=150):
    """bfloat16/float32 speed ratio of the bare Keras model and of skconvnet, same run.

    The bare model is what a Keras user writes: the application built under the
    ``mixed_bfloat16`` policy (or float32), its preprocess_input, average pooling,
    ``predict`` on preloaded arrays. skconvnet's extractor runs on the same arrays.
    """
    import keras

    from skconvnet import ConvFeatureExtractor
    from skconvnet.images import image_source

    arrays, _ = image_source(paths, size).load(slice(None))
    speeds = {}
    for precision in ("float32", "bfloat16"):
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        try:
            model = bare_model(base, size)
        finally:
            keras.config.set_dtype_policy(policy)
        model.predict(arrays[:BATCH], batch_size=BATCH, verbose=0)
        speeds["bare", precision] = len(arrays) / best_of(
            repeats, lambda: model.predict(arrays, batch_size=BATCH, verbose=0))
        extractor = ConvFeatureExtractor(base, weights=None, input_size=size, random_state=0,
                                         batch_size=BATCH, precision=precision).fit(arrays[:1])
        extractor.transform(arrays[:BATCH])
        speeds["skconvnet", precision] = len(arrays) / best_of(
            repeats, lambda: extractor.transform(arrays))
        print(f"  {precision}: bare {speeds['bare', precision]:.1f} img/s, skconvnet "
              f"{speeds['skconvnet', precision]:.1f} img/s", flush=True)
    return speeds


# VGG16's convolutional base at 224 x 224: 15.35 G multiply-adds per image (Simonyan &
# Zisserman; keras' count of the 13 convolutions), i.e. about 30.7 GFLOP.
VGG16_224_GFLOP = 30.7


def gpu_table(n_images, batch_size, peak_tflops):
    """VGG16 @224, float32 and bfloat16, on whatever accelerator the backend sees."""
    import keras

    from skconvnet import ConvFeatureExtractor

    arrays = np.random.default_rng(0).integers(0, 256, (n_images, 224, 224, 3)).astype("uint8")
    print(f"backend {keras.backend.backend()}, devices: {_devices()}", flush=True)
    rows = []
    for precision in ("float32", "bfloat16"):
        extractor = ConvFeatureExtractor("vgg16", weights=None, input_size=224, random_state=0,
                                         batch_size=batch_size, precision=precision)
        extractor.fit(arrays[:1]).transform(arrays[:batch_size])  # trace once
        seconds = best_of(2, lambda: extractor.transform(arrays))
        speed = n_images / seconds
        tflops = speed * VGG16_224_GFLOP / 1000
        rows.append((precision, speed, tflops, tflops / peak_tflops if peak_tflops else None))
    print(f"\nVGG16 @224, random weights, batch {batch_size}, {n_images} images in memory:\n")
    print("| precision | img/s | achieved TFLOP/s | share of the matrix peak |")
    print("|---|---|---|---|")
    for precision, speed, tflops, share in rows:
        print(f"| {precision} | {speed:.0f} | {tflops:.1f} | "
              f"{'-' if share is None else f'{share:.0%} of {peak_tflops:g}'} |")


def _devices():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if keras.backend.backend() == "torch":
        import torch

        return [torch.cuda.get_device_name(0)] if torch.cuda.is_available() else ["cpu"]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320,
                        help="JPEG files for the throughput table (food photos)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["throughput", "precision", "bf16-vs-bare"])
    parser.add_argument("--gpu", action="store_true",
                        help="only the GPU table: VGG16 @224, float32 vs bfloat16, batch 256 "
                             "(run with KERAS_BACKEND=jax where there is no TensorFlow)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the accelerator's dense bf16 matrix peak, for the last column "
                             "(H100 SXM: 989)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.gpu:
        gpu_table(args.images, 256, args.peak_tflops)  # on a GPU: --images 4096
        return
    from skconvnet.datasets import fetch_food_photos

    paths, labels = fetch_food_photos("plant-animal")
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}, batch {BATCH}; "
          f"`python benchmarks/throughput.py --images {args.images} --repeats {args.repeats}`")
    if "throughput" not in args.skip:
        rows = throughput_table(paths[:args.images], args.repeats)
        print(f"\n{args.images} food-photo JPEGs (about 307x172), random weights, img/s "
              "(best of {args.repeats}):\n".replace("{args.repeats}", str(args.repeats)))
        print("| base @ size | bare `model.predict` (arrays) | bare `predict_on_batch` loop "
              "(arrays) | skconvnet `transform` (arrays) | skconvnet `transform` (JPEG paths) | "
              "paths vs best bare (target >= 0.90) |")
        print("|---|---|---|---|---|---|")
        for name, predict, batches, arrays, files, ratio in rows:
            print(f"| {name} | {predict:.1f} | {batches:.1f} | {arrays:.1f} | {files:.1f} | "
                  f"{ratio:.2f} |")
    if "precision" not in args.skip:
        rows = precision_table(paths, labels, args.repeats)
        print(f"\nAll {len(paths)} food photos, preloaded arrays, img/s; probe: 5-fold "
              "StandardScaler + LogisticRegression(C=0.1), plant vs animal:\n")
        print("| base @ size (weights) | float32 img/s | bfloat16 img/s | speed-up (target >= 1.7) "
              "| cosine min / mean (target >= 0.99) | probe float32 | probe bfloat16 |")
        print("|---|---|---|---|---|---|---|")
        for name, f32, bf, ratio, cos_min, cos_mean, acc32, acc16 in rows:
            print(f"| {name} | {f32:.1f} | {bf:.1f} | {ratio:.2f}x | {cos_min:.4f} / "
                  f"{cos_mean:.4f} | {acc32:.3f} | {acc16:.3f} |")
    if "bf16-vs-bare" not in args.skip:
        flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
        units = "avx512_bf16" in flags or "amx_bf16" in flags
        print(f"\nbfloat16 vs float32, VGG16 @150 (random weights), {min(len(paths), 320)} photos "
              f"as preloaded arrays; this CPU {'has' if units else 'has no'} bfloat16 units:\n")
        speeds = bare_vs_skconvnet_bf16(paths[:320], args.repeats)
        print("| model | float32 img/s | bfloat16 img/s | bf16/fp32 |")
        print("|---|---|---|---|")
        for who in ("bare", "skconvnet"):
            f32, bf16 = speeds[who, "float32"], speeds[who, "bfloat16"]
            print(f"| {who} | {f32:.1f} | {bf16:.1f} | {bf16 / f32:.2f} |")
        ratio = ((speeds["skconvnet", "bfloat16"] / speeds["skconvnet", "float32"])
                 / (speeds["bare", "bfloat16"] / speeds["bare", "float32"]))
        print(f"skconvnet's ratio / the bare model's ratio: {ratio:.2f} (target >= 0.90)")


if __name__ == "__main__":
    main()
