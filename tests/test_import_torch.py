"""Model.from_torch: modules (traced), state_dicts and .pt files, pruned with
torch.nn.utils.prune, against PyTorch's own forward pass."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import sparsenet  # noqa: E402
from sparsenet import FormatError, Model, ShapeError  # noqa: E402
from sparsenet.cli import main as cli_main  # noqa: E402
from torch_nets import NETS, example, finalize, han_densities, make_net, relative_error, small_vgg  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def torch_forward(net, x):
    with torch.no_grad():
        return net(x).numpy()


@pytest.mark.parametrize("name", NETS)
def test_pruned_module_matches_torch(name):
    net = make_net(name)  # still reparametrized: weight_orig * weight_mask via hooks
    x = example(name)
    model = Model.from_torch(net, x)
    assert relative_error(model(x.numpy()), torch_forward(net, x)) < 1e-4
    weighted = [layer for layer in model.layers if isinstance(layer, (sparsenet.Conv2d, sparsenet.Linear))]
    for layer, density in zip(weighted, han_densities(name, net).values()):
        assert layer.density == pytest.approx(density, abs=0.01)
    if name == "small_vgg":  # BatchNorm folded; the identity adaptive pool a 1x1 pool bound to its map size
        (pool,) = [layer for layer in model.layers if isinstance(layer, sparsenet.AvgPool2d)]
        assert pool.kernel_size == (1, 1) and pool.input_size == (4, 4)
        assert isinstance(model.layers[-1], sparsenet.Softmax)
    assert net.training is False


@pytest.mark.parametrize("name", ("lenet5", "mnist_cnn"))
@pytest.mark.parametrize("finalized", (False, True), ids=("reparametrized", "finalized"))
def test_state_dict_file_with_builtin_arch(tmp_path, name, finalized):
    net = make_net(name)
    if finalized:
        finalize(net)
    path = tmp_path / f"{name}.pt"
    torch.save(net.state_dict(), path)
    x = example(name)
    model = Model.from_torch(path, arch=name)
    assert relative_error(model(x.numpy()), torch_forward(net, x)) < 1e-4
    assert model.name == name


@pytest.mark.parametrize("finalized", (False, True), ids=("reparametrized", "finalized"))
def test_state_dict_with_module_arch(finalized):
    net = make_net("small_vgg")
    if finalized:
        finalize(net)
    x = example("small_vgg")
    fresh = small_vgg()  # plain module, no prune hooks: the masks are applied on load
    model = Model.from_torch({"state_dict": net.state_dict(), "epoch": 3}, arch=fresh, example_input=x)
    assert relative_error(model(x.numpy()), torch_forward(net, x)) < 1e-4


def test_adaptive_average_pool_and_functional_softmax():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn(self.conv(x))))
            x = nn.functional.avg_pool2d(x, 1)
            return nn.functional.softmax(self.fc(x.reshape(x.shape[0], -1)), dim=-1)

    net = Net().eval()
    net.bn.running_var.fill_(2.0)
    x = torch.randn(2, 2, 8, 8)
    model = Model.from_torch(net, x)
    assert [layer.kind for layer in model.layers] == ["conv2d", "relu", "avgpool2d", "avgpool2d", "flatten",
                                                       "linear", "softmax"]
    assert relative_error(model(x.numpy()), torch_forward(net, x)) < 1e-4
    # AdaptiveAvgPool2d(2) became a 2x2 pool for the traced 4x4 map: on another
    # map size it would be another pool, so the model refuses it
    with pytest.raises(ShapeError, match=r"avgpool2d layer 'pool': was resolved for \(4, 4\) maps at import"):
        model(np.zeros((1, 2, 16, 16), np.float32))


def test_adaptive_pool_that_is_not_an_even_pool_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32, 2))
    with pytest.raises(FormatError, match=r"'1' \(AdaptiveAvgPool2d\).*not an even average pool"):
        Model.from_torch(net, torch.zeros(1, 1, 9, 9))


def test_unsupported_module_is_named():
    net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(FormatError, match=r"torch module '1' \(Tanh\) has no sparsenet equivalent"):
        Model.from_torch(net, torch.zeros(1, 4))


def test_residual_graph_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + x

    with pytest.raises(FormatError, match="sequential chains only"):
        Model.from_torch(Residual(), torch.zeros(1, 4))


def test_batchnorm_without_conv_is_refused():
    with pytest.raises(FormatError, match="BatchNorm2d.*folded into a Conv2d"):
        Model.from_torch(nn.Sequential(nn.BatchNorm2d(1), nn.Flatten()), torch.zeros(1, 1, 2, 2))


def test_bad_files(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(2, 2)), whole)  # a pickled module, not a state_dict
    with pytest.raises(FormatError, match="weights_only=True.*state_dict"):
        Model.from_torch(whole, arch="lenet5")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(FormatError, match="garbage.pt"):
        Model.from_torch(garbage, arch="lenet5")
    with pytest.raises(FileNotFoundError):
        Model.from_torch(tmp_path / "missing.pt", arch="lenet5")
    state = finalize(make_net("lenet5")).state_dict()
    with pytest.raises(FormatError, match="pass arch="):
        Model.from_torch(state)
    with pytest.raises(FormatError, match=r"conv1.weight.*expected \(32, 1, 5, 5\)"):
        Model.from_torch(state, arch="mnist_cnn")
    with pytest.raises(FormatError, match="does not fit Sequential"):
        Model.from_torch(state, arch=small_vgg(), example_input=example("small_vgg"))


def test_cli_convert_state_dict(tmp_path, capsys):
    net = finalize(make_net("lenet5"))
    source, target = tmp_path / "lenet5.pth", tmp_path / "lenet5.npz"
    torch.save(net.state_dict(), source)
    assert cli_main(["convert", str(source), "-o", str(target), "--arch", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "fc1" in out and "bytes" in out
    x = example("lenet5")
    assert relative_error(Model.load(target)(x.numpy()), torch_forward(net, x)) < 1e-4
    assert cli_main(["convert", str(source), "-o", str(target)]) == 2
    assert "--arch" in capsys.readouterr().err


def test_float64_module_is_refused_with_a_hint():
    """The example input is cast to float32; a float64 module fails torch's
    shape pass: a FormatError that says how to convert it, not torch's error."""
    net = make_net("lenet5").double()
    with pytest.raises(FormatError, match=r"its parameters are torch.float64: convert it with module.float\(\)"):
        Model.from_torch(net, example("lenet5"))


