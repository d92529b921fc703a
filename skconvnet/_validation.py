"""Parameter validation in scikit-learn's voice.

scikit-learn's own ``_parameter_constraints`` machinery is private API; these
few helpers give the same messages ("The 'x' parameter of Cls must be ...
Got ... instead.") without depending on it.
"""

import numbers

import numpy as np

__all__ = ["InvalidParameterError", "check_param", "check_int", "check_float"]


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a bad type or value.

    Inherits from both ``ValueError`` and ``TypeError`` like scikit-learn's error
    of the same name, so callers can catch either.
    """


def _fail(estimator, name, expected, value):
    raise InvalidParameterError(
        f"The {name!r} parameter of {type(estimator).__name__} must be "
        f"{expected}. Got {value!r} instead."
    )


def check_int(estimator, name, value, *, low=None, high=None, allow_none=False):
    """Validate an integer parameter within ``[low, high]``."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok and low is not None and value < low:
        ok = False
    if ok and high is not None and value > high:
        ok = False
    if not ok:
        bounds = (
            f" in the range [{low}, {high}]" if low is not None and high is not None
            else f" >= {low}" if low is not None
            else f" <= {high}" if high is not None
            else ""
        )
        _fail(estimator, name, "an int" + bounds + (" or None" if allow_none else ""), value)
    return int(value)


def check_float(estimator, name, value, *, low=None, high=None, low_open=False,
                high_open=False, allow_none=False):
    """Validate a real parameter within an (optionally open) interval."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    ok = ok and np.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        _fail(
            estimator, name,
            f"a float in the range {left}{lo}, {hi}{right}" + (" or None" if allow_none else ""),
            value,
        )
    return float(value)


def check_param(estimator, name, value, options):
    """Validate a parameter against a list of allowed string/None options."""
    if not any(value is option or (isinstance(value, str) and value == option)
               for option in options):
        _fail(estimator, name, _describe_options(options), value)
    return value


def check_random_state_param(estimator, value):
    """``random_state`` as scikit-learn accepts it, resolved to an int seed or None."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        if 0 <= value < 2**32:
            return int(value)
    if isinstance(value, np.random.RandomState):
        return int(value.randint(0, 2**31 - 1))
    _fail(estimator, "random_state", "an int in the range [0, 2**32 - 1], "
          "a numpy RandomState or None", value)


def _describe_options(options):
    # A string starting with "a " describes a type ("a dict"), not a literal option.
    shown = [option if isinstance(option, str) and option.startswith("a ") else repr(option)
             for option in options]
    if len(shown) == 1:
        return f"{shown[0]}"
    return "one of " + ", ".join(shown[:-1]) + f" or {shown[-1]}"
