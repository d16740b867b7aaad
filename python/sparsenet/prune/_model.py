"""Pruning a whole :class:`sparsenet.Model`: read its weights as dense numpy
arrays, build a new model with some of them replaced, and prune every
weighted layer by one of the criteria of :mod:`._masks`.

Models are never changed in place: every function returns a new Model with
the same layer sequence, names, configuration, input shape and name."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Union

import numpy as np

from ..errors import ModelError, WeightError
from ..layers import Conv2d, Layer, Linear, SparseWeight, _Weighted
from ..model import Model
from ._masks import _number, _weight, prune_by_rate, prune_by_std, prune_by_threshold, prune_globally_by_rate

Amount = Union[float, Mapping[str, float]]

METHODS = ("rate", "std", "threshold", "global")


def _model_label(model: Model) -> str:
    return f"model '{model.name}'" if model.name else "model"


def weighted_layers(model: Model) -> list[_Weighted]:
    """The model's Linear and Conv2d layers, in order."""
    return [layer for layer in model.layers if isinstance(layer, _Weighted)]


def model_weights(model: Model) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``{layer name: (weight, bias or None)}`` for every Linear and Conv2d layer,
    in order. Weights are dense float32 arrays in the layer's own shape,
    ``(out, in)`` or ``(O, I, kh, kw)``, with zeros where connections are pruned;
    biases are copies, so changing the arrays leaves the model alone."""
    return {layer.name: (layer.weight.to_dense(), None if layer.bias is None else layer.bias.copy())
            for layer in weighted_layers(model)}


def _layer_copy(layer: Layer, weight: Any, bias: np.ndarray | None) -> _Weighted:
    if isinstance(layer, (Conv2d, Linear)):
        return layer.with_weights(weight, bias)
    raise ModelError(f"{layer.kind} layer '{layer.name}': no rule to copy a {type(layer).__name__}")


def _rebuild(model: Model, replacements: Mapping[str, tuple[Any, np.ndarray | None]],
             backend: str | None = None) -> Model:
    """A new Model like ``model`` with ``replacements[name] = (weight, bias)`` for
    some weighted layers; no shape checks here (remove_dead_neurons changes shapes).

    Weighted layers that are not replaced share their CSR weight with ``model``
    (nothing in sparsenet writes to it) and get a copy of their bias; other
    layers are deep copies, so the two models share no mutable state."""
    layers: list[Layer] = []
    for layer in model.layers:
        if isinstance(layer, _Weighted):
            if layer.name in replacements:
                weight, bias = replacements[layer.name]
            else:
                weight, bias = layer.weight, None if layer.bias is None else layer.bias.copy()
            layers.append(_layer_copy(layer, weight, bias))
        else:
            layers.append(layer._unbuilt_copy())
    return Model(layers, backend=model.backend if backend is None else backend,
                 input_shape=model.input_shape, name=model.name)


def _check_names(model: Model, names: Iterable[str], what: str) -> None:
    known = [layer.name for layer in weighted_layers(model)]
    for name in names:
        if name not in known:
            raise WeightError(f"{what}: {_model_label(model)} has no Linear or Conv2d layer named '{name}'; "
                              f"its weighted layers are {', '.join(known)}")


def with_weights(model: Model, weights: Mapping[str, Any], backend: str | None = None) -> Model:
    """A new Model like ``model`` with some weighted layers' weights replaced.

    ``weights`` maps a layer name to a weight, or to ``(weight, bias)``, in the
    shapes :func:`model_weights` returns; a tuple replaces the bias too (``None``
    then removes it), a lone weight keeps the layer's bias. Weights may be dense
    arrays (zeros are pruned connections) or :class:`sparsenet.SparseWeight`.
    ``backend`` defaults to the model's. Raises WeightError for a name that is
    not a weighted layer, a weight or bias of the wrong shape, or non-finite values.
    """
    _check_names(model, weights, "with_weights")
    layers = {layer.name: layer for layer in weighted_layers(model)}
    replacements: dict[str, tuple[Any, np.ndarray | None]] = {}
    for name, value in weights.items():
        layer = layers[name]
        where = f"{layer.kind} layer '{name}'"
        if isinstance(value, list):  # [w, b] or nested rows? Ambiguous: ask for a tuple or an array
            raise WeightError(f"{where}: got a list; pass the weight as an array, or (weight, bias) as a tuple")
        if isinstance(value, tuple):
            if len(value) != 2:
                raise WeightError(f"{where}: expected a weight or a (weight, bias) pair, got a {len(value)}-tuple")
            weight, bias = value
        else:
            weight, bias = value, None if layer.bias is None else layer.bias.copy()
        if isinstance(weight, SparseWeight):
            shape = weight.shape
        else:
            weight = _weight(weight, name)
            shape = weight.shape
        if shape != layer.shape:
            raise WeightError(f"{where}: new weight of shape {shape} does not match the layer's weight of shape "
                              f"{layer.shape}")
        if bias is not None:
            bias = np.asarray(bias)
            if bias.dtype.kind not in "fiu" or bias.shape != (layer.shape[0],):
                raise WeightError(f"{where}: new bias {bias.dtype} {bias.shape} must be real numbers of shape "
                                  f"({layer.shape[0]},) for weight {layer.shape}")
            bias = bias.astype(np.float32)
        replacements[name] = (weight, bias)
    return _rebuild(model, replacements, backend)


def _amounts(model: Model, amount: Amount, layers: Iterable[str] | None, method: str) -> dict[str, float]:
    """``{layer name: amount}`` for the layers to prune, in model order."""
    if method not in METHODS:
        raise WeightError(f"prune_model: method {method!r} is not one of {', '.join(METHODS)}")
    if isinstance(amount, Mapping):
        if method == "global":
            raise WeightError("prune_model: method 'global' takes one float rate for all chosen layers, not a dict")
        _check_names(model, amount, "prune_model")
    if layers is not None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        _check_names(model, layers, "prune_model")
    wanted = set(layers) if layers is not None else set(amount) if isinstance(amount, Mapping) else None
    chosen = [layer.name for layer in weighted_layers(model) if wanted is None or layer.name in wanted]
    out = {}
    for name in chosen:
        if isinstance(amount, Mapping):
            if name not in amount:
                raise WeightError(f"prune_model: layer '{name}' is in layers but has no amount in {dict(amount)}")
            out[name] = _number(amount[name], "amount", name)
        else:
            out[name] = _number(amount, "amount", name)
    return out


def prune_model(model: Model, amount: Amount, method: str = "rate", layers: Iterable[str] | None = None,
                backend: str | None = None) -> Model:
    """Prune ``model``'s weighted layers and return the pruned copy.

    ``method`` and what ``amount`` means:

    - ``"rate"``: the fraction of each layer's weights pruned
      (:func:`prune_by_rate`), one float or ``{layer name: rate}``;
    - ``"std"``: Han et al.'s quality parameter, threshold = quality x the std
      of the layer's surviving weights (:func:`prune_by_std`), float or dict;
    - ``"threshold"``: prune ``|w| <= threshold`` (:func:`prune_by_threshold`),
      float or dict;
    - ``"global"``: one float rate over all chosen layers together, with one
      magnitude threshold (:func:`prune_globally_by_rate`).

    Masks start from the current nonzeros, so weights already zero stay pruned
    and count towards a rate. ``layers`` restricts which layers are pruned: by
    default all weighted layers, or the dict's layers when ``amount`` is a dict.
    A single name may be given as a string. Biases are never pruned.
    ``backend`` defaults to the model's.
    """
    amounts = _amounts(model, amount, layers, method)
    weights = {name: weight for name, (weight, _) in model_weights(model).items() if name in amounts}
    masks = {name: weight != 0 for name, weight in weights.items()}
    if method == "global":
        keep = prune_globally_by_rate(weights, float(amount), masks) if weights else {}  # type: ignore[arg-type]
    else:
        criterion = {"rate": prune_by_rate, "std": prune_by_std, "threshold": prune_by_threshold}[method]
        keep = {name: criterion(weights[name], value, masks[name], name) for name, value in amounts.items()}
    return with_weights(model, {name: np.where(keep[name], weights[name], np.float32(0)) for name in weights},
                        backend)
