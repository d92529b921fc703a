"""Declarative parameter validation in scikit-learn's voice.

A small local copy of the vocabulary of scikit-learn's private
``sklearn.utils._param_validation``: each estimator class has one
``_parameter_constraints`` table, ``{name: [constraint, ...]}``, and a value is
valid when it satisfies any constraint of its list. The same table is read by
``fit`` (:func:`validate_parameter_constraints`), by the docstrings (the type
line of each shared parameter, :func:`describe_constraints`) and by the tests
(:func:`invalid_values` makes a wrong value for every parameter).

Messages read like scikit-learn's: "The 'batch_size' parameter of
ConvFeatureExtractor must be an int >= 1. Got 0 instead."

Functions are validated with the :func:`validate_params` decorator, so their
messages name the function ("The 'smooth' parameter of plot_history ...").
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os

import numpy as np

from .exceptions import InvalidParameterError

__all__ = [
    "HasMethods",
    "InstanceOf",
    "Interval",
    "Options",
    "RandomStateSeed",
    "describe_constraints",
    "fail",
    "invalid_values",
    "resolve_seed",
    "validate_parameter_constraints",
    "validate_params",
]


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


class Interval:
    """Numbers of ``kind`` (``numbers.Integral`` or ``numbers.Real``) between two bounds.

    ``None`` for an unbounded side; ``closed`` in ``{"both", "left", "right",
    "neither"}``. Booleans are never numbers here, and real values must be finite.
    """

    def __init__(self, kind, left, right, *, closed="both"):
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value):
        if _is_bool(value) or not isinstance(value, self.kind):
            return False
        if not math.isfinite(value):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self):
        if self.kind is numbers.Integral:
            # Integer intervals are described as the package always has: ">= 1".
            if self.right is None:
                return f"an int >= {self.left}" if self.left is not None else "an int"
            if self.left is None:
                return f"an int <= {self.right}"
            return f"an int in the range [{self.left}, {self.right}]"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.left is None else self.left
        high = "inf" if self.right is None else self.right
        return f"a float in the range {left}{low}, {high}{right}"

    def invalid_values(self):
        """Values outside the interval (for the tests)."""
        values = []
        if self.left is not None:
            values.append(self.left - 1)
        if self.right is not None:
            values.append(self.right + 1)
        if self.kind is numbers.Integral:
            values.append(1.5)
        return values


class Options:
    """One of a few literal values (strings, ``None``, ...), compared by equality."""

    def __init__(self, *values):
        self.values = values

    def is_satisfied_by(self, value):
        return any(value is option or (isinstance(value, str) and value == option)
                   for option in self.values)

    def items(self):
        return [repr(option) for option in self.values]

    def __str__(self):
        items = self.items()
        return items[0] if len(items) == 1 else "one of " + _join(items)

    def invalid_values(self):
        return ["not-an-option"] if any(isinstance(v, str) for v in self.values) else []


class InstanceOf:
    """Instances of ``types`` (a type or tuple of types), described as ``description``."""

    def __init__(self, types, description):
        self.types, self.description = types, description

    def is_satisfied_by(self, value):
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if _is_bool(value) and bool not in types:
            return False  # True is an int to Python, never to a parameter table
        return isinstance(value, types)

    def __str__(self):
        return self.description

    def invalid_values(self):
        return []


class HasMethods:
    """Objects with the named methods (duck typing, like scikit-learn's)."""

    def __init__(self, *methods, description):
        self.methods, self.description = methods, description

    def is_satisfied_by(self, value):
        return all(callable(getattr(value, method, None)) for method in self.methods)

    def __str__(self):
        return self.description

    def invalid_values(self):
        return []


class RandomStateSeed:
    """``random_state`` as scikit-learn takes it: an int seed, a ``RandomState`` or None."""

    def is_satisfied_by(self, value):
        if value is None or isinstance(value, np.random.RandomState):
            return True
        return (isinstance(value, numbers.Integral) and not _is_bool(value)
                and 0 <= value < 2**32)

    def __str__(self):
        return "an int in the range [0, 2**32 - 1], a numpy RandomState or None"

    def invalid_values(self):
        return [-1, 2**32]


def _join(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"


def describe_constraints(constraints):
    """The English for a list of constraints: "an int >= 1 or None"."""
    if len(constraints) == 1:
        return str(constraints[0])
    items = []
    for constraint in constraints:
        items.extend(constraint.items() if isinstance(constraint, Options) else [str(constraint)])
    return _join(items)


def fail(caller, name, expected, value):
    """Raise the package's InvalidParameterError for parameter ``name`` of ``caller``."""
    raise InvalidParameterError(
        f"The {name!r} parameter of {caller} must be {expected}. Got {value!r} instead."
    )


def validate_parameter_constraints(constraints, params, caller):
    """Check each of ``params`` against its constraints in the table ``constraints``.

    Parameters
    ----------
    constraints : dict of str to list
        The table. A parameter without an entry is an error of the package itself.
    params : dict
        Parameter values by name.
    caller : str
        The class or function named in messages.

    Raises
    ------
    InvalidParameterError
        For the first parameter whose value satisfies none of its constraints.
    """
    for name, value in params.items():
        options = constraints[name]
        if not any(constraint.is_satisfied_by(value) for constraint in options):
            fail(caller, name, describe_constraints(options), value)


def validate_params(constraints):
    """Decorator: validate a function's arguments against ``constraints`` on every call."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            checked = {name: bound.arguments[name] for name in constraints}
            validate_parameter_constraints(constraints, checked, function.__name__)
            return function(*args, **kwargs)

        wrapper._parameter_constraints = constraints
        return wrapper

    return decorate


def resolve_seed(random_state):
    """A validated ``random_state`` as an int seed, or None; a RandomState draws one."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    return None if random_state is None else int(random_state)


class _NotAParameter:
    """A value no constraint accepts: the wrong type for every parameter."""

    def __repr__(self):
        return "<not a parameter>"


def invalid_values(constraints):
    """Values that fail ``constraints``: one of a wrong type, and ones just out of range."""
    values = [_NotAParameter()]
    for constraint in constraints:
        values.extend(constraint.invalid_values())
    return [value for value in values
            if not any(constraint.is_satisfied_by(value) for constraint in constraints)]


#: Path-like values (a file or folder named by the user).
PATH = InstanceOf((str, os.PathLike), "a path")
