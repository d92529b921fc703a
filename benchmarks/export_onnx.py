"""onnxruntime against skconvnet on the same CPU: img/s of an exported extractor and pipeline.

Both sides get the same uint8 images already at the model's size, in batches of 32, best of
``--repeats`` runs; onnxruntime uses its default CPU threads, Keras its own. The outputs are
compared too (largest absolute feature difference, label agreement).

Run:  python benchmarks/export_onnx.py [--base efficientnet_lite0] [--size 224] [--images 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from throughput import BATCH, best_of  # benchmarks/throughput.py, beside this script


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import keras
    import onnxruntime
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skconvnet import ConvFeatureExtractor, export
    from skconvnet.testing import photo_patches

    X, y, _ = photo_patches(n_per_photo=args.images // 2, size=args.size, seed=0)
    weights = None if args.weights == "none" else args.weights
    extractor = ConvFeatureExtractor(args.base, weights=weights, input_size=args.size,
                                     batch_size=BATCH, random_state=0).fit(X)
    pipe = make_pipeline(ConvFeatureExtractor(args.base, weights=weights, input_size=args.size,
                                              batch_size=BATCH, random_state=0),
                         StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    folder = Path(tempfile.mkdtemp())
    tick = time.perf_counter()
    extractor_file = export(extractor, folder / "extractor.onnx")
    export_seconds = time.perf_counter() - tick
    pipe_file = export(pipe, folder / "pipeline.onnx")

    def onnx_runner(path):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda: [session.run(None, {"images": X[i:i + BATCH]})
                        for i in range(0, len(X), BATCH)]

    extractor.transform(X[:BATCH])  # warm up: trace the predict function once
    rows = [
        ("skconvnet ConvFeatureExtractor.transform", best_of(args.repeats,
                                                             lambda: extractor.transform(X))),
        ("onnxruntime, exported extractor", best_of(args.repeats, onnx_runner(extractor_file))),
        ("skconvnet pipeline.predict_proba (extractor + StandardScaler + LogisticRegression)",
         best_of(args.repeats, lambda: pipe.predict_proba(X))),
        ("onnxruntime, exported pipeline", best_of(args.repeats, onnx_runner(pipe_file))),
    ]
    session = onnxruntime.InferenceSession(str(extractor_file))
    (features,) = session.run(None, {"images": X})
    labels, _ = onnxruntime.InferenceSession(str(pipe_file)).run(None, {"images": X})

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores "
          f"({'with' if 'avx512_bf16' in flags else 'without'} AVX-512 BF16), "
          f"{platform.machine()}, Keras {keras.__version__} on {keras.backend.backend()}, "
          f"onnxruntime {onnxruntime.__version__}; {args.base} ({args.weights}) @{args.size}, "
          f"{len(X)} images, batch {BATCH}, best of {args.repeats}; export took "
          f"{export_seconds:.1f} s ({extractor_file.stat().st_size / 1e6:.1f} MB)\n")
    print("| run | img/s | vs skconvnet |")
    print("|---|---|---|")
    for i, (name, seconds) in enumerate(rows):
        reference = rows[i - i % 2][1]
        print(f"| {name} | {len(X) / seconds:.1f} | {reference / seconds:.2f}x |")
    print(f"\nlargest feature difference: {np.abs(features - extractor.transform(X)).max():.2e}; "
          f"same labels: {bool((labels == pipe.predict(X)).all())}")


if __name__ == "__main__":
    main()
