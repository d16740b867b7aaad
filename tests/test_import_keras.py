"""Model.from_keras: .keras archives and .h5 files saved by Keras 3 (torch
backend), read with h5py alone, against Keras's own forward pass."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

pytest.importorskip("h5py")
pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - keras imported earlier with another backend
    pytest.skip("these tests need Keras on the torch backend", allow_module_level=True)
L = keras.layers

from sparsenet import FormatError, Model  # noqa: E402
from sparsenet.cli import main as cli_main  # noqa: E402
from sparsenet.models import LENET5, MNIST_CNN, VGG16  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


def lenet5():
    return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(20, 5), L.MaxPooling2D(), L.Conv2D(50, 5),
                             L.MaxPooling2D(), L.Flatten(), L.Dense(500, activation="relu"), L.Dense(10)])


def mnist_cnn():  # functional, with separate Activation layers
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(32, 5, padding="same", activation="relu")(inputs)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(64, 5, padding="same")(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(1024)(x)
    x = L.ReLU()(x)
    return keras.Model(inputs, L.Dense(10)(x))


def small_vgg():
    def block(width):
        return [L.Conv2D(width, 3, padding="same", activation="relu")]

    return keras.Sequential([keras.Input((32, 32, 3)), *block(8), *block(8), L.MaxPooling2D(),
                             *block(16), *block(16), L.AveragePooling2D(3, strides=1, padding="same"),
                             L.MaxPooling2D(), *block(32), L.MaxPooling2D(), L.Flatten(),
                             L.Dense(64, activation="relu"), L.Dropout(0.5), L.Dense(64, activation="relu"),
                             L.Dropout(0.5), L.Dense(10), L.Softmax()])


DENSITIES = {
    "lenet5": [LENET5.han_densities[n] for n in ("conv1", "conv2", "fc1", "fc2")],
    "mnist_cnn": [MNIST_CNN.han_densities[n] for n in ("conv1", "conv2", "fc1", "fc2")],
    "small_vgg": [VGG16.han_densities[n] for n in ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1",
                                                   "fc6", "fc7", "fc8")],
}
BUILDERS = {"lenet5": lenet5, "mnist_cnn": mnist_cnn, "small_vgg": small_vgg}


def pruned(name):
    """The Keras model with each kernel magnitude-pruned to Han's density."""
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    weighted = [layer for layer in model.layers if isinstance(layer, (L.Conv2D, L.Dense))]
    for layer, density in zip(weighted, DENSITIES[name], strict=True):
        kernel, bias = layer.get_weights()
        threshold = np.quantile(np.abs(kernel), 1.0 - density)
        layer.set_weights([np.where(np.abs(kernel) >= threshold, kernel, 0), bias + 0.01])
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each net saved as .keras and .h5, with an NHWC input batch and Keras's output."""
    directory = tmp_path_factory.mktemp("keras")
    out = {}
    rng = np.random.default_rng(1)
    for name in BUILDERS:
        model = pruned(name)
        x = rng.random((3, *model.input_shape[1:]), dtype=np.float32)
        expected = np.asarray(model(x).detach().cpu())
        for extension in ("keras", "h5"):
            model.save(directory / f"{name}.{extension}")
        out[name] = (directory, x, expected)
    return out


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("extension", ("keras", "h5"))
@pytest.mark.parametrize("name", tuple(BUILDERS))
def test_matches_keras(saved, name, extension):
    directory, x, expected = saved[name]
    model = Model.from_keras(directory / f"{name}.{extension}")
    assert model.input_shape == (x.shape[3], x.shape[1], x.shape[2])
    assert relative_error(model(x.transpose(0, 3, 1, 2)), expected) < 1e-4
    weighted = [layer for layer in model.layers if layer.kind in ("conv2d", "linear")]
    for layer, density in zip(weighted, DENSITIES[name], strict=True):
        assert layer.density == pytest.approx(density, abs=0.01)


def test_cli_convert(saved, tmp_path, capsys):
    directory, x, expected = saved["lenet5"]
    assert cli_main(["convert", str(directory / "lenet5.keras"), "-o", str(tmp_path / "out.npz")]) == 0
    assert "dense fp32" in capsys.readouterr().out
    assert relative_error(Model.load(tmp_path / "out.npz")(x.transpose(0, 3, 1, 2)), expected) < 1e-4


