"""Importers without their framework: a missing package names the extra to install."""

from __future__ import annotations

import sys

import pytest

from sparsenet import Model
from sparsenet.frameworks._common import MissingExtraError, require


def test_missing_package_names_the_extra():
    with pytest.raises(MissingExtraError, match=r'pip install "sparsenet\[onnx\]"') as info:
        require("sparsenet_no_such_package", "onnx")
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize("module, call, extra", [
    ("onnx", lambda: Model.from_onnx("model.onnx"), "onnx"),
    ("h5py", lambda: Model.from_keras("model.keras"), "keras"),
    ("torch", lambda: Model.from_torch("weights.pt", arch="lenet5"), "torch"),
])
def test_importers_without_their_package(monkeypatch, module, call, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf'sparsenet\[{extra}\]'):
        call()
