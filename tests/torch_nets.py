"""PyTorch versions of LeNet-5, the MNIST CNN and a small VGG-style net,
pruned with torch.nn.utils.prune to Han et al.'s densities (for the import
tests; import only after pytest.importorskip("torch"))."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune

from sparsenet.models import LENET5, MNIST_CNN, VGG16


class LeNet5(nn.Module):
    """Caffe's LeNet-5, written with functional calls and a view, as tutorials do."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class MnistCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(3136, 1024), nn.Linear(1024, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def small_vgg(batchnorm: bool = True) -> nn.Sequential:
    """VGG-style 3x32x32 net: conv blocks (with BatchNorm), pools, an adaptive
    average pool that is the identity here, three FC layers, softmax."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), *([nn.BatchNorm2d(cout)] if batchnorm else []), nn.ReLU(inplace=True)]

    net = nn.Sequential(
        nn.Sequential(*block(3, 8), *block(8, 8), nn.MaxPool2d(2),
                      *block(8, 16), *block(16, 16), nn.MaxPool2d(2),
                      *block(16, 32), nn.MaxPool2d(2)),
        nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(),
        nn.Sequential(nn.Linear(512, 64), nn.ReLU(True), nn.Dropout(),
                      nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10)),
        nn.Softmax(dim=1),
    )
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics a trained net would have
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return net


_VGG_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "fc6", "fc7", "fc8")


def han_densities(name: str, net: nn.Module) -> dict[nn.Module, float]:
    """Han et al.'s density for each weighted module (the small VGG takes VGG-16's
    first layers' and FC layers' densities in order)."""
    weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    table = {"lenet5": [LENET5.han_densities[n] for n in ("conv1", "conv2", "fc1", "fc2")],
             "mnist_cnn": [MNIST_CNN.han_densities[n] for n in ("conv1", "conv2", "fc1", "fc2")],
             "small_vgg": [VGG16.han_densities[n] for n in _VGG_NAMES]}[name]
    return dict(zip(weighted, table))


def make_net(name: str, seed: int = 0) -> nn.Module:
    """The net, pruned by magnitude to Han's densities, still reparametrized
    (weight_orig + weight_mask), in eval mode."""
    torch.manual_seed(seed)
    net = {"lenet5": LeNet5, "mnist_cnn": MnistCNN, "small_vgg": small_vgg}[name]()
    for module, density in han_densities(name, net).items():
        prune.l1_unstructured(module, "weight", amount=1.0 - density)
    return net.eval()


def finalize(net: nn.Module) -> nn.Module:
    """Make pruning permanent: plain ``weight`` tensors with zeros."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    return net


INPUT_SHAPES = {"lenet5": (1, 28, 28), "mnist_cnn": (1, 28, 28), "small_vgg": (3, 32, 32)}
NETS = tuple(INPUT_SHAPES)


def example(name: str, batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand((batch, *INPUT_SHAPES[name]), generator=torch.Generator().manual_seed(seed))


def relative_error(actual, expected) -> float:
    import numpy as np

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))