@pytest.mark.parametrize("head", ["method", "function", "keepdim"])
def test_spatial_mean_and_no_op_methods(head):
    """x.mean((2, 3)) (global average pooling, as torchvision-style heads write
    it) becomes AvgPool2d + Flatten; .float(), .detach(), .contiguous() on
    float32 activations are no-ops."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.conv(x.float())).detach().contiguous()
            if head == "method":
                x = x.mean((2, 3))
            elif head == "function":
                x = torch.mean(x, dim=(-2, -1))
            else:
                x = x.mean(dim=[2, 3], keepdim=True).flatten(1)
            return self.fc(x)

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 3, 6, 6)
    model = Model.from_torch(net, x)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model(x.numpy()), expected, rtol=1e-5, atol=1e-5)


def test_mean_over_channels_is_refused():
    class Net(nn.Module):
        def forward(self, x):
            return x.mean(1)

    with pytest.raises(FormatError, match=r"mean over dims 1 of a 4-D tensor"):
        Model.from_torch(Net(), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("head", ["mean", "adaptive"])
def test_global_average_pooling_runs_other_input_sizes(head):
    """x.mean((2, 3)) and AdaptiveAvgPool2d(1) average the whole map at any size:
    imported at 8x8, a 12x12 input matches torch (they once became an 8x8
    average pool that read the top-left corner of larger maps)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            x = x.mean((2, 3)) if head == "mean" else torch.flatten(self.pool(x), 1)
            return self.fc(x)

    torch.manual_seed(1)
    net = Net().eval()
    model = Model.from_torch(net, torch.randn(1, 3, 8, 8))
    for size in (8, 12, 5):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            np.testing.assert_allclose(model(x.numpy()), net(x).numpy(), rtol=1e-5, atol=1e-5)
