"""Image input: arrays in every layout, image files, folders, and their errors."""

import io

import numpy as np
import pytest
from PIL import Image

from skconvnet import ImageReadError, load_image_folder
from skconvnet.images import image_source, read_image


def _load_all(source):
    batch, failures = source.load(slice(None))
    assert failures == {}
    return batch


@pytest.mark.parametrize(
    "shape", [(3, 8, 8), (3, 8, 8, 1), (3, 8, 8, 3)], ids=["gray", "gray1", "rgb"]
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int64])
def test_array_layouts_become_rgb_float32(shape, dtype, rng):
    X = rng.integers(0, 256, size=shape).astype(dtype)
    batch = _load_all(image_source(X, 8))
    assert batch.shape == (3, 8, 8, 3) and batch.dtype == np.float32
    gray = X if X.ndim == 3 else X[..., 0]
    if len(shape) == 3 or shape[-1] == 1:
        for c in range(3):
            np.testing.assert_array_equal(batch[..., c], gray.astype(np.float32))


def test_flattened_rows_are_read_as_square_images(rng):
    rgb = rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    batch = _load_all(image_source(rgb.reshape(4, -1), 6))
    np.testing.assert_array_equal(batch, rgb.astype(np.float32))
    gray = rng.integers(0, 256, size=(4, 5, 5), dtype=np.uint8)
    batch = _load_all(image_source(gray.reshape(4, -1), 5))
    np.testing.assert_array_equal(batch[..., 1], gray.astype(np.float32))


def test_flattened_rows_with_image_shape(rng):
    images = rng.integers(0, 256, size=(2, 4, 6), dtype=np.uint8)
    flat = images.reshape(2, -1)
    for image_shape in [(4, 6), (4, -1), (4, 6, 1)]:
        source = image_source(flat, 8, image_shape=image_shape)
        assert source.flat_width == 24
        assert _load_all(source).shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match=r"image_shape=\(5, 5\) does not fit rows of 24"):
        image_source(flat, 8, image_shape=(5, 5))
    with pytest.raises(ValueError, match="rows of 24 values, which is not a flattened square"):
        image_source(flat, 8)


def test_callers_array_is_not_modified_and_read_only_input_works(rng, tmp_path):
    X = rng.uniform(0, 255, size=(3, 8, 8, 3))
    X.setflags(write=False)
    before = X.copy()
    batch = _load_all(image_source(X, 8))
    batch += 1
    np.testing.assert_array_equal(X, before)
    memmap = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8,
                                       shape=(3, 8, 8, 3))
    memmap[:] = 7
    memmap.flush()
    readonly = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert _load_all(image_source(readonly, 4)).shape == (3, 4, 4, 3)


def test_arrays_of_other_sizes_are_resized(rng):
    X = rng.integers(0, 256, size=(2, 20, 12, 3), dtype=np.uint8)
    assert _load_all(image_source(X, 8)).shape == (2, 8, 8, 3)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = X[0], X[1, :10]
    assert _load_all(image_source(ragged, 8)).shape == (2, 8, 8, 3)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((2, 8, 8, 2)), r"shape \(2, 8, 8, 2\).*2 or 4 channels"),
        (np.zeros((2, 8, 8, 4)), r"shape \(2, 8, 8, 4\).*2 or 4 channels"),
        (np.zeros((2, 2, 8, 8, 3)), r"shape \(2, 2, 8, 8, 3\)"),
        (np.zeros(5), r"shape \(5,\).*Reshape your data"),
        (np.zeros((0, 8, 8, 3)), r"X is empty"),
        (np.full((2, 4, 4, 3), -1.0), r"Negative values.*\[-1, -1\]"),
        (np.full((2, 4, 4, 3), 300.0), r"pixel values up to 300"),
        (np.array([[[[np.nan] * 3] * 4] * 4] * 2), r"NaN or infinite.*image 0"),
        (np.array(["a.jpg", np.zeros((4, 4, 3))], dtype=object), r"mixes image file paths"),
        ("img.jpg", r"single path 'img.jpg'"),
        (np.zeros((2, 4, 4, 3), dtype=bool), r"dtype bool"),
    ],
)
def test_bad_arrays_get_clear_errors(X, match):
    with pytest.raises(ValueError, match=match):
        image_source(X, 8)


