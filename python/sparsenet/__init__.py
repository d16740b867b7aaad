"""sparsenet: sparse neural-network inference that makes pruning pay off.

    >>> import sparsenet
    >>> model = sparsenet.models.lenet5()            # Han et al.'s densities
    >>> y = model(x)                                  # x: float32 (N, 1, 28, 28)
    >>> dense = sparsenet.Model.load("lenet5.npz", backend="dense")
"""

from __future__ import annotations

import os

try:
    from . import _core
except ImportError as _exc:
    if "libscipy_openblas" not in str(_exc):
        raise
    # _core finds OpenBLAS through an RPATH into its own site-packages; where pip
    # put scipy-openblas32 elsewhere (a venv with --system-site-packages, a
    # --user install), load that copy by path first (RTLD_GLOBAL), then retry.
    import scipy_openblas32

    scipy_openblas32.get_openblas_config()
    from . import _core
from .errors import FormatError, InputError, ModelError, ShapeError, WeightError
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear, MaxPool2d, ReLU, Softmax,
                     SparseWeight)
from .model import CudaModel, DeviceError, Model
from . import datasets, models, prune

__version__ = "0.1.0"


def set_num_threads(num_threads: int) -> None:
    """Threads for sparse kernels and the BLAS alike (so comparisons are fair);
    1 to 1024, else ValueError."""
    _core.set_num_threads(int(num_threads))


def get_num_threads() -> int:
    return _core.get_num_threads()


def kernel_info() -> dict:
    """Which kernels run: the ISA new layers use, why, the BLAS, the thread count."""
    forced = os.environ.get("SPARSENET_ISA") or None
    isa = _core.active_isa()
    avx512 = isa == "avx2" and _core.avx512_kernels()
    return {
        "isa": isa,
        "forced_by": "SPARSENET_ISA" if forced else None,
        "cpu_avx2_fma": _core.cpu_has_avx2_fma(),
        "kernels": {
            "csrmv": [f"f32_csrmv_u16_{isa}", f"f32_csrmv_u32_{isa}"],
            # x in L1 read by loads, where they beat gathers (x fits L1, vector panels)
            "csrmv_x_loads": ([("f32_csrmv_u16_l1_avx512" if avx512 else "f32_csrmv_u16_l1_avx2")]
                              if isa == "avx2" else []),
            # batch 1 on sliced windows where they fill enough lanes (not with SPARSENET_SELL=0)
            "sellmv": (["f32_sellmv_avx512"] if avx512 and os.environ.get("SPARSENET_SELL") != "0"
                       and _core._sellmv_win() else []),
            "csrmm": (["f32_csrmm_u16_avx512", "f32_csrmm_u32_avx512"] if avx512 else
                      [f"f32_csrmm_u16_{isa}", f"f32_csrmm_u32_{isa}"]),
            # direct convolution of 3-wide kernels with aligned loads
            "conv3": ["f32_conv3_avx512"] if avx512 else ["f32_conv3_avx2"] if isa == "avx2" else [],
            # dense direct convolution's and Winograd's register tiles: 6 channels x 16 columns, and
            # x 32 where more than 16 are left
            "conv_dense": [f"f32_conv_dense_{isa}"] + (["f32_conv_dense_avx512"] if avx512 else []),
            # between the caller's (N, F) and the layers' feature-major (F, N)
            "transpose": [f"f32_transpose_{isa}"],
            "conv2d": "sparse: direct convolution on csrmm, or conv3 for 3-wide kernels (stride 1), "
                      "im2col + csrmm (other strides); dense: im2col + sgemm; auto also: dense direct, "
                      "dense Winograd (stride 1, 3x3 / 5x5)",
        },
        # AVX-512 kernels in the avx2 table: the CPU has AVX-512F+VL and SPARSENET_AVX512 is not 0
        "avx512_kernels": bool(avx512),
        # 512-bit FMAs at the 256-bit rate (measured once, Zen 5 but not Zen 4): conv3 then takes
        # 128 positions per call on every map, else only on rows of 17-32 floats (28x28 maps)
        "avx512_full_width": bool(avx512 and _core._cpu_full_width_avx512()),
        # batch-1 layers whose nonzeros outgrow half of it prefetch them from memory
        "last_level_cache_bytes": _core.last_level_cache_bytes(),
        "blas": _core.blas_info() + "; single-threaded calls from sparsenet's pool",
        # OPENBLAS_CORETYPE, when set, picks OpenBLAS's kernels (read when the library loads) instead of
        # the CPU's own: the dense backend may then run narrower ones (Haswell's on an AVX-512 CPU)
        "blas_core_forced": os.environ.get("OPENBLAS_CORETYPE") or None,
        "num_threads": _core.get_num_threads(),
    }


DeviceError.__module__ = "sparsenet"


def cuda_available() -> bool:
    """Whether the CUDA path was built (SPARSENET_ENABLE_CUDA=ON) and a CUDA device is present."""
    return bool(_core.cuda_available())


__all__ = [
    "Model", "Layer", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "ReLU", "Flatten", "Softmax", "Dropout",
    "SparseWeight", "models", "datasets", "prune", "set_num_threads", "get_num_threads", "kernel_info", "cuda_available",
    "ModelError", "ShapeError", "WeightError", "FormatError", "InputError", "CudaModel", "DeviceError",
]
