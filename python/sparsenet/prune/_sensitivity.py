"""Sensitivity analysis (Han et al., NIPS 2015, figure 6): prune one layer at a
time to a range of rates and measure what the network loses, to choose
per-layer pruning rates before retraining.

Each pruned copy runs on sparsenet's own inference, so ``evaluate`` may be an
accuracy over a real validation set at the cost of a few forward passes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ModelError, WeightError
from ..model import Model
from ._masks import _fraction, prune_by_rate
from ._model import _check_names, model_weights, with_weights

DEFAULT_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class SensitivityResult:
    """What :func:`sensitivity` measured.

    ``metrics[layer][i]`` is the metric with only ``layer`` pruned to
    ``rates[i]``; ``baseline`` is the metric of the unpruned model;
    ``parameters[layer]`` is the layer's weight count (dense size, biases
    excluded)."""

    baseline: float
    rates: tuple[float, ...]
    metrics: dict[str, list[float]]
    parameters: dict[str, int]
    higher_is_better: bool = True
    name: str | None = field(default=None, compare=False)

    def losses(self, layer: str) -> list[float]:
        """The metric lost at each rate versus the baseline (positive = worse)."""
        sign = 1.0 if self.higher_is_better else -1.0
        return [sign * (self.baseline - metric) for metric in self.metrics[layer]]

    def suggest(self, budget: float) -> dict[str, float]:
        """``{layer: rate}``: for each layer the largest tested rate whose loss
        versus the baseline is at most ``budget``, with every smaller tested rate
        within budget too (a curve that dips and recovers by noise at a high rate
        does not count); 0.0 when even the smallest rate loses more.

        The losses measured here are one layer at a time. Pruned together,
        layers' losses roughly add, so to keep the whole network within a loss
        of B, split B among the layers (e.g. B / number of layers, or in
        proportion to their parameters) rather than passing B for each."""
        budget = float(budget)
        if not budget >= 0:
            raise WeightError(f"SensitivityResult.suggest: budget {budget} must be >= 0")
        out = {}
        for layer in self.metrics:
            chosen = 0.0
            for rate, loss in zip(self.rates, self.losses(layer)):
                if not loss <= budget:
                    break
                chosen = rate
            out[layer] = chosen
        return out

    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table: one row per layer with its weight count, one column
        per rate, each cell the metric (``digits`` significant digits)."""
        direction = "higher" if self.higher_is_better else "lower"
        header = ["layer", "weights", *(f"{rate:g}" for rate in self.rates)]
        lines = [
            f"baseline (unpruned): {self.baseline:.{digits}g} ({direction} is better); columns: pruning rate of "
            "that layer alone",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":--", "--:"] + ["--:"] * len(self.rates)) + "|",
        ]
        for layer, metrics in self.metrics.items():
            cells = [layer, f"{self.parameters[layer]:,}", *(f"{m:.{digits}g}" for m in metrics)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, title: str | None = None, metric_label: str = "metric") -> str:
        """Write a PNG (or any format matplotlib infers from ``path``): one curve
        per layer, metric against pruning rate, the baseline dashed. Needs
        matplotlib; uses its Agg canvas directly, so no GUI and no change to the
        caller's pyplot backend. Returns the path as a string."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError("SensitivityResult.plot needs matplotlib: pip install matplotlib") from exc
        figure = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for layer, metrics in self.metrics.items():
            axes.plot(self.rates, metrics, marker="o", markersize=3, label=f"{layer} ({self.parameters[layer]:,})")
        axes.axhline(self.baseline, color="black", linestyle="--", linewidth=1, label="baseline")
        axes.set_xlabel("fraction of the layer's weights pruned")
        axes.set_ylabel(metric_label)
        axes.set_title(title or f"Pruning sensitivity{' of ' + self.name if self.name else ''}")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(os.fspath(path))
        return os.fspath(path)


def _metric(value: object, what: str) -> float:
    try:
        metric = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ModelError(f"sensitivity: evaluate returned {value!r} for {what}, not a number") from None
    if math.isnan(metric):
        raise ModelError(f"sensitivity: evaluate returned NaN for {what}")
    return metric


def sensitivity(model: Model, evaluate: Callable[[Model], float], rates: Sequence[float] = DEFAULT_RATES,
                layers: Iterable[str] | None = None, higher_is_better: bool = True,
                progress: Callable[[str], None] | None = None) -> SensitivityResult:
    """Prune one layer at a time and measure ``evaluate(pruned model)``.

    For each weighted layer (or each name in ``layers``) and each rate, the
    layer alone is pruned to that rate by magnitude (:func:`prune_by_rate` on
    its current weights, whose zeros stay pruned and count towards the rate) and
    ``evaluate`` is called on the pruned copy; ``model`` itself is not changed.
    A rate at or below the layer's current sparsity changes nothing, so the
    baseline is recorded for it without another evaluation. ``evaluate`` returns
    one number, e.g. accuracy on a validation set (``higher_is_better=True``) or
    a loss (``False``). ``progress``, if given, receives a status line per step.
    Rates are sorted; each must be in [0, 1].
    """
    rates = tuple(sorted({_fraction(rate, "pruning rate", "sensitivity") for rate in rates}))
    if not rates:
        raise WeightError("sensitivity: no rates given")
    weights = model_weights(model)
    if layers is None:
        names = list(weights)
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        _check_names(model, names, "sensitivity")
    say = progress or (lambda line: None)
    say(f"sensitivity: baseline on the unpruned {model.name or 'model'}")
    baseline = _metric(evaluate(model), "the unpruned model")
    metrics: dict[str, list[float]] = {}
    steps, step = len(names) * len(rates), 0
    for name in names:
        weight = weights[name][0]
        nonzero = weight != 0
        metrics[name] = []
        for rate in rates:
            step += 1
            keep = prune_by_rate(weight, rate, nonzero, name)
            if np.array_equal(keep, nonzero):
                metric = baseline
            else:
                pruned = with_weights(model, {name: np.where(keep, weight, np.float32(0))})
                metric = _metric(evaluate(pruned), f"layer '{name}' pruned to rate {rate:g}")
            metrics[name].append(metric)
            say(f"sensitivity [{step}/{steps}]: {name} at rate {rate:g}: {metric:.6g} (baseline {baseline:.6g})")
    return SensitivityResult(baseline=baseline, rates=rates, metrics=metrics,
                             parameters={name: int(weights[name][0].size) for name in names},
                             higher_is_better=higher_is_better, name=model.name)