def test_inf_is_rejected_with_the_image_index():
    X = np.zeros((3, 4, 4, 3))
    X[2, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite pixel values \(first in image 2\)"):
        image_source(X, 4)


def test_unit_range_floats_warn(rng):
    X = rng.uniform(0, 1, size=(2, 4, 4, 3))
    with pytest.warns(UserWarning, match=r"looks like images scaled to \[0, 1\]"):
        image_source(X, 4)


def test_sparse_input_is_rejected():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="Sparse data"):
        image_source(sparse.csr_matrix(np.ones((2, 16))), 4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP"])
def test_image_formats_decode_to_rgb(tmp_path, fmt, rng):
    array = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    path = tmp_path / f"image.{fmt.lower()}"
    Image.fromarray(array).save(path, format=fmt)
    image = read_image(path, 8)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert read_image(path).shape == (12, 10, 3)


def test_png_files_match_the_array(image_files, images):
    batch = _load_all(image_source(image_files, 16))
    np.testing.assert_array_equal(batch, images.astype(np.float32))


def test_grayscale_and_rgba_files(tmp_path):
    Image.new("L", (4, 4), 77).save(tmp_path / "gray.png")
    rgba = Image.new("RGBA", (4, 4), (10, 200, 30, 0))  # fully transparent green
    rgba.save(tmp_path / "clear.png")
    assert (read_image(tmp_path / "gray.png") == 77).all()
    assert (read_image(tmp_path / "clear.png") == 255).all()  # white, not green
    assert (read_image(tmp_path / "clear.png", background=(0, 0, 0)) == 0).all()


def test_palette_png_with_transparency_is_composited(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 255, 0] + [200, 0, 0] * 255)
    image.info["transparency"] = 0
    image.save(tmp_path / "pal.png", transparency=0)
    assert (read_image(tmp_path / "pal.png") == 255).all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "it is a directory"),
        (lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
        (lambda p: p.write_text("not an image"), "not an image format"),
    ],
    ids=["missing", "directory", "empty", "text"],
)
def test_unreadable_files_get_clear_errors(tmp_path, make, match):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(path, 8)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_is_reported(tmp_path, rng):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(path, 8)


def test_skip_mode_reports_failures_by_position(tmp_path, image_files):
    missing = str(tmp_path / "gone.png")
    source = image_source([image_files[0], missing, image_files[1]], 16, on_error="skip")
    batch, failures = source.load(slice(None))
    assert list(failures) == [1]
    assert (batch[1] == 0).all() and batch[0].any()


def test_load_image_folder_is_sorted_and_reproducible(tmp_path):
    for label in ("dog", "cat"):
        (tmp_path / label).mkdir()
        for name in ("b.jpg", "a.PNG", ".hidden.jpg", "notes.txt"):
            Image.new("RGB", (4, 4)).save(tmp_path / label / name, format="PNG") \
                if name != "notes.txt" else (tmp_path / label / name).write_text("x")
    paths, labels = load_image_folder(tmp_path)
    assert list(labels) == ["cat", "cat", "dog", "dog"]
    assert [p.split("/")[-1] for p in paths] == ["a.PNG", "b.jpg", "a.PNG", "b.jpg"]
    assert load_image_folder(tmp_path)[0] == paths


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="expects a folder"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="No images found"):
        load_image_folder(tmp_path)


# --------------------------------------------------------------------------
# Real-world files: colour spaces, bit depths, animation, size, orientation, names
# --------------------------------------------------------------------------
def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    image = read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (16, 16, 3)
    red, green, blue = image.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60  # CMYK (0, 100%, 100%, 0) is red


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")
    image = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(image[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert image.max() == 255 and image.min() == 0


def test_animated_gif_uses_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(tmp_path / "anim.gif") as check:
        assert check.n_frames == 2
    image = read_image(tmp_path / "anim.gif")
    assert (image[..., 0] > 200).all() and (image[..., 2] < 50).all()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # 10,000 x 10,000 (1e8 pixels > Pillow's 89,478,485 limit): a few hundred KB on disk.
    Image.new("L", (10_000, 10_000)).save(tmp_path / "bomb.png", compress_level=1)
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    with pytest.raises(ImageReadError,
                       match=r"too large to decode safely \(10000x10000 = 100,000,000 pixels"):
        read_image(tmp_path / "bomb.png", 8)
    source = image_source([str(tmp_path / "bomb.png")], 8, on_error="skip")
    assert list(source.load(slice(None))[1]) == [0]


def test_exif_orientation_is_respected(tmp_path):
    array = np.zeros((8, 16, 3), dtype=np.uint8)  # 16 wide, 8 tall; left half white
    array[:, :8] = 255
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "rotated.jpg")
    assert shown.shape == (16, 8, 3)  # upright: 8 wide, 16 tall
    assert shown[:6].mean() > 200 and shown[-6:].mean() < 50  # white half now on top


def test_non_ascii_file_names(tmp_path, rng):
    folder = tmp_path / "fotos_été" / "猫"
    folder.mkdir(parents=True)
    array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(array).save(folder / "chat_ñ_😀.png")
    paths, labels = load_image_folder(tmp_path / "fotos_été")
    assert list(labels) == ["猫"] and paths[0].endswith("chat_ñ_😀.png")
    batch = _load_all(image_source(paths, 8))
    np.testing.assert_array_equal(batch[0], array.astype(np.float32))
    with pytest.raises(ImageReadError, match="pas_là_😀.png"):
        read_image(folder / "pas_là_😀.png")


def test_one_image_without_a_batch_axis_warns(rng):
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"read as 16 grayscale images of 16x3.*X\[np.newaxis\]"):
        image_source(image, 8)
    assert len(image_source(image[np.newaxis], 8)) == 1  # the single-image form
