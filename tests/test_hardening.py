"""Hostile and damaged inputs (issue #16): readers that cannot crash, hang or leak memory.

Property-based where the input space is large. The fuzz tests run a bounded
number of examples in CI; ``--hypothesis-profile=long`` runs many more.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skconvnet
from skconvnet._torch_legacy import load_legacy_state_dict
from skconvnet.exceptions import UnsafeFileError
from torchfile import write_legacy_state_dict

PACKAGE = Path(skconvnet.__file__).parent


@contextlib.contextmanager
def no_hang(seconds=20):
    """Fail (instead of hanging forever) when the block blocks."""
    def timeout(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- 1. legacy .pth
FOUR_FLOATS = {"w": np.arange(4, dtype=np.float32)}


@pytest.mark.parametrize("meta, match", [
    ((0, (4096,), (1,)), "does not lie inside its storage"),          # reads past the storage
    ((3, (2,), (1,)), "does not lie inside its storage"),             # offset + size too far
    ((0, (4, 4), (2**40, 1)), "does not lie inside its storage"),      # huge stride
    ((0, (2, 2), (2**62, 2**62)), "does not lie inside its storage"),  # int64 overflow
    ((0, (2, 2), (-1, 1)), "expected strides >= 0"),                  # negative stride
    ((0, (2**28,), (0,)), "more bytes than the file holds"),         # zero stride: 1 GiB of 16 B
    ((-1, (2,), (1,)), "expected ints >= 0"),                        # negative offset
    ((0, (-2,), (1,)), "expected ints >= 0"),                        # negative size
    ((0, (2,), (1, 1)), "of the same length"),                       # stride of another rank
    ((0, (2.5,), (1,)), "tuples of at most 8 ints"),                 # float size
    ((0, tuple([1] * 9), tuple([1] * 9)), "tuples of at most 8 ints"),
    (("0", (2,), (1,)), "expected ints >= 0"),                       # str offset
])
def test_crafted_tensor_metadata_is_refused(tmp_path, meta, match):
    path = tmp_path / "crafted.pth"
    write_legacy_state_dict(path, FOUR_FLOATS, tensor_meta={"w": meta})
    with pytest.raises(UnsafeFileError, match=match):
        load_legacy_state_dict(path)


@pytest.mark.parametrize("declared, written, match", [
    (2**40, 4, "holds 4 elements where 1099511627776 were declared"),
    (4, 2**40, "holds 1099511627776 elements where 4 were declared"),
    (4, -1, "holds -1 elements"),
    (-4, -4, "expected a str and an int >= 0"),
])
def test_storage_sizes_that_do_not_match_the_file_are_refused(tmp_path, declared, written,
                                                              match):
    path = tmp_path / "sizes.pth"
    write_legacy_state_dict(path, FOUR_FLOATS, declared_numel={"w": declared},
                            written_numel={"w": written})
    with pytest.raises(UnsafeFileError, match=match):
        load_legacy_state_dict(path)


def test_permuted_strides_inside_the_storage_are_read(tmp_path):
    # PyTorch writes channels-last weights this way (the real Lite0 file does).
    path = tmp_path / "permuted.pth"
    data = np.arange(6, dtype=np.float32)
    write_legacy_state_dict(path, {"w": data}, tensor_meta={"w": (0, (3, 2), (1, 3))})
    np.testing.assert_array_equal(load_legacy_state_dict(path)["w"], data.reshape(2, 3).T)


def test_a_planted_attribute_or_a_non_dict_state_is_refused(tmp_path):
    good = tmp_path / "good.pth"
    write_legacy_state_dict(good, FOUR_FLOATS)
    data = good.read_bytes()
    # The state pickle builds an OrderedDict; plant `items` on it with a BUILD opcode.
    at = data.index(b"ccollections\nOrderedDict\nq")
    end = data.index(b")R", at) + 2
    planted = data[:end] + b"}X\x05\x00\x00\x00itemsK\x01sb" + data[end:]
    bad = tmp_path / "planted.pth"
    bad.write_bytes(planted)
    with pytest.raises(UnsafeFileError, match="only '_metadata' is part of the format"):
        load_legacy_state_dict(bad)


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    with no_hang(), pytest.raises(UnsafeFileError, match="FIFO"):
        load_legacy_state_dict(fifo)
    with no_hang(), pytest.raises(UnsafeFileError, match="character device"):
        load_legacy_state_dict("/dev/zero")
    with pytest.raises(UnsafeFileError, match="directory"):
        load_legacy_state_dict(tmp_path)


def _outcome(path):
    """``None`` for a refused file, else the state (after checking the property)."""
    data = Path(path).read_bytes()
    try:
        state = load_legacy_state_dict(path)
    except UnsafeFileError:
        return None
    total = sum(array.nbytes for array in state.values())
    assert total <= len(data), "arrays larger than the file"
    for name, array in state.items():  # strided tensors gather elements: check each one
        assert all(element.tobytes() in data for element in array.reshape(-1)), \
            f"{name}: bytes from outside the file"
    return state


SIZES = st.tuples() | st.tuples(st.integers(-3, 2**33)) | st.tuples(
    st.integers(-3, 70), st.integers(-3, 70)) | st.lists(st.integers(-2, 6), max_size=9).map(tuple)


#: Examples per property test: bounded for CI; raise them for a long fuzz run.
FUZZ_EXAMPLES = int(os.environ.get("SKCONVNET_FUZZ_EXAMPLES", "25"))
READER_EXAMPLES = 6 * FUZZ_EXAMPLES  # the .pth reader is fast: more examples for the same time


@settings(max_examples=READER_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(offset=st.integers(-5, 2**40) | st.integers(0, 64), size=SIZES,
       stride=SIZES, numel=st.integers(0, 64), declared=st.none() | st.integers(-2, 2**34))
def test_any_tensor_metadata_is_read_safely_or_refused(tmp_path, offset, size, stride, numel,
                                                       declared):
    path = tmp_path / "meta.pth"
    arrays = {"w": np.arange(numel, dtype=np.float32), "b": np.arange(3, dtype=np.int64)}
    write_legacy_state_dict(path, arrays, tensor_meta={"w": (offset, size, stride)},
                            declared_numel={} if declared is None else {"w": declared})
    tracemalloc.start()
    try:
        _outcome(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * path.stat().st_size + 2**20, f"peak {peak} bytes"


@pytest.fixture(scope="module")
def valid_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("pth") / "valid.pth"
    rng = np.random.default_rng(0)
    write_legacy_state_dict(path, {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=4).astype(np.float32),
        "steps": np.array([7], dtype=np.int64),
    })
    return path.read_bytes()


@settings(max_examples=READER_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                      max_size=4), cut=st.none() | st.integers(0, 10**6))
def test_byte_flips_and_truncations_are_read_safely_or_refused(tmp_path, valid_pth, flips, cut):
    data = bytearray(valid_pth)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % len(data)]
    path = tmp_path / "mutant.pth"
    path.write_bytes(bytes(data))
    _outcome(path)


FUZZ_BATCH = textwrap.dedent("""
    import importlib, json, resource, sys, types
    limit = int(sys.argv[2]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The reader alone, without importing the whole package (and TensorFlow).
    package = types.ModuleType("skconvnet")
    package.__path__ = [sys.argv[1]]
    sys.modules["skconvnet"] = package
    legacy = importlib.import_module("skconvnet._torch_legacy")
    for path in sys.argv[3:]:
        data = open(path, "rb").read()
        try:
            state = legacy.load_legacy_state_dict(path)
        except legacy.UnsafeFileError:
            print(json.dumps({"refused": True}))
            continue
        except Exception as exc:
            print(json.dumps({"other": f"{type(exc).__name__}: {exc}"[:300]}))
            continue
        outside = [n for n, a in state.items()
                   if not all(e.tobytes() in data for e in a.reshape(-1))]
        print(json.dumps({"read": len(state), "outside": outside}))
""")


def test_fuzzed_files_never_crash_the_process_or_escape_it(tmp_path, valid_pth):
    """Random opcodes, byte flips and truncations, loaded in a memory-limited process.

    A crash (SIGSEGV), an error other than UnsafeFileError, bytes from outside
    the file, or more memory than the limit fails the test. Set
    ``SKCONVNET_FUZZ_FILES`` for a longer run.
    """
    rng = np.random.default_rng(int(os.environ.get("SKCONVNET_FUZZ_SEED", "0")))
    n_files = int(os.environ.get("SKCONVNET_FUZZ_FILES", "300"))
    opcodes = [bytes([c]) for c in b"()01NIJKLMSTUVX]abcdeghijlmpqrstu}\x80\x81\x82\x85\x86\x87"]
    paths = []
    for i in range(n_files):
        data = bytearray(valid_pth)
        for _ in range(int(rng.integers(1, 5))):
            where = int(rng.integers(0, len(data)))
            kind = rng.integers(0, 3)
            if kind == 0:
                data[where] = int(rng.integers(0, 256))
            elif kind == 1:
                data[where:where] = opcodes[int(rng.integers(0, len(opcodes)))] + bytes(
                    rng.integers(0, 256, int(rng.integers(0, 9)), dtype=np.uint8))
            else:
                del data[where:where + int(rng.integers(1, 16))]
        if rng.random() < 0.1:
            data = data[:int(rng.integers(0, len(data)))]
        path = tmp_path / f"fuzz{i:05d}.pth"
        path.write_bytes(bytes(data))
        paths.append(str(path))
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ_BATCH)
    result = subprocess.run([sys.executable, str(script), str(PACKAGE), "1024", *paths],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outcomes) == len(paths)
    assert [o for o in outcomes if "other" in o] == []
    assert [o for o in outcomes if o.get("outside")] == []
    assert sum("refused" in o for o in outcomes) > len(paths) // 2  # most mutants are broken


# --------------------------------------------------------------------------- 2. skconvnet.load
import hashlib  # noqa: E402
import io  # noqa: E402
import zipfile  # noqa: E402

import joblib  # noqa: E402
from PIL import Image  # noqa: E402

from skconvnet import (  # noqa: E402
    ImageReadError,
    InvalidParameterError,
    UnsafeModelFileError,
    load,
    load_image_folder,
    save,
)
from skconvnet.testing import make_shapes, tiny_classifier, tiny_extractor  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fitted tiny classifier, its images, its file's bytes and its predictions."""
    X, y = make_shapes(16)
    clf = tiny_classifier(warmup_epochs=1, unfreeze=1, head_units=4).fit(X, np.array(["a", "b"])[y])
    path = tmp_path_factory.mktemp("saved") / "clf.skconvnet"
    save(clf, path)
    return X, path.read_bytes(), clf.predict_proba(X)


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read("skconvnet.json")), archive.read("model.keras")


