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
    ((0, (4, 4), (2**40, 1)), "does not lie inside its storage"),     # huge stride
    ((0, (2, 2), (2**62, 2**62)), "does not lie inside its storage"), # int64 overflow
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
    for name, array in state.items():
        assert array.tobytes() in data, f"{name}: bytes from outside the file"
    return state


SIZES = st.tuples() | st.tuples(st.integers(-3, 2**33)) | st.tuples(
    st.integers(-3, 70), st.integers(-3, 70)) | st.lists(st.integers(-2, 6), max_size=9).map(tuple)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
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


@settings(max_examples=200, deadline=None,
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
        outside = [n for n, a in state.items() if a.tobytes() not in data]
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
