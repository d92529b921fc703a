#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md ("6. GPU"), on a machine with a CUDA GPU, JAX and
# PyTorch and no TensorFlow (the machines we can borrow): the engine's, the extractor's and
# the classifier's quick tests on the GPU under JAX (the first two under PyTorch too), VGG16
# @224 float32 vs bfloat16 through ConvFeatureExtractor on both backends, and the issue #6
# grid with the frozen-layer cache off and on under JAX. Each step has its own time limit,
# so one that hangs cannot take the others with it. About 8 minutes on an H100.
# Usage: bash benchmarks/gpu.sh        (from the repository root; skconvnet importable)
set -u
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}

step() {  # step SECONDS BACKEND COMMAND...: one timed, time-limited step
    local limit=$1 backend=$2
    shift 2
    echo
    echo "=== KERAS_BACKEND=$backend $* (limit ${limit} s) ==="
    local start=$SECONDS
    KERAS_BACKEND=$backend timeout "$limit" "$@"
    echo "=== exit $?, $((SECONDS - start)) s ==="
}

date -u
nvidia-smi -L
KERAS_BACKEND=jax "$PYTHON" -c "import sys, keras, sklearn, numpy; print(sys.version.split()[0], 'keras', \
keras.__version__, 'scikit-learn', sklearn.__version__, 'numpy', numpy.__version__)"
"$PYTHON" -c "import tensorflow" 2>/dev/null && echo "TensorFlow is installed here" \
    || echo "no TensorFlow here"

# Test processes share the GPU: each takes memory as it needs it, not 75% up front (the
# benchmarks below run with JAX's default preallocation, as they were measured).
XDIST=$("$PYTHON" -c "import xdist" 2>/dev/null && echo "-n 6")
XLA_PYTHON_CLIENT_PREALLOCATE=false step 200 jax "$PYTHON" -m pytest -q -p no:cacheprovider $XDIST tests/test_engine.py \
    tests/test_finetune.py tests/test_extraction.py -m "not slow"
step 120 torch "$PYTHON" -m pytest -q -p no:cacheprovider $XDIST tests/test_engine.py \
    tests/test_extraction.py -m "not slow"
step 100 jax "$PYTHON" benchmarks/throughput.py --gpu --images 4096 --peak-tflops 989
step 80 torch "$PYTHON" benchmarks/throughput.py --gpu --images 4096 --peak-tflops 989
step 150 jax "$PYTHON" benchmarks/grid_cache.py --caches none memory
