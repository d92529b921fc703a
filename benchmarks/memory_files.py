"""Peak memory while transforming 20,000 image files (Fashion-MNIST written out as PNGs).

The model's own footprint is measured first (peak RSS after building it and running one
batch); then every file goes through ``ConvFeatureExtractor.transform``. Target (issue #6):
the peak stays within 1 GiB of the footprint.

Run:  python benchmarks/memory_files.py [--n 20000] [--base mobilenetv2] [--size 64]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MEASURE = """
import resource, sys, time, numpy as np
from skconvnet import ConvFeatureExtractor
paths = open(sys.argv[1]).read().split("\\n")
extractor = ConvFeatureExtractor(sys.argv[2], weights=None, input_size=int(sys.argv[3]),
                                 random_state=0).fit(paths[:1])
extractor.transform(paths[:32])
footprint = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tick = time.perf_counter()
features = extractor.transform(paths)
seconds = time.perf_counter() - tick
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(footprint, peak, seconds, features.shape[0], features.shape[1], features.nbytes / 2**20)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--base", default="mobilenetv2")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    from PIL import Image

    from skconvnet.datasets import fetch_fashion_mnist

    images, _ = fetch_fashion_mnist("all")
    with tempfile.TemporaryDirectory() as folder:
        tick = time.perf_counter()
        paths = []
        for i, image in enumerate(images[: args.n]):
            path = os.path.join(folder, f"{i:05d}.png")
            Image.fromarray(image).save(path)
            paths.append(path)
        written = time.perf_counter() - tick
        size_mib = sum(os.path.getsize(p) for p in paths) / 2**20
        list_file = os.path.join(folder, "paths.txt")
        with open(list_file, "w") as handle:
            handle.write("\n".join(paths))
        result = subprocess.run([sys.executable, "-c", MEASURE, list_file, args.base,
                                 str(args.size)], capture_output=True, text=True, check=True)
    footprint, peak, seconds, n, width, features_mib = map(float, result.stdout.split()[-6:])
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores; `python "
          f"benchmarks/memory_files.py --n {args.n} --base {args.base} --size {args.size}`\n")
    print(f"{int(n)} Fashion-MNIST PNG files ({size_mib:.0f} MiB on disk, written in "
          f"{written:.0f} s), {args.base} @{args.size}, random weights, batch 32:\n")
    print("| model footprint, peak RSS (MiB) | peak RSS during transform (MiB) | growth (MiB) "
          "| of which the returned features (MiB) | target | img/s |")
    print("|---|---|---|---|---|---|")
    print(f"| {footprint:.0f} | {peak:.0f} | {peak - footprint:.0f} | {features_mib:.0f} | "
          f"<= 1024 | {n / seconds:.0f} |")


if __name__ == "__main__":
    main()
