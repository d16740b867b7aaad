"""PyTorch adapter: masks on a module's Conv2d / Linear weights, masked
retraining, the iterate-prune-retrain loop and export to sparsenet.

    pruner = Pruner(net)                        # all Conv2d and Linear layers
    pruner.attach(optimizer)                    # pruned weights stay exactly zero
    schedule = PolynomialDecay(0.0, {"fc1": 0.92, ...}, begin_step=0, end_step=2000, frequency=100)
    train(net, images, labels, optimizer, epochs=10, pruner=pruner, schedule=schedule)
    model = pruner.export(example_input)        # a sparsenet.Model

Masked connections are held at zero three ways, so no optimizer can revive
them: the weight's gradient is multiplied by the mask (a tensor hook), the
optimizer's per-weight state (momentum, Adam moments) is masked when a mask
changes and after every step, and the weights are masked after every step
(weight decay or any other update that does not go through the gradient).
Needs ``pip install torch`` (``sparsenet[torch]``).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import InputError, WeightError
from ..frameworks._common import require
from ._masks import prune_by_rate, prune_by_std, prune_by_threshold, prune_globally_by_rate
from ._schedule import PolynomialDecay

torch = require("torch", "torch")


class Pruner:
    """Keep masks for the ``Conv2d`` and ``Linear`` weights of ``module``.

    ``layers``: module names to prune (as in ``module.named_modules()``); by
    default every Conv2d and Linear. Masks start from the weights' current
    nonzeros, so a module that was pruned before keeps its zeros."""

    def __init__(self, module: Any, layers: Iterable[str] | str | None = None):
        self.module = module
        found = {name: m for name, m in module.named_modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
        if layers is None:
            chosen = found
        else:
            chosen = {}
            for name in [layers] if isinstance(layers, str) else layers:  # one name, or several
                if name not in found:
                    raise WeightError(f"no Conv2d or Linear layer named '{name}'; prunable layers: {', '.join(found)}")
                chosen[name] = found[name]
        if not chosen:
            raise WeightError("the module has no Conv2d or Linear layer to prune")
        self.layers: dict[str, Any] = chosen
        self.masks: dict[str, Any] = {name: (m.weight.detach() != 0) for name, m in chosen.items()}
        self._hooks = [m.weight.register_hook(self._gradient_hook(name)) for name, m in chosen.items()]
        self._optimizers: list[Any] = []
        self._step_hooks: list[Any] = []

    def _gradient_hook(self, name: str) -> Callable:
        def hook(grad):
            return grad * self.masks[name].to(grad.dtype)
        return hook

    # --------------------------------------------------------------- masking
    def attach(self, optimizer: Any) -> "Pruner":
        """Mask ``optimizer``'s state and the weights after each of its steps."""
        self._optimizers.append(optimizer)
        self._step_hooks.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        return self

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights and the optimizer state that belongs to them."""
        for name, module in self.layers.items():
            mask = self.masks[name]
            module.weight.mul_(mask.to(module.weight.dtype))
            for optimizer in self._optimizers:
                for value in optimizer.state.get(module.weight, {}).values():
                    if torch.is_tensor(value) and value.shape == mask.shape:
                        value.mul_(mask.to(value.dtype))

    def detach(self) -> None:
        """Remove the hooks; the weights keep their zeros."""
        for handle in self._hooks + self._step_hooks:
            handle.remove()
        self._hooks, self._step_hooks, self._optimizers = [], [], []

    # --------------------------------------------------------------- pruning
    def weights(self) -> dict[str, np.ndarray]:
        return {name: m.weight.detach().cpu().float().numpy() for name, m in self.layers.items()}

    def prune(self, amount: float | Mapping[str, float], method: str = "rate") -> dict[str, float]:
        """Shrink the masks and apply them; returns the new per-layer densities.

        ``method``: "rate" (``amount`` = fraction of each layer pruned, one float
        or ``{layer: fraction}``; layers missing from the dict are left alone),
        "std" (Han's rule, ``amount`` = quality), "threshold" (magnitude), or
        "global" (``amount`` = fraction pruned over all layers together)."""
        weights = self.weights()
        current = {name: mask.cpu().numpy() for name, mask in self.masks.items()}
        if method == "global":
            if isinstance(amount, Mapping):
                raise WeightError("global pruning takes one rate for all layers, not a dict")
            new = prune_globally_by_rate(weights, amount, current)
        else:
            rules = {"rate": prune_by_rate, "std": prune_by_std, "threshold": prune_by_threshold}
            if method not in rules:
                raise WeightError(f"unknown pruning method {method!r}; use rate, std, threshold or global")
            if isinstance(amount, Mapping):
                unknown = set(amount) - set(weights)
                if unknown:
                    raise WeightError(f"pruning amounts for unknown layers {sorted(unknown)}; layers: {', '.join(weights)}")
                targets = dict(amount)
            else:
                targets = {name: amount for name in weights}
            new = {name: (rules[method](weights[name], targets[name], current[name], name) if name in targets
                          else current[name]) for name in weights}
        for name, mask in new.items():
            self.masks[name] = torch.from_numpy(mask).to(self.masks[name].device)
        self.apply()
        return self.densities()

    def densities(self) -> dict[str, float]:
        return {name: float(mask.float().mean()) for name, mask in self.masks.items()}

    def density(self) -> float:
        """Fraction of all masked weights that survive."""
        kept = sum(int(mask.sum()) for mask in self.masks.values())
        return kept / sum(mask.numel() for mask in self.masks.values())

    def export(self, example_input: Any = None, **options: Any):
        """The module as a :class:`sparsenet.Model` (``Model.from_torch``), masks applied."""
        from ..model import Model

        self.apply()
        was_training = self.module.training
        self.module.eval()
        try:
            return Model.from_torch(self.module, example_input, **options)
        finally:
            self.module.train(was_training)


def _progress(line: str, final: bool) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
    elif final:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def train(module: Any, images: Any, labels: Any, optimizer: Any, epochs: int, batch_size: int = 64,
          pruner: Pruner | None = None, schedule: PolynomialDecay | None = None, lr_scheduler: Any = None,
          evaluate: Callable[[], float] | None = None, seed: int = 0, start_step: int = 0,
          loss_fn: Callable | None = None, progress: bool | Callable[[str, bool], None] = True,
          label: str = "train") -> int:
    """Train ``module`` on ``images``/``labels`` (arrays or tensors) for ``epochs``,
    pruning on ``schedule`` (per training step, counted from ``start_step``)
    through ``pruner``. ``lr_scheduler`` steps once per epoch; ``evaluate()``
    (e.g. test accuracy) is shown after each epoch. Returns the next step."""
    if schedule is not None and pruner is None:
        raise WeightError("a pruning schedule needs a pruner")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    label_array = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if label_array.ndim != 1 or (label_array.size and label_array.dtype.kind not in "iu"):
        raise InputError(f"labels must be a 1-D array of class indices (integers), got {label_array.dtype} "
                         f"{label_array.shape}")
    y = torch.as_tensor(label_array.astype(np.int64))
    if len(x) != len(y):
        raise WeightError(f"{len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise InputError("no training images")
    if int(y.min()) < 0:
        raise InputError(f"label {int(y.min())} is negative; labels are class indices")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    report = progress if callable(progress) else (_progress if progress else (lambda line, final: None))
    generator = torch.Generator().manual_seed(seed)
    step = start_step
    batches = (len(x) + batch_size - 1) // batch_size
    for epoch in range(1, epochs + 1):
        module.train()
        started, total_loss, seen, correct = time.perf_counter(), 0.0, 0, 0
        order = torch.randperm(len(x), generator=generator)
        for index in range(batches):
            if schedule is not None and schedule.should_prune(step):
                pruner.prune(schedule.sparsity(step))
            batch = order[index * batch_size:(index + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            logits = module(x[batch])
            if step == start_step and logits.ndim == 2 and int(y.max()) >= logits.shape[1]:
                raise InputError(f"label {int(y.max())} is out of range for the module's {logits.shape[1]} outputs")
            loss = loss_fn(logits, y[batch])
            loss.backward()
            optimizer.step()
            step += 1
            total_loss += float(loss.detach()) * len(batch)
            seen += len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
            if index % 50 == 0 or index == batches - 1:
                line = (f"{label} epoch {epoch}/{epochs}: batch {index + 1}/{batches}, loss {total_loss / seen:.4f}, "
                        f"train acc {100 * correct / seen:.2f} %")
                if pruner is not None:
                    line += f", density {100 * pruner.density():.2f} %"
                report(line, False)
        if lr_scheduler is not None:
            lr_scheduler.step()
        line = (f"{label} epoch {epoch}/{epochs}: loss {total_loss / seen:.4f}, train acc {100 * correct / seen:.2f} %")
        if pruner is not None:
            line += f", density {100 * pruner.density():.2f} %"
        if evaluate is not None:
            module.eval()
            line += f", eval {evaluate():.4f}"
        report(line + f", {time.perf_counter() - started:.0f} s", True)
    return step
