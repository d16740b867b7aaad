"""Pruning tools, framework-agnostic, on numpy weights (Han et al., NIPS 2015:
train, prune the connections that matter least, retrain, repeat).

- criteria returning keep masks: :func:`prune_by_threshold`, :func:`prune_by_std`
  (Han's quality x std rule), :func:`prune_by_rate` (per layer),
  :func:`prune_globally_by_rate` (one threshold across layers);
- :class:`PolynomialDecay`: the initial -> final sparsity schedule of TF-MOT;
- :func:`model_weights`, :func:`with_weights`, :func:`prune_model`: read a
  :class:`sparsenet.Model`'s weights, build a copy with new ones, prune it;
- :func:`sensitivity`: prune one layer at a time and measure a metric with
  sparsenet's own inference; a table, a plot and suggested per-layer rates;
- :func:`remove_dead_neurons`: the "transform" step, physically shrinking
  layers whose neurons lost all their connections.

The PyTorch adapter (masked retraining, export) is :mod:`sparsenet.prune.pytorch`.
"""

from ._masks import apply_masks, density, prune_by_rate, prune_by_std, prune_by_threshold, prune_globally_by_rate
from ._model import model_weights, prune_model, with_weights
from ._schedule import PolynomialDecay, polynomial_decay
from ._sensitivity import SensitivityResult, sensitivity
from ._transform import remove_dead_neurons

__all__ = [
    "prune_by_threshold", "prune_by_std", "prune_by_rate", "prune_globally_by_rate", "apply_masks", "density",
    "PolynomialDecay", "polynomial_decay",
    "model_weights", "with_weights", "prune_model",
    "sensitivity", "SensitivityResult",
    "remove_dead_neurons",
]
