"""Image input: what users pass as ``X``, turned into batches of RGB pixels.

``X`` may be an array of images, a 2-D array of flattened images, or a sequence
of image file paths. :func:`image_source` inspects it once and returns an
object that loads any subset of the images, resized to the model's input size,
as float32 RGB in ``[0, 255]``. Files are decoded when their batch is needed, so
memory stays bounded however many there are.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._fileio import describe_os_error, open_regular
from .exceptions import ImageReadError

__all__ = [
    "ImageReadError",
    "load_image_folder",
    "read_image",
    "image_source",
    "IMAGE_EXTENSIONS",
]

#: File name suffixes :func:`load_image_folder` picks up (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Values a float image may take. Larger values mean the data is not 8-bit pixels.
_PIXEL_MAX = 255.0
# Rows checked at a time when scanning a large array for bad values.
_SCAN_ROWS = 256


# --------------------------------------------------------------------------
# Decoding files
# --------------------------------------------------------------------------
_BIT_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


def _full_scale(mode, array):
    """The value that means white in a high-range grayscale image.

    ``I;16*``: 65535 (the mode's range). ``I`` (32-bit ints, no bit depth in
    the mode): the smallest common sensor depth (8, 10, 12, 14, 16, ... bits)
    that holds the brightest pixel, so 12-bit data is not crushed to black.
    ``F`` (floats): 1.0 for images in [0, 1] (the float convention), 255 for
    images in [0, 255], else the brightest pixel.
    """
    if mode.startswith("I;16"):
        return 65535.0
    highest = float(array.max(initial=0))
    if mode == "F":
        return 1.0 if highest <= 1.0 else 255.0 if highest <= 255.0 else highest
    return float(next((2**d - 1 for d in _BIT_DEPTHS if highest < 2**d), highest))


def _to_rgb(image, background):
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto ``background``."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # High-range grayscale: scale to 8 bits; Pillow's convert("L") would clip instead.
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0,
                              neginf=0.0)
        array = np.rint(array * (255.0 / max(_full_scale(mode, array), 1e-12)))
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "La":  # premultiplied: Pillow converts it only to LA
        image, mode = image.convert("LA"), "LA"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    ) or (mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def read_image(path, size=None, *, background=(255, 255, 255)):
    """Read one image file as an 8-bit RGB array.

    Parameters
    ----------
    path : str or os.PathLike
        JPEG, PNG, BMP, GIF (first frame), WebP or TIFF file.
    size : int or (int, int) or None
        Resize to ``size x size`` (or ``(height, width)``) with bilinear
        interpolation; ``None`` keeps the file's size.
    background : tuple of 3 ints, default=(255, 255, 255)
        Colour that transparent pixels are composited onto.

    Returns
    -------
    image : ndarray of shape (height, width, 3), dtype uint8
        The EXIF orientation is applied.

    Raises
    ------
    ImageReadError
        If the file is missing, unreadable (permission denied), not a regular
        file (a directory, FIFO or device: refused at once, never read), empty,
        not an image, truncated, or has more pixels than
        ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's decompression-bomb limit, about
        89 million; set it higher or to None for files you trust).

    Notes
    -----
    High-range grayscale is scaled, never clipped: 16-bit modes by 65535,
    32-bit integer images by the smallest common bit depth (8, 10, 12, 14, 16,
    24, 32) holding their brightest pixel, float images in [0, 1] by 255.
    """
    path = Path(path)
    try:
        handle = open_regular(path)
    except OSError as exc:
        raise ImageReadError(path, describe_os_error(exc)) from None
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageReadError(path, "the file is empty (0 bytes)")
        return _decode(path, handle, size, background)


def _decode(path, handle, size, background):
    if size is not None:
        height, width = (size, size) if np.isscalar(size) else size
    try:
        with Image.open(handle) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.width * image.height > limit:
                # Pillow only warns up to twice its limit; refuse before decoding.
                raise ImageReadError(
                    path, f"the image is too large to decode safely ({image.width}x"
                          f"{image.height} = {image.width * image.height:,} pixels, more than "
                          f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,}); raise that limit if you "
                          "trust the file")
            if size is not None and image.format == "JPEG":
                # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 when the file is
                # at least that much larger than needed: less work, less memory.
                image.draft("RGB", (width, height))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image, background)
            if size is not None and image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageReadError(
            path, f"not an image format Pillow can read (expected one of "
                  f"{', '.join(ext.lstrip('.') for ext in IMAGE_EXTENSIONS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"the image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"the file is truncated or corrupt ({exc})") from None


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------
def _resize_float(image, size):
    """Bilinear resize of one float32 (h, w, 3) image, channel by channel (Pillow mode F)."""
    channels = [
        np.asarray(
            Image.fromarray(image[..., c], mode="F").resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def _resize_uint8(image, size):
    return np.asarray(
        Image.fromarray(image, mode="RGB").resize((size, size), Image.Resampling.BILINEAR)
    )


def _as_rgb_batch(images):
    """(b, h, w) or (b, h, w, 1|3) -> (b, h, w, 3), without modifying the input."""
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def _infer_square_shape(n_values):
    """Shape of a flattened square image of ``n_values`` values: RGB first, then grayscale."""
    for channels in (3, 1):
        side = math.isqrt(n_values // channels) if n_values % channels == 0 else 0
        if side > 0 and side * side * channels == n_values:
            return (side, side, channels)
    return None


def _check_pixel_values(array, name="X"):
    """Reject NaN/inf and values outside [0, 255]; warn for images that look like [0, 1]."""
    if array.dtype == np.uint8:
        return
    if np.iscomplexobj(array):
        raise ValueError(f"Complex data not supported: {name} has dtype {array.dtype}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"{name} must hold numeric pixel values (uint8, int or float); "
            f"got dtype {array.dtype}."
        )
    lowest, highest = np.inf, -np.inf
    for start in range(0, len(array), _SCAN_ROWS):
        chunk = np.asarray(array[start:start + _SCAN_ROWS])
        if chunk.size == 0:
            continue
        if np.issubdtype(chunk.dtype, np.floating) and not np.isfinite(chunk).all():
            bad = np.flatnonzero(~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1))
            raise ValueError(
                f"{name} contains NaN or infinite pixel values (first in image "
                f"{start + int(bad[0])}); pixels must be finite values in [0, 255]."
            )
        lowest = min(lowest, float(chunk.min()))
        highest = max(highest, float(chunk.max()))
    if lowest < 0:
        raise ValueError(
            f"Negative values in data passed as {name}: pixel values range over "
            f"[{lowest:g}, {highest:g}]; expected values in [0, 255] (uint8, or float on "
            "the same scale)."
        )
    if highest > _PIXEL_MAX:
        raise ValueError(
            f"{name} has pixel values up to {highest:g}; expected values in [0, 255] "
            "(uint8, or float on the same scale). Rescale 16-bit images to 8 bits first."
        )
    if np.issubdtype(array.dtype, np.floating) and 0 < highest <= 1.0:
        warnings.warn(
            f"{name} has float pixel values in [{lowest:g}, {highest:g}], which looks like "
            "images scaled to [0, 1]. skconvnet expects [0, 255] and applies each base's "
            "own preprocessing; multiply by 255 if these are [0, 1] images.",
            UserWarning,
            stacklevel=4,
        )


class ArrayImages:
    """Images held in an array of shape (n, h, w[, c])."""

    flat_width = None  # values per row when X was a 2-D array of flattened images

    def __init__(self, array, size, *, check_values=True):
        self.array = array
        self.size = size
        if check_values:
            _check_pixel_values(array)

    def __len__(self):
        return len(self.array)

    def describe(self, index):
        return f"image {index}"

    def content_keys(self):
        """SHA-1 of each image's pixels (with dtype and shape): the cache key."""
        return [_array_digest(np.asarray(self.array[i])) for i in range(len(self.array))]

    def load(self, indices):
        """Float32 batch (len(indices), size, size, 3) and no failures."""
        batch = _as_rgb_batch(np.asarray(self.array[indices]))
        if batch.shape[1:3] != (self.size, self.size):
            resize = _resize_uint8 if batch.dtype == np.uint8 else _resize_float
            source = batch if batch.dtype == np.uint8 else batch.astype(np.float32)
            batch = np.stack([resize(image, self.size) for image in source])
        # astype always copies: the caller's array is never handed to Keras.
        return batch.astype(np.float32), {}