def _zip(path, record, keras_bytes, fix_digest=True):
    if fix_digest:
        record["model_sha256"] = hashlib.sha256(keras_bytes).hexdigest()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("skconvnet.json", json.dumps(record))
        archive.writestr("model.keras", keras_bytes)
    return path


def _loads_identically_or_is_refused(path, X, expected):
    try:
        loaded = load(path)
    except UnsafeModelFileError:
        return False
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    return True


def test_a_member_declaring_too_much_is_refused_before_it_is_read(tmp_path, saved):
    _, data, _ = saved
    record, keras_bytes = _members(data)
    record["padding"] = " " * (40 * 2**20)  # 40 MB of JSON that deflates to ~40 KB
    path = _zip(tmp_path / "bomb.skconvnet", record, keras_bytes)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeModelFileError, match="declares .* bytes"):
            load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak} bytes"


ABC = {"ndarray": ["a", "b", "c"], "dtype": "<U1"}
AA = {"ndarray": ["a", "a"], "dtype": "<U1"}


@pytest.mark.parametrize("change, match", [
    (lambda r: {**r, "params": [[[[]]]] * 2}, "must be JSON objects"),
    (lambda r: {**r, "fitted": {**r["fitted"], "history_": json.loads("[" * 900 + "]" * 900)}},
     "nested deeper than 32"),
    (lambda r: {**r, "fitted": {**r["fitted"], "classes_": {"ndarray": [1], "dtype": 7}}},
     "Unknown value"),
    (lambda r: {**r, "fitted": {**r["fitted"], "classes_": {"tuple": 3}}}, "Unknown value"),
    (lambda r: {**r, "params": {**r["params"], "augment": {"dict": [[1]]}}}, "Unknown value"),
    (lambda r: {**r, "fitted": {**r["fitted"], "input_size_": 15}}, "input_size_=15"),
    (lambda r: {**r, "fitted": {**r["fitted"], "classes_": ABC}}, "3 classes_ but n_outputs_=1"),
    (lambda r: {**r, "fitted": {**r["fitted"], "classes_": AA}}, "at least 2 distinct labels"),
    (lambda r: {**r, "fitted": {**r["fitted"], "n_trainable_layers_": 3}},
     "n_trainable_layers_=3"),
    (lambda r: {**r, "fitted": {k: v for k, v in r["fitted"].items() if k != "classes_"}},
     r"fitted attributes \['classes_'\] are missing"),
    (lambda r: {**r, "network": {**r["network"], "dict": [
        p if p[0] != "input_size" else ["input_size", 10**9] for p in r["network"]["dict"]]}},
     "input_size 1000000000 is not an int"),
    (lambda r: {**r, "network": {**r["network"], "dict": [
        p if p[0] != "input_size" else ["input_size", 24] for p in r["network"]["dict"]]}},
     r"takes inputs of shape \(16, 16, 3\), its record says 24"),
])
def test_malformed_records_are_refused_as_unsafe(tmp_path, saved, change, match):
    _, data, _ = saved
    record, keras_bytes = _members(data)
    path = _zip(tmp_path / "bad.skconvnet", change(record), keras_bytes)
    with pytest.raises(UnsafeModelFileError, match=match):
        load(path)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1,
                      max_size=3))
