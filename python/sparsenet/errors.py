"""Typed errors. Every one is a ``ValueError`` subclass whose message names the
layer, the file key and the shapes involved."""

from __future__ import annotations

from ._core import FormatError, ModelError, ShapeError, WeightError


class InputError(ModelError):
    """An input array that cannot be run: wrong dtype or non-finite values."""


for _cls in (ModelError, ShapeError, WeightError, FormatError):
    _cls.__module__ = "sparsenet"
InputError.__module__ = "sparsenet"

__all__ = ["ModelError", "ShapeError", "WeightError", "FormatError", "InputError"]
