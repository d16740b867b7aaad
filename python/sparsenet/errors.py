"""Typed errors. Every one is a ``ValueError`` subclass whose message names the
layer, the file key and the shapes involved. ``InputError`` (a ``ModelError``)
is an input array that cannot be run: not floating point, or holding NaN or
Inf (the engine checks every forward pass, so C++ callers get it too)."""

from __future__ import annotations

from ._core import FormatError, InputError, ModelError, ShapeError, WeightError

for _cls in (ModelError, ShapeError, WeightError, FormatError, InputError):
    _cls.__module__ = "sparsenet"

__all__ = ["ModelError", "ShapeError", "WeightError", "FormatError", "InputError"]