def test_byte_flips_of_a_saved_file_load_identically_or_are_refused(tmp_path, saved, flips):
    X, data, expected = saved
    data = bytearray(data)
    for position, value in flips:
        data[position % len(data)] = value
    path = tmp_path / "flipped.skconvnet"
    path.write_bytes(bytes(data))
    _loads_identically_or_is_refused(path, X, expected)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(section=st.sampled_from(["params", "fitted", "network", "format_version", "estimator"]),
       key_index=st.integers(0, 40), value=JSON_VALUES)
def test_any_record_value_loads_identically_or_is_refused(tmp_path, saved, section, key_index,
                                                          value):
    X, data, expected = saved
    record, keras_bytes = _members(data)
    target = record[section]
    if isinstance(target, dict) and "dict" in target:  # the network record: [[key, value]...]
        pairs = target["dict"]
        pairs[key_index % len(pairs)][1] = value
    elif isinstance(target, dict):
        target[sorted(target)[key_index % len(target)]] = value
    else:
        record[section] = value
    path = _zip(tmp_path / "mutated.skconvnet", record, keras_bytes)
    _loads_identically_or_is_refused(path, X, expected)


def test_a_loaded_file_never_chooses_where_to_write(tmp_path):
    X, _ = make_shapes(8)
    extractor = tiny_extractor(cache=str(tmp_path / "anywhere")).fit(X)
    path = save(extractor, tmp_path / "e.skconvnet")
    assert load(path).cache is None
    assert load(path, cache="memory").cache == "memory"


