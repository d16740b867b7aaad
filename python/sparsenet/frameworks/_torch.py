"""PyTorch modules and state_dicts to sparsenet models.

A module is traced with ``torch.fx`` and run once on the example input (in
eval mode) to learn every tensor's shape; the traced graph must be a chain.
PyTorch already uses sparsenet's layouts (NCHW, (O, I, kh, kw), (out, in),
C, H, W flatten order), so weights are copied as they are, with
``torch.nn.utils.prune`` masks applied and BatchNorm2d folded into the
convolution before it.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from math import prod
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import FormatError
from ..layers import AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear, MaxPool2d, ReLU, Softmax
from ..model import Model
from ._common import fold_batchnorm, require, unique_name

SUPPORTED_MODULES = ("Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten",
                     "Dropout", "BatchNorm2d", "Softmax", "Identity")


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def _parameter(module: Any, name: str) -> np.ndarray | None:
    """A module's parameter as float32, with a ``torch.nn.utils.prune`` mask
    applied where the module still carries ``name_orig`` and ``name_mask``."""
    original, mask = getattr(module, f"{name}_orig", None), getattr(module, f"{name}_mask", None)
    if original is not None and mask is not None:
        return _numpy(original * mask)
    value = getattr(module, name, None)
    return None if value is None else _numpy(value)


# ---------------------------------------------------------------- state_dicts
def apply_prune_masks(state: Mapping[str, Any]) -> dict[str, Any]:
    """Replace each ``X_orig`` + ``X_mask`` pair (``torch.nn.utils.prune``'s
    reparametrization) by ``X = X_orig * X_mask``."""
    out = dict(state)
    for key in list(state):
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            base = key[:-5]
            original, mask = state[key], state[base + "_mask"]
            if tuple(original.shape) != tuple(mask.shape):
                raise FormatError(f"state_dict key '{base}_mask': shape {tuple(mask.shape)} differs from "
                                  f"'{key}' {tuple(original.shape)}")
            out[base] = original * mask
            del out[key], out[base + "_mask"]
    return out


def load_state_dict(source: Any) -> dict[str, Any]:
    """A state_dict from a mapping or a ``.pt``/``.pth`` file, read with
    ``torch.load(weights_only=True)``: tensors and plain containers only, never
    arbitrary pickled objects. Checkpoints that nest the weights under
    ``state_dict`` or ``model_state_dict`` are unwrapped."""
    torch = require("torch", "torch")
    where = "state_dict"
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        if not os.path.exists(where):
            raise FileNotFoundError(f"{where}: no such file")
        try:
            state = torch.load(where, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours its message
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise FormatError(f"{where}: torch.load(weights_only=True) refused it ({first_line}); a whole module "
                              "saved with torch.save(model) cannot be read safely: save model.state_dict() "
                              "instead") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise FormatError(f"{where}: not a readable PyTorch file: {exc}") from None
    else:
        state = source
    if isinstance(state, Mapping):
        for nested in ("state_dict", "model_state_dict"):
            if isinstance(state.get(nested), Mapping):
                state = state[nested]
                break
    if not isinstance(state, Mapping):
        raise FormatError(f"{where}: holds a {type(state).__name__}, not a state_dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise FormatError(f"{where}: the state_dict holds no tensors")
    return tensors


class _StateArchive:
    """A state_dict seen through the interface of the .npz reader, so the
    built-in architectures read it with the same key rules as exported files."""

    max_bytes = 1 << 62

    def __init__(self, arrays: dict[str, np.ndarray], path: str):
        self.arrays, self.path = arrays, path

    def keys(self) -> list[str]:
        return list(self.arrays)

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def read(self, key: str, kinds: Iterable[str] = "fiu", context: str = "", limit: int | None = None) -> np.ndarray:
        array = self.arrays[key]
        if array.dtype.kind not in kinds:
            raise FormatError(f"{self.path}: {context} key '{key}': dtype {array.dtype} is not allowed here")
        return array


def _from_state_dict(source: Any, arch: Any, example_input: Any, backend: str, input_shape: Any,
                     name: str | None) -> Model:
    torch = require("torch", "torch")
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "state_dict"
    raw = load_state_dict(source)
    state = apply_prune_masks(raw)
    if arch is None:
        raise FormatError(f"{where}: a state_dict holds weights only; pass arch= (a built-in architecture name "
                          "or the nn.Module it was saved from)")
    if isinstance(arch, str):
        from ..importers import import_arch

        arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
        return import_arch(_StateArchive(arrays, where), arch, backend)
    if not isinstance(arch, torch.nn.Module):
        raise FormatError(f"arch must be a built-in architecture name or an nn.Module, got {type(arch).__name__}")
    # A module that still carries prune hooks expects the reparametrized keys.
    expected = set(arch.state_dict())
    chosen = raw if expected == set(raw) else state
    try:
        arch.load_state_dict(chosen, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"{where}: does not fit {type(arch).__name__}: {exc}") from None
    return from_module(arch, example_input, backend=backend, input_shape=input_shape, name=name)


# -------------------------------------------------------------------- modules
class _Converter:
    def __init__(self, graph_module: Any, torch: Any):
        self.gm, self.torch = graph_module, torch
        self.layers: list[Layer] = []
        self.names: set[str] = set()
        self.last_conv_node: Any = None  # the node whose output is layers[-1]'s, when that is a Conv2d

    def name(self, node: Any) -> str:
        return unique_name(str(node.target) if node.op == "call_module" else node.name, self.names)

    def add(self, layer: Layer) -> None:
        self.layers.append(layer)

    def conv(self, node: Any, module: Any) -> None:
        where = f"torch module '{node.target}' (Conv2d)"
        if module.groups != 1 or tuple(module.dilation) != (1, 1) or module.padding_mode != "zeros":
            raise FormatError(f"{where}: groups={module.groups}, dilation={module.dilation}, padding_mode="
                              f"'{module.padding_mode}' are not supported (needs groups=1, dilation=1, zeros)")
        layer = Conv2d(_parameter(module, "weight"), _parameter(module, "bias"), stride=tuple(module.stride),
                       padding=module.padding if isinstance(module.padding, str) else tuple(module.padding),
                       name=self.name(node))
        self.add(layer)

    def batchnorm(self, node: Any, module: Any, source: Any) -> None:
        where = f"torch module '{node.target}' (BatchNorm2d)"
        previous = self.layers[-1] if self.layers else None
        if not isinstance(previous, Conv2d) or self.last_conv_node is not source:
            raise FormatError(f"{where}: can only be folded into a Conv2d directly before it")
        if module.running_mean is None or module.running_var is None:
            raise FormatError(f"{where}: has no running statistics (track_running_stats=False) to fold")
        channels = previous.out_channels
        gamma = _parameter(module, "weight") if module.affine else np.ones(channels, np.float32)
        beta = _parameter(module, "bias") if module.affine else np.zeros(channels, np.float32)
        weight, bias = fold_batchnorm(previous.weight.to_dense(), previous.bias, gamma, beta,
                                      _numpy(module.running_mean), _numpy(module.running_var), module.eps, where)
        self.layers[-1] = previous.with_weights(weight, bias)

    def adaptive_avg(self, node: Any, output_size: Any, in_shape: Sequence[int]) -> None:
        where = f"torch node '{node.target if node.op == 'call_module' else node.name}' (AdaptiveAvgPool2d)"
        h, w = in_shape[-2:]
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        oh, ow = (h if size[0] is None else size[0]), (w if size[1] is None else size[1])
        if (size[0], size[1]) == (1, 1):
            self.add(GlobalAvgPool2d(name=self.name(node)))  # any map size, not just the traced one
            return
        if h % oh or w % ow:
            raise FormatError(f"{where}: output size {(oh, ow)} from a {h}x{w} map is not an even average pool; "
                              "sparsenet supports it only where it is the identity or a fixed pool")
        # A fixed pool (1x1, the identity, where the map already has the output
        # size) that refuses other map sizes, for which it would be another pool.
        self.add(AvgPool2d((h // oh, w // ow), name=self.name(node), input_size=(h, w)))

    def flatten(self, node: Any, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        if tuple(out_shape) == tuple(in_shape):
            return
        if len(out_shape) != 2 or out_shape[0] != in_shape[0] or out_shape[1] != prod(in_shape[1:]):
            raise FormatError(f"torch node '{node.name}': reshape {tuple(in_shape)} -> {tuple(out_shape)} is not "
                              "a flatten to (batch, features)")
        if len(in_shape) != 2:
            self.add(Flatten(name=self.name(node)))

    def spatial_mean(self, node: Any, dim: Any, keepdim: bool, in_shape: Sequence[int]) -> None:
        """x.mean((2, 3)): a global average pool (then a flatten unless keepdim)."""
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if len(in_shape) != 4 or sorted(int(d) % 4 for d in dims if d is not None) != [2, 3]:
            raise FormatError(f"torch node '{node.name}': mean over dims {dim} of a {len(in_shape)}-D tensor; "
                              "sparsenet reads the mean over the spatial dims (2, 3) of an (N, C, H, W) map")
        name = self.name(node)
        self.add(GlobalAvgPool2d(name=name))
        if not keepdim:
            self.add(Flatten(name=unique_name(f"{name}.flatten", self.names)))

    def softmax(self, node: Any, dim: Any, in_shape: Sequence[int]) -> None:
        if len(in_shape) != 2 or dim not in (1, -1):
            raise FormatError(f"torch node '{node.name}': softmax over dim {dim} of a {len(in_shape)}-D tensor; "
                              "sparsenet's Softmax runs over the features of (N, F)")
        self.add(Softmax(name=self.name(node)))

    def module(self, node: Any, in_shape: Sequence[int], out_shape: Sequence[int], source: Any) -> None:
        nn = self.torch.nn
        module = self.gm.get_submodule(node.target)
        kind = type(module).__name__
        where = f"torch module '{node.target}' ({kind})"
        if isinstance(module, nn.Conv2d):
            self.conv(node, module)
        elif isinstance(module, nn.Linear):
            self.add(Linear(_parameter(module, "weight"), _parameter(module, "bias"), name=self.name(node)))
        elif isinstance(module, nn.BatchNorm2d):
            self.batchnorm(node, module, source)
        elif isinstance(module, nn.ReLU):
            self.add(ReLU(name=self.name(node)))
        elif isinstance(module, nn.MaxPool2d):
            if module.dilation not in (1, (1, 1)) or module.return_indices:
                raise FormatError(f"{where}: dilation and return_indices are not supported")
            self.add(MaxPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode, name=self.name(node)))
        elif isinstance(module, nn.AvgPool2d):
            if module.divisor_override is not None:
                raise FormatError(f"{where}: divisor_override is not supported")
            self.add(AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                               module.count_include_pad, name=self.name(node)))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            self.adaptive_avg(node, module.output_size, in_shape)
        elif isinstance(module, nn.Flatten):
            self.flatten(node, in_shape, out_shape)
        elif isinstance(module, (nn.Dropout, nn.Dropout2d)):
            self.add(Dropout(module.p, name=self.name(node)))
        elif isinstance(module, nn.Softmax):
            self.softmax(node, module.dim, in_shape)
        elif isinstance(module, nn.Identity):
            pass
        else:
            raise FormatError(f"{where} has no sparsenet equivalent; supported modules: {', '.join(SUPPORTED_MODULES)}")

    def function(self, node: Any, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        torch, F = self.torch, self.torch.nn.functional
        target = node.target
        label = getattr(target, "__name__", str(target))
        if node.op == "call_method":
            if target in ("relu", "relu_"):
                self.add(ReLU(name=self.name(node)))
            elif target in ("view", "reshape", "flatten"):
                self.flatten(node, in_shape, out_shape)
            elif target == "softmax":
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                self.softmax(node, dim, in_shape)
            elif target == "mean":
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
                self.spatial_mean(node, dim, bool(keepdim), in_shape)
            elif target not in ("contiguous", "detach", "float", "clone"):  # no-ops on float32 activations
                raise FormatError(f"torch node '{node.name}': method .{target}() has no sparsenet equivalent")
            return
        if target in (torch.relu, torch.relu_, F.relu):
            self.add(ReLU(name=self.name(node)))
            return
        if target in (torch.flatten, torch.reshape):
            self.flatten(node, in_shape, out_shape)
            return
        normalized = node.normalized_arguments(self.gm, normalize_to_only_use_kwargs=True)
        kwargs = dict(normalized.kwargs) if normalized is not None else dict(node.kwargs)
        if target in (F.max_pool2d, torch.max_pool2d):
            if kwargs.get("dilation", 1) not in (1, (1, 1), [1, 1]) or kwargs.get("return_indices", False):
                raise FormatError(f"torch node '{node.name}' ({label}): dilation and return_indices are not supported")
            self.add(MaxPool2d(kwargs["kernel_size"], kwargs.get("stride") or None, kwargs.get("padding", 0),
                               kwargs.get("ceil_mode", False), name=self.name(node)))
        elif target in (F.avg_pool2d, torch.nn.functional.avg_pool2d):
            if kwargs.get("divisor_override") is not None:
                raise FormatError(f"torch node '{node.name}' ({label}): divisor_override is not supported")
            self.add(AvgPool2d(kwargs["kernel_size"], kwargs.get("stride") or None, kwargs.get("padding", 0),
                               kwargs.get("ceil_mode", False), kwargs.get("count_include_pad", True),
                               name=self.name(node)))
        elif target is F.adaptive_avg_pool2d:
            self.adaptive_avg(node, kwargs["output_size"], in_shape)
        elif target in (F.dropout, torch.dropout):
            if kwargs.get("training", kwargs.get("train", False)):
                raise FormatError(f"torch node '{node.name}': dropout in training mode")
            self.add(Dropout(kwargs.get("p", 0.5), name=self.name(node)))
        elif target in (F.softmax, torch.softmax):
            self.softmax(node, kwargs.get("dim"), in_shape)
        elif target is torch.mean:
            self.spatial_mean(node, kwargs.get("dim"), bool(kwargs.get("keepdim", False)), in_shape)
        else:
            raise FormatError(f"torch node '{node.name}': function {label} has no sparsenet equivalent")


def _tensor_shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if not hasattr(meta, "shape") or not hasattr(meta, "dtype"):  # not a TensorMetadata: an int, a tuple
        return None
    return tuple(int(d) for d in meta.shape)


def _node_inputs(node: Any, fx: Any) -> list[Any]:
    found: list[Any] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n))
    return found


def from_module(module: Any, example_input: Any = None, backend: str = "auto", input_shape: Any = None,
                name: str | None = None) -> Model:
    torch = require("torch", "torch")
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    kind = type(module).__name__
    if example_input is None:
        if input_shape is None:
            raise FormatError(f"torch module {kind}: pass example_input (one batch) or input_shape")
        example_input = torch.zeros((1, *input_shape))
    example = torch.as_tensor(np.asarray(example_input, np.float32)) if not isinstance(example_input, torch.Tensor) \
        else example_input.detach().float().cpu()
    if example.ndim not in (2, 4):
        raise FormatError(f"torch module {kind}: example input of shape {tuple(example.shape)} must be (N, C, H, W) "
                          "or (N, F)")
    was_training = module.training
    module.eval()
    try:
        try:
            graph_module = fx.symbolic_trace(module)
        except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError...
            raise FormatError(f"torch module {kind}: torch.fx cannot trace it ({type(exc).__name__}: {exc}); "
                              "sparsenet reads modules whose forward is a plain chain of layers") from None
        try:
            with torch.no_grad():
                ShapeProp(graph_module).propagate(example)
        except Exception as exc:  # torch wraps the failing node's error in a RuntimeError
            dtypes = sorted({str(p.dtype) for p in module.parameters()} - {"torch.float32"})
            hint = (f"its parameters are {', '.join(dtypes)}: convert it with module.float()" if dtypes else
                    "check that the example input fits the module")
            raise FormatError(f"torch module {kind}: running it once on the float32 example input of shape "
                              f"{tuple(example.shape)} failed ({type(exc).__name__}: {exc}); {hint}") from None
        converter = _Converter(graph_module, torch)
        current = None
        for node in graph_module.graph.nodes:
            if node.op == "placeholder":
                if current is not None:
                    raise FormatError(f"torch module {kind}: forward takes several inputs; sparsenet runs one")
                current = node
                continue
            if node.op == "get_attr":
                raise FormatError(f"torch module {kind}: node '{node.name}' reads tensor '{node.target}' directly; "
                                  "only modules and plain functions are supported")
            inputs = _node_inputs(node, fx)
            if node.op == "output":
                if inputs != [current]:
                    raise FormatError(f"torch module {kind}: the output is not the last layer's single tensor")
                break
            out_shape = _tensor_shape(node)
            if out_shape is None:  # a helper such as x.size(0), feeding a view
                continue
            if [n for n in inputs if _tensor_shape(n) is not None] != [current]:
                raise FormatError(f"torch module {kind}: node '{node.name}' takes "
                                  f"{[n.name for n in inputs]}, not just the previous layer's output "
                                  f"'{current.name}': sparsenet runs sequential chains only")
            in_shape = _tensor_shape(current)
            if node.op == "call_module":
                converter.module(node, in_shape, out_shape, current)
            else:
                converter.function(node, in_shape, out_shape)
            if converter.layers and isinstance(converter.layers[-1], Conv2d) and node.op == "call_module" \
                    and isinstance(graph_module.get_submodule(node.target), torch.nn.Conv2d):
                converter.last_conv_node = node
            current = node
        if not converter.layers:
            raise FormatError(f"torch module {kind}: no layers found")
        return Model(converter.layers, backend=backend, input_shape=tuple(example.shape[1:]), name=name or kind)
    finally:
        module.train(was_training)


def from_torch(source: Any, example_input: Any = None, *, arch: Any = None, backend: str = "auto",
               input_shape: Sequence[int] | None = None, name: str | None = None) -> Model:
    torch = require("torch", "torch")
    if isinstance(source, torch.nn.Module):
        if arch is not None:
            raise FormatError("arch= is for state_dicts; a module is its own architecture")
        return from_module(source, example_input, backend, input_shape, name)
    if isinstance(source, (str, os.PathLike, Mapping)):
        return _from_state_dict(source, arch, example_input, backend, input_shape, name)
    raise FormatError(f"from_torch takes an nn.Module, a state_dict or a .pt path, got {type(source).__name__}")
