"""On-the-fly image augmentation as Keras preprocessing layers.

The settings use the names of Keras' old ``ImageDataGenerator`` (what the seed
recipe passes), mapped onto the Keras 3 random layers, which run inside the
compiled training step and are inactive at inference.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import keras
import numpy as np

from .exceptions import InvalidParameterError

__all__ = ["STANDARD_AUGMENTATION", "TEST_TIME_VIEWS", "RandomShear", "TestTimeView",
           "augmentation_layers", "check_augment"]

#: The seed recipe: ``ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
#: height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True)``.
STANDARD_AUGMENTATION = {
    "rotation_range": 40.0,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
    "shear_range": 0.2,
    "zoom_range": 0.2,
    "horizontal_flip": True,
}
_KEYS = tuple(STANDARD_AUGMENTATION)


def check_augment(name, augment):
    """``None``, ``"standard"`` or a dict of settings -> a full settings dict or None.

    ``name`` is the class named in messages.
    """
    if augment is None:
        return None
    if isinstance(augment, str) and augment == "standard":
        return dict(STANDARD_AUGMENTATION)
    if not isinstance(augment, dict):
        raise InvalidParameterError(
            f"The 'augment' parameter of {name} must be None, 'standard' or a dict with "
            f"keys among {list(_KEYS)}. Got {augment!r} instead."
        )
    unknown = sorted(set(augment) - set(_KEYS))
    if unknown:
        raise InvalidParameterError(
            f"The 'augment' parameter of {name} has unknown key(s) {unknown}; the allowed "
            f"keys are {list(_KEYS)}."
        )
    settings = {key: 0.0 for key in _KEYS}
    settings["horizontal_flip"] = False
    settings.update(augment)
    for key, value in settings.items():
        if key == "horizontal_flip":
            if not isinstance(value, bool):
                raise InvalidParameterError(
                    f"augment['horizontal_flip'] of {name} must be a bool. Got {value!r} instead."
                )
            continue
        limit = 180.0 if key == "rotation_range" else 45.0 if key == "shear_range" else 1.0
        if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                or not 0 <= value <= limit):
            raise InvalidParameterError(
                f"augment[{key!r}] of {name} must be a number in [0, {limit:g}]. "
                f"Got {value!r} instead."
            )
    return settings


@keras.saving.register_keras_serializable(package="skconvnet")
class RandomShear(keras.layers.RandomShear):
    """Keras' ``RandomShear`` with a config its own constructor accepts.

    Keras writes ``x_factor=f`` back as the range ``(-f, f)``, which its
    constructor then refuses (factors must lie in [0, 1]), so a network with
    the layer could be saved but not loaded. This writes ``f`` back; the layer
    computes exactly what Keras' does.
    """

    def get_config(self):
        config = super().get_config()
        for key in ("x_factor", "y_factor"):
            value = config[key]
            if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == -value[1]:
                config[key] = abs(value[1])
        return config


def augmentation_layers(settings, seed=None):
    """A ``keras.Sequential`` of random layers for ``settings`` (None: no layers)."""
    if settings is None:
        return None
    layers = []

    def next_seed():
        return None if seed is None else seed + len(layers)

    if settings["horizontal_flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=next_seed(), name="flip"))
    if settings["rotation_range"]:
        layers.append(keras.layers.RandomRotation(
            settings["rotation_range"] / 360.0, fill_mode="nearest", seed=next_seed(),
            name="rotation"))
    if settings["width_shift_range"] or settings["height_shift_range"]:
        layers.append(keras.layers.RandomTranslation(
            settings["height_shift_range"], settings["width_shift_range"],
            fill_mode="nearest", seed=next_seed(), name="shift"))
    if settings["shear_range"]:
        # ImageDataGenerator's shear_range is an angle in degrees; RandomShear takes
        # the shear factor, its tangent.
        factor = math.tan(math.radians(settings["shear_range"]))
        layers.append(RandomShear(factor, 0.0, fill_mode="nearest", seed=next_seed(),
                                  name="shear"))
    if settings["zoom_range"]:
        layers.append(keras.layers.RandomZoom(
            settings["zoom_range"], fill_mode="nearest", seed=next_seed(), name="zoom"))
    return keras.Sequential(layers, name="augmentation") if layers else None


# --------------------------------------------------------------------------
# Test-time augmentation: fixed views, so predictions need no random state
# --------------------------------------------------------------------------
_CROP = 0.875  # the crops keep 7/8 of each side (Inception's evaluation crop)


@dataclass(frozen=True)
class TestTimeView:
    """One deterministic view of a batch of images: a horizontal flip and/or a crop
    resized back to the images' size.

    Attributes
    ----------
    name : str
    flip : bool
    crop : tuple of (float, float) or None
        Where the crop's top-left corner lies, as a fraction of the room left
        around it (0.5, 0.5: centred); None for the whole image.
    """

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    flip: bool = False
    crop: tuple | None = None

    def __call__(self, images):
        """``images`` (n, height, width, channels) seen through this view, float32."""
        images = np.asarray(images, dtype=np.float32)
        if self.crop is not None:
            height, width = images.shape[1:3]
            crop_h, crop_w = max(1, round(height * _CROP)), max(1, round(width * _CROP))
            top = round((height - crop_h) * self.crop[0])
            left = round((width - crop_w) * self.crop[1])
            cropped = images[:, top:top + crop_h, left:left + crop_w]
            images = keras.ops.convert_to_numpy(keras.ops.image.resize(
                cropped, (height, width), interpolation="bilinear")).astype(np.float32)
        if self.flip:
            images = images[:, :, ::-1]
        return np.ascontiguousarray(images)


#: The views ``tta=n`` averages with the image itself: the first ``n`` of these.
TEST_TIME_VIEWS = (
    TestTimeView("flip", flip=True),
    TestTimeView("centre-crop", crop=(0.5, 0.5)),
    TestTimeView("flip+centre-crop", flip=True, crop=(0.5, 0.5)),
    TestTimeView("top-left-crop", crop=(0.0, 0.0)),
    TestTimeView("top-right-crop", crop=(0.0, 1.0)),
    TestTimeView("bottom-left-crop", crop=(1.0, 0.0)),
    TestTimeView("bottom-right-crop", crop=(1.0, 1.0)),
)