def test_an_interrupted_save_leaves_the_old_file_and_no_scratch_files(tmp_path, monkeypatch):
    X, _ = make_shapes(8)
    extractor = tiny_extractor().fit(X)
    path = tmp_path / "e.skconvnet"
    save(extractor, path)
    before = path.read_bytes()
    # What a killed save (no `finally` runs) leaves: the predictable scratch files. The
    # next save of the same path replaces them.
    for name in (".e.skconvnet.partial.tmp", ".e.skconvnet.partial.model.keras"):
        (tmp_path / name).write_bytes(b"half")
    save(extractor, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.skconvnet"]
    before = path.read_bytes()
    # An interrupted save leaves the old file and nothing of its own.
    for step in ("model.keras", "skconvnet.json"):
        def interrupt(archive, name, *args, _step=step, _real=zipfile.ZipFile.writestr, **kw):
            if name == _step:
                raise KeyboardInterrupt
            return _real(archive, name, *args, **kw)

        monkeypatch.setattr(zipfile.ZipFile, "writestr", interrupt)
        with pytest.raises(KeyboardInterrupt):
            save(extractor, path)
        monkeypatch.undo()
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.skconvnet"]


# --------------------------------------------------------------------------- 3. files, modes
@pytest.mark.parametrize("cache", [None, "memory", "folder"])
def test_special_files_are_refused_at_once_in_transform(tmp_path, cache):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    extractor = tiny_extractor(cache=str(tmp_path / "c") if cache == "folder" else cache)
    for path, what in ((fifo, "FIFO"), ("/dev/zero", "character device")):
        with no_hang(), pytest.raises(ImageReadError, match=what):
            extractor.fit([str(path)]).transform([str(path)])
    skipping = tiny_extractor(cache=cache if cache != "folder" else str(tmp_path / "c"),
                              on_error="skip")
    with no_hang():
        features = skipping.fit([str(fifo)]).transform([str(fifo)])
    assert np.isnan(features).all() and skipping.failed_files_ == [str(fifo)]


def test_permission_denied_is_said(tmp_path, monkeypatch, image_files):
    real_open = os.open

    def guarded(path, *args, **kwargs):
        if os.fspath(path) == image_files[0]:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    from skconvnet.images import read_image
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(image_files[0])


GRADIENT = np.linspace(0, 1, 64).reshape(8, 8)


@pytest.mark.parametrize("mode, values, suffix", [
    ("F", GRADIENT, ".tif"),                                   # float in [0, 1]
    ("F", GRADIENT * 255, ".tif"),                             # float in [0, 255]
    ("I", np.rint(GRADIENT * 4095), ".tif"),                   # 12-bit data in 32-bit ints
    ("I", np.rint(GRADIENT * 1023), ".tif"),                   # 10-bit
    ("I;16", np.rint(GRADIENT * 65535), ".png"),               # 16-bit
    ("L", np.rint(GRADIENT * 255), ".png"),
    ("1", GRADIENT > 0.5, ".png"),
])
def test_high_range_images_use_their_full_range(tmp_path, mode, values, suffix):
    from skconvnet.images import read_image
    array = values.astype({"F": np.float32, "I": np.int32, "I;16": np.uint16, "L": np.uint8,
                           "1": bool}[mode])
    image = Image.fromarray(array)
    if mode == "I":
        image = image.convert("I")
    path = tmp_path / f"image{suffix}"
    image.save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
    assert rgb.max() >= 250 and rgb.min() <= 5, (mode, rgb.min(), rgb.max())
    assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)  # order kept


