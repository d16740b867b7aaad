"""Scaling cases (issue 8, targets 5 and 6), opt-in with --scaling or
SPARSENET_BENCH_SCALING=1:

- batch 8 and 256 on FC 4096x4096 and 25088x4096 at 10 % and 5 % (batch 1 and 64
  are in test_bench_fc.py), sparse vs dense;
- a density sweep, 0-95 % pruned, of backend="auto" beside sparse and dense on
  FC 4096x4096 (batch 1 and 64) and VGG-16 conv4_2 (batch 1). Ids and groups
  start with ``sweep`` so that ``-k fc-4096x4096-d10-`` never picks them up.
"""

from __future__ import annotations

import pytest

import benchlib

pytestmark = pytest.mark.scaling

SWEEP_BATCHES = {"fc": (1, 64), "conv": (1,)}


def _sweep_params() -> list:
    params = []
    for case in benchlib.sweep_cases():
        for batch in SWEEP_BATCHES[case.kind]:
            for backend in benchlib.SWEEP_BACKENDS:
                params.append(pytest.param(case, batch, backend, id="sweep-" + case.case_id(batch, backend)))
    return params


@pytest.mark.fc
@pytest.mark.parametrize("case, batch, backend",
                         benchlib.layer_params(benchlib.scaling_fc_cases(), benchlib.SCALING_EXTRA_BATCHES))
def test_fc_batch_scaling(benchmark, request, model_cache, case, batch, backend):
    model = model_cache.get(case.key, backend, case.build_weights, case.build_model)
    benchlib.run_case(benchmark, request.config, model, benchlib.make_input(case.sample_shape, batch),
                      group=case.group(batch), backend=backend,
                      info={"kind": "linear", "case": case.describe(), "weight_shape": list(case.weight_shape),
                            "in_features": case.weight_shape[1], "out_features": case.weight_shape[0],
                            "density": case.density})


@pytest.mark.parametrize("case, batch, backend", _sweep_params())
def test_density_sweep(benchmark, request, model_cache, case, batch, backend):
    model = model_cache.get(("sweep", *case.key), backend, case.build_weights, case.build_model)
    x = benchlib.make_input(case.sample_shape, batch)
    info = {"kind": "linear" if case.kind == "fc" else "conv2d", "case": case.describe(), "sweep": True,
            "weight_shape": list(case.weight_shape), "density": case.density}
    if case.kind == "conv":
        info.update(layer=case.name, padding=case.padding)
    benchlib.run_case(benchmark, request.config, model, x, group="sweep " + case.group(batch), backend=backend,
                      info=info)
    if backend == "auto":  # what the load-time measurement chose, per input size
        benchmark.extra_info["auto_choices"] = {str(k): v for k, v in model.layers[0].choices.items()}
