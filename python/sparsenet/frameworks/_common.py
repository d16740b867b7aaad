"""What the framework importers share: optional imports, BatchNorm folding,
shape inference through the engine, and unique layer names."""

from __future__ import annotations

import importlib
from typing import Any, Sequence

import numpy as np

from .. import _core
from ..errors import FormatError
from ..layers import Layer


class MissingExtraError(ImportError):
    """A framework package that an importer needs is not installed."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or say which sparsenet extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"this importer needs the '{module}' package ({exc}); "
                                f"install it with: pip install \"sparsenet[{extra}]\"") from None


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
                   mean: np.ndarray, var: np.ndarray, eps: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode BatchNorm into the convolution before it:
    ``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
    per output channel. Pruned weights stay exactly zero."""
    out_channels = weight.shape[0]
    parts = {"scale": gamma, "shift": beta, "mean": mean, "variance": var}
    for what, array in parts.items():
        if np.shape(array) != (out_channels,):
            raise FormatError(f"{where}: batch-norm {what} has shape {np.shape(array)}, expected ({out_channels},) "
                              f"for the convolution weight {weight.shape}")
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    folded = (np.asarray(weight, np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
    base = np.zeros(out_channels) if bias is None else np.asarray(bias, np.float64)
    new_bias = ((base - np.asarray(mean, np.float64)) * scale + np.asarray(beta, np.float64)).astype(np.float32)
    return folded, new_bias


def output_shape(layers: Sequence[Layer], input_shape: Sequence[int]) -> tuple[int, ...]:
    """One sample's shape after ``layers``, as the engine computes it (raises
    ShapeError naming the layer where the chain breaks)."""
    if not layers:
        return tuple(int(d) for d in input_shape)
    engine = _core.Model([layer._build("sparse") for layer in layers])
    return tuple(engine.output_shape([int(d) for d in input_shape]))


def unique_name(name: str, taken: set[str]) -> str:
    """``name`` made safe for .npz keys (no '/') and unique among ``taken``."""
    base = name.replace("/", ".").strip(".") or "layer"
    candidate, suffix = base, 1
    while candidate in taken:
        candidate, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(candidate)
    return candidate


def same_padding(size: int, kernel: int, stride: int, where: str) -> int:
    """TensorFlow/ONNX 'SAME' padding for one axis when it is symmetric; sparsenet
    pads both sides alike, so an odd total (extra row at the end) is refused."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    if total % 2:
        raise FormatError(f"{where}: 'same' padding here needs {total} rows/columns split unevenly "
                          f"(input {size}, kernel {kernel}, stride {stride}); sparsenet pads symmetrically")
    return total // 2
