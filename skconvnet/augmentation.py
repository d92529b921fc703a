"""On-the-fly image augmentation as Keras preprocessing layers.

The settings use the names of Keras' old ``ImageDataGenerator`` (what the seed
recipe passes), mapped onto the Keras 3 random layers, which run inside the
compiled training step and are inactive at inference.
"""

from __future__ import annotations

import math
import numbers

import keras

from .exceptions import InvalidParameterError

__all__ = ["STANDARD_AUGMENTATION", "RandomShear", "check_augment", "augmentation_layers"]

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