def test_unsupported_layer_is_named(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3), L.BatchNormalization(name="bn"),
                              L.Flatten(), L.Dense(2)])
    model.save(tmp_path / "bn.keras")
    with pytest.raises(FormatError, match=r"Keras layer 'bn' \(BatchNormalization\) is not supported"):
        Model.from_keras(tmp_path / "bn.keras")
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh", name="fc")])
    model.save(tmp_path / "tanh.h5")
    with pytest.raises(FormatError, match=r"Keras layer 'fc' \(Dense\): activation 'tanh' is not supported"):
        Model.from_keras(tmp_path / "tanh.h5")


def test_malformed_files(tmp_path, saved):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(FormatError, match="garbage.h5"):
        Model.from_keras(garbage)
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(FormatError, match="config.json and model.weights.h5"):
        Model.from_keras(tmp_path / "empty.keras")
    model = pruned("lenet5")
    model.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(FormatError, match="no 'model_config'"):
        Model.from_keras(tmp_path / "only.weights.h5")
    with pytest.raises(FileNotFoundError):
        Model.from_keras(tmp_path / "missing.keras")


def test_same_padding_refuses_sizes_it_would_pad_otherwise(tmp_path):
    """A stride-2 padding='same' Conv2D of a model with a free input size,
    imported for 9x9, pads 1 row on each side; at 10x10 Keras pads 0 before
    and 1 after, so running it would keep the 5x5 output and shift every
    window. It is refused (ShapeError); 13x13, padded alike, matches Keras."""
    from sparsenet import ShapeError
    keras.utils.set_random_seed(3)
    net = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(4, 3, strides=2, padding="same"),
                            L.MaxPooling2D(3, strides=2, padding="same")])
    net.save(tmp_path / "same.keras")
    model = Model.from_keras(tmp_path / "same.keras", input_shape=(3, 9, 9))
    rng = np.random.default_rng(2)
    for size in (9, 13):
        x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
        expected = np.asarray(net(x).detach().cpu()).transpose(0, 3, 1, 2)
        assert relative_error(model(x.transpose(0, 3, 1, 2)), expected) < 1e-5, size
    with pytest.raises(ShapeError, match=r"conv2d layer .*'same' padding resolved at import to \(1, 1\)"):
        model(np.zeros((1, 3, 10, 10), np.float32))


@pytest.mark.parametrize("flatten_format", ["channels_first", None])
def test_channels_first_model_with_dense_layers(tmp_path, flatten_format):
    """channels_first convolutions, then a Flatten and Dense layers (which
    record no data_format). Keras's Flatten(data_format="channels_first") moves
    channels last before flattening (H, W, C order: the next Dense's columns are
    permuted), the default one flattens the (C, H, W) map as it lies."""
    keras.utils.set_random_seed(5)
    flatten = L.Flatten(data_format=flatten_format) if flatten_format else L.Flatten()
    net = keras.Sequential([keras.Input((2, 8, 8)), L.Conv2D(3, 3, data_format="channels_first", activation="relu"),
                            L.MaxPooling2D(data_format="channels_first"), flatten,
                            L.Dense(5, activation="relu"), L.Dropout(0.2), L.Dense(4)])
    net.save(tmp_path / "cf.keras")
    model = Model.from_keras(tmp_path / "cf.keras")
    assert model.input_shape == (2, 8, 8)
    x = np.random.default_rng(6).standard_normal((3, 2, 8, 8)).astype(np.float32)
    assert relative_error(model(x), np.asarray(net(x).detach().cpu())) < 1e-5


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling_at_any_input_size(tmp_path, keepdims):
    """GlobalAveragePooling2D becomes GlobalAvgPool2d (+ Flatten unless keepdims):
    a model with a free input size runs other sizes than the one imported."""
    keras.utils.set_random_seed(7)
    head = [L.GlobalAveragePooling2D(keepdims=keepdims)] + ([L.Flatten()] if keepdims else [])
    net = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(4, 3, activation="relu"), *head, L.Dense(2)])
    net.save(tmp_path / "gap.keras")
    model = Model.from_keras(tmp_path / "gap.keras", input_shape=(3, 8, 8))
    rng = np.random.default_rng(3)
    for size in (8, 13):
        x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
        expected = np.asarray(net(x).detach().cpu())
        assert relative_error(model(x.transpose(0, 3, 1, 2)), expected) < 1e-5, size