@settings(max_examples=READER_EXAMPLES // 4, deadline=None)
@given(mode=st.sampled_from(["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I",
                             "I;16", "F", "LA", "PA", "RGBX", "RGBa", "La"]),
       seed=st.integers(0, 2**16))
def test_every_pillow_mode_becomes_rgb(mode, seed):
    from skconvnet.images import _to_rgb
    rng = np.random.default_rng(seed)
    source = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "RGB")
    try:
        image = source.convert(mode)
    except ValueError:
        image = source.convert("RGBA").convert(mode)
    rgb = np.asarray(_to_rgb(image, (255, 255, 255)))
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 5, 3)


@pytest.mark.parametrize("damage", ["wrong shape", "wrong dtype", "a folder"])
def test_cache_entries_that_do_not_fit_are_recomputed(tmp_path, images, damage):
    cache = tmp_path / "cache"
    expected = tiny_extractor(cache=str(cache)).fit(images).transform(images)
    entries = sorted(cache.rglob("*.npz"))
    assert len(entries) == len(images)
    for entry in entries:
        entry.unlink()
        if damage == "a folder":
            entry.mkdir()
        else:
            np.savez(entry, np.zeros(3 if damage == "wrong shape" else expected.shape[1],
                                     dtype=np.float32 if damage == "wrong shape" else np.int64))
    again = tiny_extractor(cache=str(cache)).fit(images).transform(images)
    np.testing.assert_array_equal(again, expected)
    assert all(entry.is_file() for entry in entries)


