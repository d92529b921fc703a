"""What users expect around the estimators: inspect_base, plots, progress, the CLI."""

from functools import partial
import os
import subprocess
import sys

import keras
import matplotlib
import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import NotFittedError

matplotlib.use("Agg")

from skconvnet import testing  # noqa: E402
from skconvnet import (  # noqa: E402
    ConvFeatureExtractor,
    InvalidParameterError,
    inspect_base,
    plot_feature_maps,
    plot_history,
)
from skconvnet.plotting import smooth_curve  # noqa: E402

from skconvnet.testing import make_shapes, tiny_extractor  # noqa: E402


# This module's tiny classifier: the shared one with these settings.
tiny_classifier = partial(testing.tiny_classifier, head_units=4, dropout=0.0, unfreeze=1, epochs=2,
                          learning_rate=1e-5)


# --------------------------------------------------------------------------- inspect_base
def test_inspect_base_lists_every_layer_with_shapes_params_and_blocks():
    table = inspect_base("tiny", input_size=16)
    assert [row["index"] for row in table] == list(range(13))
    assert table[1]["name"] == "block1_conv" and table[1]["type"] == "Conv2D"
    assert table[1]["output_shape"] == (None, 16, 16, 4)
    assert table[1]["params"] == 3 * 3 * 3 * 4 + 4
    assert table[-1]["output_shape"] == (None, 2, 2, 8)
    assert [row["block"] for row in table if row["block"]] == ["block1", "block2", "block3"]
    text = str(table)
    assert "block3_conv" in text and "unfreeze=" in text and "584" in text
    assert list(table.to_frame().columns) == ["index", "name", "type", "output_shape",
                                              "params", "block", "unfreeze"]


@pytest.mark.parametrize("unfreeze", [1, 2, 3])
def test_inspect_base_unfreeze_column_is_what_the_classifier_trains(unfreeze):
    first = next(row for row in inspect_base("tiny", input_size=16)
                 if row["unfreeze"] == unfreeze)
    X, y = make_shapes(16)
    clf = tiny_classifier(unfreeze=unfreeze, warmup_epochs=1, epochs=1).fit(X, y)
    trained = [layer.name for layer in clf.base_model_.layers if layer.trainable_weights]
    assert trained[0] == first["name"]
    assert clf.n_trainable_layers_ == unfreeze


def test_inspect_base_on_a_cut_base_and_on_a_users_model():
    table = inspect_base("tiny", layer="block2_pool", input_size=16)
    assert table[-1]["name"] == "block2_pool"
    assert [row["unfreeze"] for row in table if row["unfreeze"]] == [2, 1]

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(2, 3, name="mine")(inputs)
    model = keras.Model(inputs, outputs)
    rows = inspect_base(model)
    assert [row["name"] for row in rows][-1] == "mine" and rows[-1]["unfreeze"] == 1
    assert rows[-1]["params"] == 3 * 3 * 3 * 2 + 2


@pytest.mark.parametrize("params, match", [
    (dict(base="vgg99"), "Unknown base 'vgg99'"),
    (dict(base="tiny", input_size=4), "'input_size' parameter of inspect_base must be an "
                                      "int >= 8. Got 4"),
    (dict(base="tiny", layer="block9"), "'layer' parameter of inspect_base must name a "
                                        "layer of the base.*Got 'block9'"),
])
def test_inspect_base_errors(params, match):
    base = params.pop("base")
    with pytest.raises(ValueError, match=match):
        inspect_base(base, **params)


# --------------------------------------------------------------------------- plots
def _png_pixels(figure, tmp_path, name):
    path = tmp_path / f"{name}.png"
    figure.savefig(path)
    matplotlib.pyplot.close(figure)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return pixels


def test_smooth_curve_is_the_seeds_exponential_moving_average():
    points = [1.0, 0.0, 0.0, 1.0]
    expected, previous = [], None
    for p in points:
        previous = p if previous is None else previous * 0.8 + p * 0.2
        expected.append(previous)
    np.testing.assert_allclose(smooth_curve(points, 0.8), expected)
    np.testing.assert_array_equal(smooth_curve(points, 0.0), points)


def test_plot_history_has_both_phases_raw_and_smoothed_curves(tmp_path):
    X, y = make_shapes(24)
    clf = tiny_classifier(validation_fraction=0.25).fit(X, y)
    figure = plot_history(clf, smooth=0.6)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["accuracy", "loss"]
    for ax in axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["training (raw)", "training (smoothed 0.6)", "validation (raw)",
                          "validation (smoothed 0.6)", "fine-tuning starts"]
        raw = ax.get_lines()[0]
        assert len(raw.get_xdata()) == len(clf.history_) == 4
        # the phase boundary sits between the last warm-up and the first fine-tune epoch
        assert ax.get_lines()[-1].get_xdata()[0] == 2.5
    metric = [entry["loss"] for entry in clf.history_]
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), metric)
    np.testing.assert_allclose(axes[1].get_lines()[1].get_ydata(), smooth_curve(metric, 0.6))
    pixels = _png_pixels(figure, tmp_path, "history")
    assert pixels.shape[0] > 100 and pixels.std() > 10  # drawn, not blank


def test_plot_history_without_validation_or_fine_tuning():
    X, y = make_shapes(16)
    clf = tiny_classifier(unfreeze=0, warmup_epochs=3).fit(X, y)
    figure = plot_history(clf, smooth=0)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["training (raw)"]
    matplotlib.pyplot.close(figure)


