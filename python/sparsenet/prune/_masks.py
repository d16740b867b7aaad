"""Pruning criteria on numpy weights. Every function returns a *keep mask*: a
boolean array of the weight's shape, True where the connection survives.

Masks only ever shrink: pass the layer's current mask as ``mask`` and a
connection pruned before stays pruned, whatever its (zero) value now."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import WeightError
from ..layers import SparseWeight


def _weight(weight: Any, name: str) -> np.ndarray:
    if isinstance(weight, SparseWeight) or hasattr(weight, "tocsr"):  # layer.weight, scipy.sparse
        weight = weight.to_dense() if isinstance(weight, SparseWeight) else weight.toarray()
    array = np.asarray(weight)
    if array.dtype.kind not in "fiu":
        raise WeightError(f"layer '{name}': weight has dtype {array.dtype}, expected a real number array")
    array = array.astype(np.float32, copy=False)
    if array.size and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise WeightError(f"layer '{name}': weight of shape {array.shape} has {bad} non-finite values")
    return array


def _mask(mask: Any, shape: tuple, name: str) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    array = np.asarray(mask)
    if array.shape != shape:
        raise WeightError(f"layer '{name}': mask of shape {array.shape} does not match weight of shape {shape}")
    return array.astype(bool, copy=False)


def _number(value: Any, what: str, name: str) -> float:
    """A real number as float; None, strings and bools are refused, not parsed."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise WeightError(f"layer '{name}': {what} must be a number, got {value!r}")
    return float(value)


def _fraction(value: float, what: str, name: str) -> float:
    value = _number(value, what, name)
    if not 0.0 <= value <= 1.0:
        raise WeightError(f"layer '{name}': {what} {value} is outside [0, 1]")
    return value


def prune_by_threshold(weight: Any, threshold: float, mask: Any = None, name: str = "weight") -> np.ndarray:
    """Keep the connections with ``|w| > threshold``."""
    w = _weight(weight, name)
    threshold = _number(threshold, "threshold", name)
    if not np.isfinite(threshold) or threshold < 0:
        raise WeightError(f"layer '{name}': threshold {threshold} must be finite and >= 0")
    return _mask(mask, w.shape, name) & (np.abs(w) > threshold)


def prune_by_std(weight: Any, quality: float, mask: Any = None, name: str = "weight") -> np.ndarray:
    """Han et al.'s rule: threshold = ``quality`` x the standard deviation of the
    layer's surviving weights (all of them when ``mask`` is None)."""
    w = _weight(weight, name)
    keep = _mask(mask, w.shape, name)
    quality = _number(quality, "quality", name)
    if not np.isfinite(quality) or quality < 0:
        raise WeightError(f"layer '{name}': quality {quality} must be finite and >= 0")
    survivors = w[keep]
    threshold = float(survivors.astype(np.float64).std()) * quality if survivors.size else 0.0
    return keep & (np.abs(w) > threshold)


def prune_by_rate(weight: Any, rate: float, mask: Any = None, name: str = "weight") -> np.ndarray:
    """Prune exactly ``round(rate * size)`` connections of the layer: the already
    pruned ones first, then the smallest magnitudes (ties: lower flat index
    first). A mask that already prunes more than ``rate`` is returned unchanged."""
    w = _weight(weight, name)
    keep = _mask(mask, w.shape, name)
    rate = _fraction(rate, "pruning rate", name)
    count = int(round(rate * w.size))
    if count <= w.size - int(keep.sum()):
        return keep.copy()
    order = np.lexsort((np.abs(w).ravel(), keep.ravel()))  # pruned first, then by magnitude; stable
    out = np.ones(w.size, dtype=bool)
    out[order[:count]] = False
    return out.reshape(w.shape)


def prune_globally_by_rate(weights: Mapping[str, Any], rate: float,
                           masks: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """One magnitude threshold across all layers: prune ``round(rate * total)``
    connections of ``weights`` (``{layer name: weight}``) together, the already
    pruned ones first, then the smallest magnitudes. Layers with larger weights
    keep more, as in the TF-MOT and Xilinx global pruning modes."""
    if not weights:
        return {}
    rate = _fraction(rate, "pruning rate", "global")
    names = list(weights)
    arrays = [_weight(weights[n], n) for n in names]
    keeps = [_mask((masks or {}).get(n), a.shape, n) for n, a in zip(names, arrays)]
    magnitude = np.concatenate([np.abs(a).ravel() for a in arrays])
    kept = np.concatenate([k.ravel() for k in keeps])
    count = int(round(rate * magnitude.size))
    flat = kept.copy()
    if count > magnitude.size - int(kept.sum()):
        order = np.lexsort((magnitude, kept))
        flat = np.ones(magnitude.size, dtype=bool)
        flat[order[:count]] = False
    out, offset = {}, 0
    for name, array in zip(names, arrays):
        out[name] = flat[offset:offset + array.size].reshape(array.shape)
        offset += array.size
    return out


def density(weight_or_mask: Any) -> float:
    """Fraction of nonzero entries (of True entries for a mask)."""
    array = np.asarray(weight_or_mask)
    return float(np.count_nonzero(array)) / array.size if array.size else 0.0


def apply_masks(weights: Mapping[str, Any], masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{name: weight * mask}`` as float32 (layers without a mask are copied unchanged)."""
    out = {}
    for name, weight in weights.items():
        w = _weight(weight, name)
        out[name] = np.where(_mask(masks[name], w.shape, name), w, np.float32(0)) if name in masks else w.copy()
    return out