def test_a_cache_naming_a_file_is_refused_in_fit(tmp_path, images):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidParameterError, match="'cache' parameter .* is a file"):
        tiny_extractor(cache=str(tmp_path / "file")).fit(images)


# --------------------------------------------------------------------------- 4. folders, env
def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def test_load_image_folder_skips_hidden_folders_and_takes_one_extension(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "cat" / ".thumbs" / "b.png")
    _png(tmp_path / "cat" / "deep" / "c.png")
    _png(tmp_path / "dog" / "d.jpg")
    paths, labels = load_image_folder(tmp_path, extensions=".png")
    assert [Path(p).name for p in paths] == ["a.png", "c.png"]
    assert labels.tolist() == ["cat", "cat"]


def test_an_unreadable_class_folder_is_named(tmp_path, monkeypatch):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    real_scandir = os.scandir

    def guarded(path="."):
        if Path(path).name == "dog":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    with pytest.raises(ValueError, match=r"cannot read the folder .*dog.*permission denied"):
        load_image_folder(tmp_path)


def test_a_one_column_dataframe_of_paths_is_read(image_files, images):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer

    frame = pd.DataFrame({"path": image_files, "other": range(len(image_files))})
    direct = tiny_extractor().fit(images).transform(images)
    via_frame = tiny_extractor().fit(frame[["path"]]).transform(frame[["path"]])
    np.testing.assert_allclose(via_frame, direct, atol=1e-5)
    columns = ColumnTransformer([("images", tiny_extractor(), ["path"])])
    np.testing.assert_allclose(columns.fit_transform(frame), direct, atol=1e-5)


def test_cli_extract_says_the_file_it_wrote(tmp_path, image_files, capsys):
    from skconvnet.cli import main
    folder = Path(image_files[0]).parent
    assert main(["extract", str(folder), "-o", str(tmp_path / "name"), "--base", "tiny",
                 "--weights", "none", "--input-size", "16", "--verbose", "0"]) == 0
    assert f"saved to {tmp_path / 'name.npz'}" in capsys.readouterr().out
    assert (tmp_path / "name.npz").is_file()


