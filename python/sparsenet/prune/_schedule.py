"""Pruning schedules: how much of each layer is pruned at a given training step."""

from __future__ import annotations

from typing import Mapping, Union

from ..errors import WeightError

Sparsity = Union[float, Mapping[str, float]]


def polynomial_decay(step: int, initial_sparsity: float, final_sparsity: float, begin_step: int, end_step: int,
                     power: float = 3.0) -> float:
    """Sparsity at ``step``: ``final + (initial - final) * (1 - p) ** power`` with
    ``p = (step - begin) / (end - begin)`` clipped to [0, 1], as TF-MOT's
    ``PolynomialDecay`` (Zhu & Gupta, 2017): prune fast while the network has
    redundancy to spare, slowly as it approaches the target."""
    if end_step <= begin_step:
        raise WeightError(f"polynomial decay: end_step {end_step} must exceed begin_step {begin_step}")
    progress = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power


class PolynomialDecay:
    """A pruning schedule: from ``initial_sparsity`` at ``begin_step`` to
    ``final_sparsity`` at ``end_step``, pruning every ``frequency`` steps.

    ``final_sparsity`` (and ``initial_sparsity``) may be one float for every
    layer or ``{layer name: sparsity}``; :meth:`sparsity` answers in the same form.

        >>> schedule = PolynomialDecay(0.0, {"fc1": 0.92, "fc2": 0.81}, begin_step=0, end_step=3000, frequency=100)
        >>> if schedule.should_prune(step): masks = prune(..., schedule.sparsity(step))
    """

    def __init__(self, initial_sparsity: Sparsity, final_sparsity: Sparsity, begin_step: int, end_step: int,
                 power: float = 3.0, frequency: int = 100):
        if end_step <= begin_step or begin_step < 0:
            raise WeightError(f"PolynomialDecay: need 0 <= begin_step < end_step, got {begin_step}, {end_step}")
        if frequency < 1:
            raise WeightError(f"PolynomialDecay: frequency must be >= 1, got {frequency}")
        if power <= 0:
            raise WeightError(f"PolynomialDecay: power must be > 0, got {power}")
        for label, value in (("initial_sparsity", initial_sparsity), ("final_sparsity", final_sparsity)):
            for layer, fraction in (value.items() if isinstance(value, Mapping) else [("all", value)]):
                if not 0.0 <= float(fraction) <= 1.0:
                    raise WeightError(f"PolynomialDecay: {label} {fraction} for layer '{layer}' is outside [0, 1]")
        if isinstance(initial_sparsity, Mapping) and isinstance(final_sparsity, Mapping) \
                and set(initial_sparsity) != set(final_sparsity):
            raise WeightError(f"PolynomialDecay: initial layers {sorted(initial_sparsity)} differ from final "
                              f"layers {sorted(final_sparsity)}")
        self.initial_sparsity, self.final_sparsity = initial_sparsity, final_sparsity
        self.begin_step, self.end_step, self.power, self.frequency = int(begin_step), int(end_step), power, int(frequency)

    def sparsity(self, step: int) -> Sparsity:
        final = self.final_sparsity
        if isinstance(final, Mapping):
            initial = self.initial_sparsity
            return {name: polynomial_decay(step, initial[name] if isinstance(initial, Mapping) else initial, target,
                                           self.begin_step, self.end_step, self.power)
                    for name, target in final.items()}
        if isinstance(self.initial_sparsity, Mapping):
            return {name: polynomial_decay(step, start, final, self.begin_step, self.end_step, self.power)
                    for name, start in self.initial_sparsity.items()}
        return polynomial_decay(step, self.initial_sparsity, final, self.begin_step, self.end_step, self.power)

    def should_prune(self, step: int) -> bool:
        """TF-MOT's rule: inside [begin, end] and on a multiple of ``frequency`` from
        begin; the end step itself always prunes, so the target is reached."""
        if not self.begin_step <= step <= self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def __call__(self, step: int) -> tuple[bool, Sparsity]:
        return self.should_prune(step), self.sparsity(step)

    def __repr__(self) -> str:
        return (f"PolynomialDecay({self.initial_sparsity!r} -> {self.final_sparsity!r}, steps {self.begin_step}.."
                f"{self.end_step}, power {self.power}, every {self.frequency})")
