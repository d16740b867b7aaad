"""The "transform" step of pruning: physically remove neurons that pruning has
disconnected, so the layers themselves shrink (a dense layer gets faster, not
only a sparse one).

A neuron is a Linear output row or a Conv2d output channel of a weighted layer
A whose outputs reach the next weighted layer B only through per-element or
per-channel layers (ReLU, Dropout, MaxPool2d, AvgPool2d, Flatten). It is dead

- when nothing reads it: every weight of B that reads it is zero. Removing it
  from A and from B's input changes nothing, exactly;
- when nothing feeds it: its row or filter of A is all zero, so its output is
  the constant act(bias). Its contribution to B is then a constant too, which
  is folded into B's bias before it is removed. That holds only where every
  output of B sees the constant in full: not when B zero-pads its input (the
  border windows see less of it), nor after an AvgPool2d that counts its
  padding. There the neuron is kept, unless its constant is exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers import AvgPool2d, Conv2d, Dropout, Flatten, Layer, MaxPool2d, ReLU, _Weighted
from ..model import Model
from ._model import _rebuild, model_weights

# Layers that act on each neuron's outputs separately, so a neuron of A maps to
# a fixed set of B's inputs. Anything else (Softmax, ...) ends the search for B.
_PER_NEURON = (ReLU, Dropout, MaxPool2d, AvgPool2d, Flatten)


@dataclass
class _Pair:
    source: _Weighted
    target: _Weighted
    between: list[Layer]


def _pairs(layers: list[Layer]) -> list[_Pair]:
    pairs = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, _Weighted):
            continue
        for later in range(index + 1, len(layers)):
            following = layers[later]
            if isinstance(following, _Weighted):
                pairs.append(_Pair(layer, following, list(layers[index + 1:later])))
                break
            if not isinstance(following, _PER_NEURON):
                break
    return pairs


class _State:
    """The weights being shrunk: ``weights[name] = [weight, bias]`` as float32."""

    def __init__(self, model: Model):
        self.weights = {name: [weight, bias] for name, (weight, bias) in model_weights(model).items()}
        self.removed = {name: 0 for name in self.weights}
        self.changed: set[str] = set()


def _constants(bias: np.ndarray | None, count: int, pair: _Pair) -> tuple[np.ndarray, np.ndarray]:
    """Each neuron's output if its incoming weights are all zero, as B receives
    it after the layers in between, and whether B sees that constant at every
    position (False where zero padding mixes in zeros, unless the constant is 0)."""
    value = np.zeros(count) if bias is None else bias.astype(np.float64)
    uniform = np.ones(count, dtype=bool)
    for layer in pair.between:
        if isinstance(layer, ReLU):
            value = np.maximum(value, 0.0)
        elif isinstance(layer, AvgPool2d) and layer.count_include_pad and any(layer.padding):
            uniform &= value == 0
        # Dropout and Flatten are the identity on values; max pooling (padding
        # included: it pads with -inf) and average pooling without counted
        # padding keep a constant map constant.
    if isinstance(pair.target, Conv2d) and any(pair.target.padding):
        uniform &= value == 0
    return value, uniform


def _shrink(state: _State, pair: _Pair) -> bool:
    """Remove the dead neurons of ``pair.source`` once; True if any were."""
    source, target = pair.source.name, pair.target.name
    weight_a, bias_a = state.weights[source]
    weight_b, bias_b = state.weights[target]
    count = weight_a.shape[0]
    outputs = weight_b.shape[0]
    if count == 0:
        return False
    if isinstance(pair.target, Conv2d):
        reading = weight_b.reshape(outputs, count, -1)  # B's weights reading each neuron (channel)
    else:
        if weight_b.shape[1] % count:
            return False  # not the flattened layout this pairing assumes; leave it alone
        reading = weight_b.reshape(outputs, count, weight_b.shape[1] // count)  # C, H, W flatten order
    unread = ~(reading != 0).any(axis=(0, 2))
    unfed = ~(weight_a.reshape(count, -1) != 0).any(axis=1)
    value, uniform = _constants(bias_a, count, pair)
    fold = unfed & ~unread & uniform
    remove = unread | fold
    if remove.all():  # keep one neuron so that no layer becomes empty
        remove[0] = False
        fold[0] = False
    if not remove.any():
        return False
    contribution = reading[:, fold, :].astype(np.float64).sum(axis=2) @ value[fold]
    if np.any(contribution != 0):
        base = np.zeros(outputs) if bias_b is None else bias_b.astype(np.float64)
        bias_b = (base + contribution).astype(np.float32)
    keep = ~remove
    state.weights[source] = [weight_a[keep], None if bias_a is None else bias_a[keep]]
    kept_b = reading[:, keep, :]
    if isinstance(pair.target, Conv2d):
        new_b = kept_b.reshape((outputs, int(keep.sum())) + weight_b.shape[2:])
    else:
        new_b = kept_b.reshape(outputs, -1)
    state.weights[target] = [np.ascontiguousarray(new_b), bias_b]
    state.removed[source] += int(remove.sum())
    state.changed.update((source, target))
    return True


def remove_dead_neurons(model: Model) -> tuple[Model, dict[str, int]]:
    """Remove the neurons that pruning disconnected and return ``(new model,
    {weighted layer name: neurons removed})``.

    A neuron is a Linear output feature or a Conv2d output channel; it is
    removed from its layer (weight row or filter, and bias) and from the next
    weighted layer's input (weight columns, or input channel) when nothing reads
    it, or when nothing feeds it and its constant output can be folded into the
    next layer's bias (see the module docstring for when it cannot). Only
    neurons whose outputs reach the next weighted layer through ReLU, Dropout,
    MaxPool2d, AvgPool2d and Flatten are considered; the last weighted layer's
    outputs, the model's outputs, are never removed, and every layer keeps at
    least one neuron. Removal can disconnect more neurons, so the walk repeats
    until nothing changes.

    The new model has the same layer names, configuration, backend, input
    shape and name, and computes the same outputs: exactly when only unread
    neurons were removed, to float rounding where biases were folded (a layer
    without bias may gain one then).
    """
    pairs = _pairs(model.layers)
    state = _State(model)
    changed = True
    while changed:
        changed = False
        for pair in pairs:
            changed = _shrink(state, pair) or changed
    replacements = {name: (weights[0], weights[1]) for name, weights in state.weights.items() if name in state.changed}
    return _rebuild(model, replacements), state.removed