def test_plot_history_errors():
    with pytest.raises(NotFittedError):
        plot_history(tiny_classifier())
    X, y = make_shapes(16)
    clf = tiny_classifier(unfreeze=0, warmup_epochs=1).fit(X, y)
    with pytest.raises(InvalidParameterError,
                       match=r"'smooth' parameter of plot_history must be .*Got 1.5"):
        plot_history(clf, smooth=1.5)


def test_plot_feature_maps_shows_one_panel_per_channel(tmp_path, images, image_files):
    extractor = tiny_extractor().fit(images)
    figure = plot_feature_maps(extractor, image_files[0], layer="block2_relu")
    assert len(figure.axes) == 8
    assert [ax.get_title() for ax in figure.axes] == [str(i) for i in range(8)]
    shown = figure.axes[3].get_images()[0].get_array()
    assert shown.shape == (8, 8)
    # the same maps as running the base by hand
    probe = keras.Model(extractor.base_model_.input,
                        extractor.base_model_.get_layer("block2_relu").output)
    batch = images[:1].astype("float32") / 127.5 - 1.0  # the tiny base's "tf" preprocessing
    expected = keras.ops.convert_to_numpy(probe(batch))[0, ..., 3]
    np.testing.assert_allclose(np.asarray(shown), expected, rtol=1e-4, atol=1e-5)
    pixels = _png_pixels(figure, tmp_path, "maps")
    assert pixels.std() > 10

    figure = plot_feature_maps(extractor, images[0], max_maps=3, n_cols=2)
    assert len(figure.axes) == 3 and "block3_pool: 3 of 8 maps" in figure._suptitle.get_text()
    matplotlib.pyplot.close(figure)


def test_plot_feature_maps_of_a_fine_tuned_classifier():
    X, y = make_shapes(16)
    clf = tiny_classifier(warmup_epochs=1, epochs=1).fit(X, y)
    figure = plot_feature_maps(clf, X[0], layer=1)
    assert len(figure.axes) == 4
    matplotlib.pyplot.close(figure)


def test_plot_feature_maps_errors(images):
    with pytest.raises(NotFittedError):
        plot_feature_maps(tiny_extractor(), images[0])
    extractor = tiny_extractor().fit(images)
    with pytest.raises(InvalidParameterError, match="'layer' parameter of plot_feature_maps "
                                                    "must name a layer.*Got 'nope'"):
        plot_feature_maps(extractor, images[0], layer="nope")
    with pytest.raises(InvalidParameterError,
                       match="'max_maps' parameter of plot_feature_maps must be an int >= 1"):
        plot_feature_maps(extractor, images[0], max_maps=0)


# --------------------------------------------------------------------------- progress
def test_verbose_0_is_silent_and_verbose_1_shows_one_bar(capfd, images):
    tiny_extractor(verbose=0).fit(images).transform(images)
    X, y = make_shapes(16)
    tiny_classifier(verbose=0, warmup_epochs=1, epochs=1).fit(X, y)
    out, err = capfd.readouterr()
    assert out == ""

    tiny_extractor(verbose=1).fit(images).transform(images)
    out, _ = capfd.readouterr()
    assert "10/10" in out and out.count("\n") <= 2  # one bar updated in place

    tiny_classifier(verbose=1, warmup_epochs=1, epochs=1).fit(X, y)
    out, _ = capfd.readouterr()
    assert out.count("warmup: 1 epoch") == 1 and out.count("finetune: 1 epoch") == 1
    assert out.count("1/2") >= 2 and out.count("2/2") >= 2  # a bar per epoch of each phase
    assert "accuracy" in out and "loss" in out


# --------------------------------------------------------------------------- CLI
def _cli(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "skconvnet", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_cli_help_through_python_dash_m():
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: skconvnet" in result.stdout
    for command in ("demo", "bases", "inspect", "extract"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["demo", "bases", "inspect", "extract"])
def test_cli_subcommand_help(command, capsys):
    from skconvnet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: skconvnet {command}" in capsys.readouterr().out


def test_cli_inspect_prints_the_layer_table():
    result = _cli("inspect", "vgg16", "--input-size", "32")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["#", "layer", "type"]
    assert any(line.split()[1] == "block5_conv1" and line.split()[-1] == "3" for line in lines[2:])

    result = _cli("inspect", "vgg99")
    assert result.returncode == 2
    assert "skconvnet inspect: error: Unknown base 'vgg99'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_extract_writes_paths_labels_and_features(tmp_path, rng):
    folder = tmp_path / "photos"
    for label in ("cat", "dög"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / label / f"{i}.jpg")
    (folder / "dög" / "broken.jpg").write_text("not an image")
    output = tmp_path / "features.npz"
    args = ["extract", str(folder), "-o", str(output), "--base", "mobilenetv2",
            "--weights", "none", "--input-size", "32"]

    result = _cli(*args)
    assert result.returncode == 2 and "broken.jpg" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()

    result = _cli(*args, "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert "5/5" in result.stdout and "1 unreadable" in result.stdout
    saved = np.load(output)
    assert list(saved["labels"]) == ["cat", "cat", "dög", "dög", "dög"]
    assert saved["features"].shape == (5, 1280)
    assert list(saved["failed"]) == [str(folder / "dög" / "broken.jpg")]
    broken = list(saved["paths"]).index(str(folder / "dög" / "broken.jpg"))
    assert np.isnan(saved["features"][broken]).all()
    assert np.isfinite(np.delete(saved["features"], broken, axis=0)).all()
    expected = ConvFeatureExtractor("mobilenetv2", weights=None, input_size=32,
                                    random_state=0).fit_transform(list(saved["paths"][:2]))
    np.testing.assert_allclose(saved["features"][:2], expected, rtol=1e-5, atol=1e-6)
