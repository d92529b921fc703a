"""Running Keras models on batches of images, and the random seed scope.

Shared by the feature extractor and the classifier: a batch loader runs in a
background thread while the model works on the previous batch, batches keep a
fixed shape (the last one is padded) so the compiled predict step is traced
once, and results go straight into a preallocated output array.
"""

from __future__ import annotations

import contextlib
import random
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

__all__ = ["PRECISIONS", "call_on_arrays", "distribution_scope", "precision_scope",
           "predict_source", "progress_bar", "reinitialize", "seeded"]

#: ``precision`` values and the Keras dtype policy each builds models under.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def precision_scope(precision):
    """Build models under ``precision``'s Keras dtype policy; restore the global policy.

    ``"bfloat16"`` is Keras' ``mixed_bfloat16``: weights stay float32, layers
    compute in bfloat16 (about 2x the float32 speed on CPUs with AVX-512 BF16
    or AMX, and on recent GPUs). The policy is global in Keras, so it is set
    only while layers are created and put back at once.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def distribution_scope(distribution):
    """The scope networks are built, compiled and trained in (none without distribution).

    ``"mirrored"`` is every local device: ``tf.distribute.MirroredStrategy()``
    on TensorFlow, ``keras.distribution.DataParallel()`` on the other backends;
    any other value is an object with a ``scope()`` method.
    """
    if distribution is None:
        return contextlib.nullcontext()
    if distribution == "mirrored":
        if keras.backend.backend() not in ("tensorflow", "jax"):
            raise ValueError(
                "distribution='mirrored' needs the TensorFlow or the JAX backend: Keras' "
                f"distribution API does not support {keras.backend.backend()!r}. Use "
                "distribution=None (one device) or run one worker per GPU (see 'Scaling out')."
            )
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # only on that backend: the others need not have it

            distribution = tf.distribute.MirroredStrategy()
        else:
            distribution = keras.distribution.DataParallel()
    return distribution.scope()


@contextlib.contextmanager
def seeded(seed):
    """Seed Python, NumPy and the Keras backend for the block; restore Python and NumPy.

    ``seed=None`` leaves everything as it is. The backend's global seed (e.g.
    TensorFlow's) cannot be read back, so it stays set after the block.
    """
    if seed is None:
        yield
        return
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def reinitialize(layers, seed):
    """Draw the random initial weights of ``layers`` again, seeded from ``seed`` alone.

    Keras gives an initializer without a seed one drawn from Python's global
    ``random`` when the layer is built. Other threads of the process (a Dask
    worker's event loop, for one) draw from it too, so ``seeded`` alone does not
    make initial weights reproducible there. Each weight is drawn again from its
    own initializer (same distribution) with a seed derived from ``seed`` and the
    layer's position.
    """
    for i, layer in enumerate(layers):
        initializers = sorted(
            (name, value) for name, value in vars(layer).items()
            if name.endswith("_initializer") and isinstance(value, keras.initializers.Initializer)
        )
        for j, (name, initializer) in enumerate(initializers):
            config = initializer.get_config()
            if "seed" not in config:
                continue  # constant initializers (zeros, ones) draw nothing
            stem = name[: -len("_initializer")]
            variable = getattr(layer, stem, None)
            if not isinstance(variable, keras.Variable):
                variable = getattr(layer, stem + "_kernel", None)
            if not isinstance(variable, keras.Variable):
                continue
            derived = (seed * 1_000_003 + i * 101 + j) % (2**31 - 1)
            fresh = type(initializer).from_config({**config, "seed": derived})
            variable.assign(fresh(variable.shape, dtype=variable.dtype))


class _NullProgress:
    def update(self, current):
        pass


def progress_bar(total, verbose, unit="image"):
    """One Keras progress bar when ``verbose`` (a single line, updated in place)."""
    if not verbose:
        return _NullProgress()
    return keras.utils.Progbar(total, unit_name=unit)


def predict_source(model, source, batch_size, *, verbose=0, on_failures=None):
    """Run ``model`` over every image of ``source``.

    Parameters
    ----------
    model : keras.Model
    source : object with ``__len__`` and ``load(slice) -> (batch, failures)``
    batch_size : int
    verbose : int
        Show a progress bar.
    on_failures : callable or None
        Called with ``(start, failures)`` for each batch with unreadable files.

    Returns
    -------
    outputs : ndarray of float32, shape (len(source),) + model output shape
        Or a list of such arrays for a model with several outputs.
    """
    n = len(source)
    starts = list(range(0, n, batch_size))
    outputs = None
    progress = progress_bar(n, verbose)
    # One loader thread keeps the next batch decoding while the model runs.
    with ThreadPoolExecutor(1, thread_name_prefix="skconvnet-batch") as loader:
        pending = loader.submit(source.load, slice(0, min(batch_size, n)))
        for i, start in enumerate(starts):
            batch, failures = pending.result()
            if i + 1 < len(starts):
                nxt = starts[i + 1]
                pending = loader.submit(source.load, slice(nxt, min(nxt + batch_size, n)))
            if failures and on_failures is not None:
                on_failures(start, failures)
            count = len(batch)
            results = model.predict_on_batch(padded_batch(batch, batch_size))
            results = results if isinstance(results, (list, tuple)) else [results]
            results = [keras.ops.convert_to_numpy(r)[:count] for r in results]
            if outputs is None:
                outputs = [np.empty((n,) + r.shape[1:], dtype=np.float32) for r in results]
            for output, result in zip(outputs, results):
                output[start:start + count] = result
            progress.update(start + count)
    close = getattr(source, "close", None)
    if close is not None:
        close()
    return outputs[0] if len(outputs) == 1 else outputs


def call_on_arrays(model, arrays, batch_size):
    """``model`` (inference mode) on in-memory ``arrays`` (one per input), batch by batch.

    Called eagerly rather than through ``predict``: for the small top-and-head
    models this is used for, tracing a predict step costs more than the calls.
    """
    n = len(arrays[0])
    outputs = []
    for start in range(0, n, batch_size):
        batch = [padded_batch(array[start:start + batch_size], batch_size) for array in arrays]
        result = model(batch[0] if len(batch) == 1 else batch, training=False)
        result = keras.ops.convert_to_numpy(result)[:min(batch_size, n - start)]
        outputs.append(result.astype(np.float32, copy=False))
    return np.concatenate(outputs)


def padded_batch(batch, batch_size):
    """``batch`` with zero images appended up to ``batch_size``.

    Every call of a model then sees one batch shape, whatever the number of
    images: no new trace (or, on JAX, no new compilation of eager operations)
    for a short last batch or a small input, and the same arithmetic for an
    image whichever call it is in. On a GPU, a convolution of another batch
    shape may run another algorithm and round differently (1e-4 relative on an
    H100 under JAX, whose float32 convolutions use TF32), so predicting a
    subset would not give the same probabilities as predicting the whole set.
    """
    count = len(batch)
    if count == batch_size:
        return batch
    pad = np.zeros((batch_size - count,) + batch.shape[1:], dtype=batch.dtype)
    return np.concatenate([batch, pad])
