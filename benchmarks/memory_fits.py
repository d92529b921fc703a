"""Peak memory over consecutive fits of FineTunedConvClassifier in one process.

Prints one row per fit: resident set size now and the process's peak so far.
Usage: python benchmarks/memory_fits.py [--fits 20] [--base mobilenetv2] [--size 64]
"""

import argparse
import gc
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from skconvnet import FineTunedConvClassifier  # noqa: E402
from skconvnet._engine import NETWORK_POOL  # noqa: E402
from skconvnet.testing import make_shapes  # noqa: E402


def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fits", type=int, default=20)
    parser.add_argument("--base", default="mobilenetv2")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    X, y = make_shapes(64, size=args.size)
    clf = FineTunedConvClassifier(args.base, weights=None, input_size=args.size, head_units=16,
                                  warmup_epochs=1, epochs=1, unfreeze=2, batch_size=16,
                                  random_state=0, optimizer="rmsprop", lr_schedule="constant",
                                  train_bn=False)
    print(f"{args.fits} consecutive fits of {args.base} @{args.size}, 64 images, 2 epochs each")
    print("| fit | RSS (MiB) | peak RSS (MiB) | seconds | networks built so far |")
    print("|---|---|---|---|---|")
    rows = []
    for i in range(args.fits):
        start = time.perf_counter()
        clf.fit(X, y)
        gc.collect()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(rss_mib())
        print(f"| {i + 1} | {rows[-1]:.0f} | {peak:.0f} | {time.perf_counter() - start:.1f} | "
              f"{NETWORK_POOL.built} |", flush=True)
    half = len(rows) // 2
    print(f"\nRSS after fit {len(rows)} minus after fit 2 (target <= 100 MiB): "
          f"{rows[-1] - rows[1]:+.0f} MiB; fit {half} to fit {len(rows)}: "
          f"{rows[-1] - rows[half - 1]:+.0f} MiB")


if __name__ == "__main__":
    main()