def test_bad_environment_settings_are_named(tmp_path, monkeypatch, images):
    from skconvnet.caching import clear_memory_cache
    monkeypatch.setenv("SKCONVNET_MEMORY_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="SKCONVNET_MEMORY_CACHE_MB='lots' must be a positive"):
        tiny_extractor(cache="memory").fit(images).transform(images)
    monkeypatch.setenv("SKCONVNET_MEMORY_CACHE_MB", "1.5")
    tiny_extractor(cache="memory").fit(images).transform(images)
    clear_memory_cache()
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SKCONVNET_HOME", str(tmp_path / "file"))
    from skconvnet._fileio import cache_folder
    with pytest.raises(OSError, match=r"Cannot use the cache folder .*SKCONVNET_HOME="):
        cache_folder("weights")


# --------------------------------------------------------------------------- 5. round trips
@pytest.mark.parametrize("weights", [{0: float("nan"), 1: 1.0}, {0: float("inf"), 1: 1.0},
                                     {0: -1.0, 1: 1.0}, {0: 0.0, 1: 0.0}])
def test_bad_class_weights_are_refused(weights):
    X, y = make_shapes(8)
    with pytest.raises(InvalidParameterError, match="'class_weight' parameter"):
        tiny_classifier(class_weight=weights).fit(X, y)


AUGMENT = st.none() | st.just("standard") | st.fixed_dictionaries({}, optional={
    "rotation_range": st.floats(0, 180), "width_shift_range": st.floats(0, 1),
    "height_shift_range": st.floats(0, 1), "shear_range": st.floats(0, 45),
    "zoom_range": st.floats(0, 1), "horizontal_flip": st.booleans()})
LABELS = st.sampled_from([np.array([0, 1]), np.array([-3, 7]), np.array(["cat", "dög"]),
                          np.array([True, False]), np.array([1.0, 2.0]),
                          np.array(["a", "b", "c"])])
CLASSIFIERS = st.fixed_dictionaries({
    "augment": AUGMENT, "precision": st.sampled_from(["float32", "bfloat16"]),
    "class_weight": st.sampled_from([None, "balanced"]),
    "pooling": st.sampled_from(["avg", "max", "flatten"]), "head_units": st.integers(0, 6),
    "dropout": st.sampled_from([0.0, 0.3]), "unfreeze": st.sampled_from([0, 1, "all"]),
    "cache": st.sampled_from([None, "memory"]), "labels": LABELS})
EXTRACTORS = st.fixed_dictionaries({
    "precision": st.sampled_from(["float32", "bfloat16"]),
    "pooling": st.sampled_from(["avg", "max", "flatten", None]),
    "layer": st.sampled_from([None, "block2_pool", -3]),
    "cache": st.sampled_from([None, "memory"])})


@settings(max_examples=int(os.environ.get("SKCONVNET_ROUNDTRIP_EXAMPLES", "8")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(params=CLASSIFIERS | EXTRACTORS)
def test_any_valid_estimator_round_trips_through_save_and_joblib(tmp_path, params):
    params = dict(params)
    X, y = make_shapes(12, n_classes=3)
    if "labels" in params:
        labels = params.pop("labels")
        estimator = tiny_classifier(warmup_epochs=1, **params).fit(X, labels[y % len(labels)])
        method = "predict_proba"
    else:
        estimator = tiny_extractor(**params).fit(X)
        method = "transform"
    # A fitted classifier with a cache predicts through it (top and head on the cached
    # bottom outputs, in float32 even under bfloat16); compare the whole network's answer.
    cache = params.get("cache")
    expected = getattr(estimator.set_params(cache=None), method)(X)
    loaded = load(save(estimator, tmp_path / "model.skconvnet"), cache=cache)
    np.testing.assert_array_equal(getattr(loaded.set_params(cache=None), method)(X), expected)
    unpickled = joblib.load(joblib.dump(estimator, tmp_path / "model.joblib")[0])
    np.testing.assert_array_equal(getattr(unpickled, method)(X), expected)


LOAD_IN_NEW_PROCESS = textwrap.dedent("""
    import sys, numpy as np, skconvnet, skconvnet.testing
    for path, X, out, method in zip(*[iter(sys.argv[1:])] * 4):
        np.save(out, getattr(skconvnet.load(path), method)(np.load(X)))
""")


def test_saved_variants_load_identically_in_a_new_process(tmp_path):
    X, y = make_shapes(12)
    np.save(tmp_path / "X.npy", X)
    variants = {
        "augmented": (tiny_classifier(augment="standard", unfreeze=1).fit(X, y), "predict_proba"),
        "bf16 strings": (tiny_classifier(precision="bfloat16", class_weight="balanced").fit(
            X, np.array(["x", "y"])[y]), "predict_proba"),
        "extractor maps": (tiny_extractor(pooling=None, layer="block2_pool").fit(X), "transform"),
    }
    arguments = []
    for name, (estimator, method) in variants.items():
        path = save(estimator, tmp_path / f"{name}.skconvnet")
        np.save(tmp_path / f"{name}.expected.npy", getattr(estimator, method)(X))
        arguments += [path, str(tmp_path / "X.npy"), str(tmp_path / f"{name}.npy"), method]
    (tmp_path / "run.py").write_text(LOAD_IN_NEW_PROCESS)
    subprocess.run([sys.executable, str(tmp_path / "run.py"), *arguments], check=True,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for name in variants:
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"),
                                      np.load(tmp_path / f"{name}.expected.npy"), err_msg=name)