class FileImages:
    """Images named by file paths, decoded in worker threads when loaded."""

    flat_width = None

    def __init__(self, paths, size, *, background=(255, 255, 255), on_error="raise",
                 n_threads=None):
        self.paths = [os.fspath(p) for p in paths]
        self.size = size
        self.background = tuple(background)
        self.on_error = on_error
        self.n_threads = n_threads or min(8, (os.cpu_count() or 1) + 2)
        self._pool = None

    def __len__(self):
        return len(self.paths)

    def describe(self, index):
        return self.paths[index]

    def content_keys(self):
        """SHA-1 of each file's bytes (and the background colour): the cache key."""
        def digest(path):
            sha = hashlib.sha1(repr(self.background).encode())
            try:
                with open_regular(path) as handle:  # a FIFO or device never blocks here
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        sha.update(block)
            except OSError as exc:
                if self.on_error == "raise":
                    raise ImageReadError(path, describe_os_error(exc)) from None
                return None  # unreadable: never cached, reported when loaded
            return sha.hexdigest()

        with ThreadPoolExecutor(self.n_threads) as pool:
            return list(pool.map(digest, self.paths))

    def _read(self, index):
        try:
            return read_image(self.paths[index], self.size, background=self.background), None
        except ImageReadError as exc:
            if self.on_error == "raise":
                raise
            return None, exc

    def load(self, indices):
        """Float32 batch and ``{position in batch: error}`` for unreadable files.

        Unreadable files (with ``on_error="skip"``) leave a zero image in their
        slot; the caller decides what to report for them.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="skconvnet-decode")
        indices = np.arange(len(self.paths))[indices]
        batch = np.zeros((len(indices), self.size, self.size, 3), dtype=np.float32)
        failures = {}
        for position, (image, error) in enumerate(self._pool.map(self._read, indices)):
            if error is None:
                batch[position] = image
            else:
                failures[position] = error
        return batch, failures

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class ImageList:
    """A sequence of individual image arrays (possibly of different sizes)."""

    flat_width = None

    def __init__(self, images, size):
        self.images = list(images)
        self.size = size
        for i, image in enumerate(self.images):
            _check_image_ndim(image, f"X[{i}]", per_image=True)
            _check_pixel_values(image[np.newaxis], name=f"X[{i}]")

    def __len__(self):
        return len(self.images)

    def describe(self, index):
        return f"image {index}"

    def content_keys(self):
        return [_array_digest(np.asarray(image)) for image in self.images]

    def load(self, indices):
        chosen = [self.images[i] for i in np.arange(len(self.images))[indices]]
        batch = np.zeros((len(chosen), self.size, self.size, 3), dtype=np.float32)
        for position, image in enumerate(chosen):
            batch[position] = ArrayImages(image[np.newaxis], self.size,
                                          check_values=False).load(slice(None))[0][0]
        return batch, {}


def _array_digest(image):
    sha = hashlib.sha1(f"{image.dtype.str}{image.shape}".encode())
    sha.update(np.ascontiguousarray(image).tobytes())
    return sha.hexdigest()


def _check_image_ndim(array, name, per_image=False):
    offset = 0 if per_image else 1
    ndim = array.ndim - offset
    if ndim not in (2, 3) or (ndim == 3 and array.shape[-1] not in (1, 3)):
        layout = "(h, w), (h, w, 1) or (h, w, 3)" if per_image else (
            "(n_images, height, width), (n_images, height, width, 1) or "
            "(n_images, height, width, 3)"
        )
        raise ValueError(
            f"{name} has shape {array.shape}; expected images of shape {layout}"
            + ("" if per_image else ", a 2-D array of flattened images, or a list of "
               "image file paths")
            + ". Images with 2 or 4 channels are not supported: convert them to "
            "grayscale or RGB first."
        )


def _is_path(value):
    return isinstance(value, (str, os.PathLike))


def image_source(X, size, *, image_shape=None, background=(255, 255, 255), on_error="raise"):
    """Wrap ``X`` in a loader of RGB batches of ``size x size`` pixels.

    Parameters
    ----------
    X : array-like or sequence of paths
        See :class:`skconvnet.ConvFeatureExtractor` for the accepted forms.
    size : int
        Side of the square images the model takes.
    image_shape : tuple or None
        Shape of one image in a 2-D ``X`` of flattened images (numpy reshape
        rules, one ``-1`` allowed). ``None`` infers a square RGB, then square
        grayscale, shape from the row length.
    background : tuple of 3 ints
        Colour transparent pixels of image files are composited onto.
    on_error : {"raise", "skip"}
        What to do with unreadable image files.

    Returns
    -------
    source : ArrayImages or FileImages or ImageList
        With ``len(source)`` and ``source.load(indices) -> (batch, failures)``.
    """
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            "Sparse data was passed as X, but dense data is required: images must be a "
            "dense array or a sequence of file paths."
        )
    if isinstance(X, (str, bytes)) or _is_path(X):
        raise ValueError(
            f"X must be a sequence of images or of image file paths; got a single path "
            f"{os.fspath(X)!r}. Wrap it in a list: [path]."
        )
    if hasattr(X, "to_numpy") and getattr(X, "ndim", 1) == 1:  # pandas Series
        X = X.to_numpy()
    elif hasattr(X, "to_numpy") and getattr(X, "shape", (0, 0))[1:] == (1,):
        # A one-column DataFrame, as ColumnTransformer([..., ["path"]]) passes it.
        column = X.to_numpy()[:, 0]
        if column.dtype.kind in "OUS" and len(column) and all(map(_is_path, column)):
            X = column
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS" or isinstance(X, (list, tuple)):
        items = list(X) if not isinstance(X, np.ndarray) or X.ndim == 1 else None
        if items is not None and len(items) > 0:
            if all(_is_path(item) for item in items):
                return FileImages(items, size, background=background, on_error=on_error)
            if all(isinstance(item, np.ndarray) for item in items):
                shapes = {item.shape for item in items}
                if len(shapes) > 1 or isinstance(X, np.ndarray):
                    return ImageList(items, size)
            elif any(_is_path(item) for item in items):
                kinds = sorted({type(item).__name__ for item in items})
                raise ValueError(
                    "X mixes image file paths with other values (found types "
                    f"{kinds}); pass either all paths or all image arrays."
                )
    try:
        array = np.asarray(X)
    except ValueError as exc:
        raise ValueError(f"X could not be read as an array of images: {exc}") from None
    if array.dtype.kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"X must hold numeric pixel values or image file paths; an object array "
                f"with other values cannot be read ({exc})."
            ) from None
    if array.dtype.kind in "OUSb":
        raise ValueError(
            "X must be an array of numeric pixel values or a sequence of image file "
            f"paths; got an array of dtype {array.dtype}."
        )
    if array.ndim == 2 and array.shape[1] == 0:
        raise ValueError(
            f"0 feature(s) (shape={array.shape}) while a minimum of 1 is required: rows of "
            "a 2-D X must hold flattened images."
        )
    if array.ndim < 2:
        raise ValueError(
            f"X has shape {array.shape}; expected a batch of images. Reshape your data: "
            "one image is X[np.newaxis], a single flattened image is X.reshape(1, -1)."
        )
    if array.size == 0 or len(array) == 0:
        raise ValueError(f"X is empty (shape {array.shape}); expected at least one image.")
    flat_width = None
    if array.ndim == 2:
        flat_width = array.shape[1]
        shape = _resolve_image_shape(flat_width, image_shape)
        array = array.reshape((len(array),) + shape)
    _check_image_ndim(array, "X")
    if array.ndim == 3 and array.shape[2] in (3, 4) and min(array.shape[:2]) > array.shape[2]:
        warnings.warn(
            f"X of shape {array.shape} is read as {array.shape[0]} grayscale images of "
            f"{array.shape[1]}x{array.shape[2]} pixels. If it is one colour image, pass "
            "X[np.newaxis] (shape (1, height, width, channels)).",
            UserWarning, stacklevel=3,
        )
    source = ArrayImages(array, size)
    source.flat_width = flat_width
    return source


def _resolve_image_shape(n_values, image_shape):
    if image_shape is None:
        shape = _infer_square_shape(n_values)
        if shape is None:
            raise ValueError(
                f"X is 2-D with rows of {n_values} values, which is not a flattened square "
                "RGB or grayscale image; pass image_shape=(height, width) or "
                "(height, width, channels) to say how to read each row."
            )
        return shape
    shape = tuple(int(d) for d in image_shape)
    if shape.count(-1) == 1:
        known = math.prod(d for d in shape if d != -1)
        if known > 0 and n_values % known == 0:
            shape = tuple(n_values // known if d == -1 else d for d in shape)
    if math.prod(shape) != n_values or any(d <= 0 for d in shape):
        raise ValueError(
            f"image_shape={tuple(image_shape)!r} does not fit rows of {n_values} values "
            "of the 2-D X."
        )
    return shape


# --------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------
def _visible_files(folder):
    """Regular files below ``folder``, sorted; hidden files and folders skipped.

    A folder that cannot be read raises, naming it: a class must never vanish
    from the labels because of its permissions.
    """
    def refuse(error):
        raise ValueError(f"load_image_folder cannot read the folder {error.filename!r}: "
                         f"{describe_os_error(error)}.") from None

    found = []
    for parent, folders, files in os.walk(folder, onerror=refuse):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(Path(parent) / name for name in files if not name.startswith("."))
    return sorted(path for path in found if path.is_file())


def load_image_folder(root, *, extensions=IMAGE_EXTENSIONS):
    """List the images of a ``root/<class_name>/<image>`` tree.

    The layout of Keras' ``flow_from_directory`` and ``image_dataset_from_directory``:
    one sub-folder per class, images anywhere below it. Hidden files and
    folders (names starting with ".") and files with other suffixes are
    ignored; a folder that cannot be read raises, naming it.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding one sub-folder per class.
    extensions : str or tuple of str, default=IMAGE_EXTENSIONS
        File name suffixes to pick up (one, or several), compared
        case-insensitively.

    Returns
    -------
    paths : list of str
        Image paths, sorted by class then file name (reproducible).
    labels : ndarray of str of shape (n_images,)
        The class (sub-folder name) of each path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skconvnet import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ("cat", "dog"):
    ...     (root / label).mkdir()
    ...     Image.new("RGB", (8, 8)).save(root / label / "0.png")
    >>> paths, labels = load_image_folder(root)
    >>> labels.tolist()
    ['cat', 'dog']
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"load_image_folder expects a folder; {str(root)!r} is not one.")
    if isinstance(extensions, str):
        extensions = (extensions,)  # ".png", not the characters ".", "p", "n", "g"
    suffixes = tuple(ext.lower() for ext in extensions)
    paths, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in _visible_files(class_dir):
            if file.suffix.lower() in suffixes:
                paths.append(str(file))
                labels.append(class_dir.name)
    if not paths:
        raise ValueError(
            f"No images found under {str(root)!r}: expected sub-folders, one per class, "
            f"holding files ending in {', '.join(suffixes)}."
        )
    return paths, np.asarray(labels)
