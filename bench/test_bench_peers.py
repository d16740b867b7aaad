"""Peer engines on the suite's own cases (same shapes, densities, seeds, hence
the same weights): scipy.sparse, torch (dense and CSR), onnxruntime, MKL sparse.

Opt-in: ``--peers onnxruntime,torch`` (or ``all``, or SPARSENET_BENCH_PEERS);
without it these cases are deselected. Ids follow the sparsenet cases with the
engine in place of the backend (``fc-4096x4096-d10-b1-onnxruntime``) and share
their pytest-benchmark groups, so a ``-k`` filter selects both and the report
lines them up. Engines with spinning thread pools disturb each other: run one
engine per process (``bench/run_peers.py`` does).
"""

from __future__ import annotations

import pytest

import benchlib
import peers

pytestmark = pytest.mark.peer

def _layer_params(cases, batches, large_batches=(), scaling_batches=()) -> list:
    params = []
    for case in cases:
        for batch in (*batches, *large_batches, *scaling_batches):
            marks = [pytest.mark.large] if batch in large_batches else []
            if batch in scaling_batches:
                marks = [pytest.mark.scaling]
            for engine in peers.ENGINES:
                if peers.runs(engine, case.kind):
                    params.append(pytest.param(case, batch, engine, id=case.case_id(batch, engine), marks=marks))
    return params


def _fc_params() -> list:
    params = _layer_params(benchlib.fc_cases(), benchlib.BATCHES)
    params += _layer_params(benchlib.scaling_fc_cases(), (), scaling_batches=benchlib.SCALING_EXTRA_BATCHES)
    return params


def _model_params() -> list:
    params = []
    for net in benchlib.NETWORKS:
        for batch in (*net.batches, *net.large_batches):
            marks = [pytest.mark.large] if batch in net.large_batches else []
            for engine in peers.ENGINES:
                if peers.runs(engine, "model"):
                    params.append(pytest.param(net, batch, engine, id=net.case_id(batch, engine), marks=marks))
    return params


def _skip_missing(engine: str) -> None:
    if not peers.available(engine):
        pytest.skip(f"{engine} is not installed (pip install 'sparsenet[peers]')")


def _peer(engine: str, ops: list, sample_shape, config: pytest.Config) -> peers.PeerRunner:
    threads = benchlib.peer_threads(config)
    peers.set_threads(engine, threads)
    return peers.build(engine, ops, sample_shape, threads)


@pytest.mark.fc
@pytest.mark.parametrize("case, batch, engine", _fc_params())
def test_peer_fc(benchmark, request, model_cache, case, batch, engine):
    _skip_missing(engine)
    # The sparsenet model of the case is the reference for the accounting, and
    # the peer is built from its layers: the same weights as the sparsenet cases.
    reference = model_cache.get(case.key, "sparse", case.build_weights, case.build_model)
    runner = model_cache.get(case.key, engine, case.build_weights,
                             lambda _, e: _peer(e, peers.ops_of(reference), case.sample_shape, request.config))
    benchlib.run_peer_case(benchmark, request.config, runner, reference, benchlib.make_input(case.sample_shape, batch),
                           group=case.group(batch), engine=engine,
                           info={"kind": "linear", "case": case.describe(), "weight_shape": list(case.weight_shape),
                                 "in_features": case.weight_shape[1], "out_features": case.weight_shape[0],
                                 "density": case.density})


@pytest.mark.conv
@pytest.mark.parametrize("case, batch, engine",
                         _layer_params(benchlib.vgg16_conv_cases(), (1,), large_batches=(64,)))
def test_peer_conv(benchmark, request, model_cache, case, batch, engine):
    _skip_missing(engine)
    # The sparsenet model of the case is the reference for the accounting, and
    # the peer is built from its layers: the same weights as the sparsenet cases.
    reference = model_cache.get(case.key, "sparse", case.build_weights, case.build_model)
    runner = model_cache.get(case.key, engine, case.build_weights,
                             lambda _, e: _peer(e, peers.ops_of(reference), case.sample_shape, request.config))
    benchlib.run_peer_case(benchmark, request.config, runner, reference, benchlib.make_input(case.sample_shape, batch),
                           group=case.group(batch), engine=engine,
                           info={"kind": "conv2d", "case": case.describe(), "layer": case.name,
                                 "weight_shape": list(case.weight_shape), "padding": case.padding,
                                 "density": case.density})


@pytest.mark.end_to_end
@pytest.mark.parametrize("net, batch, engine", _model_params())
def test_peer_end_to_end(benchmark, request, model_cache, net, batch, engine):
    _skip_missing(engine)
    # The sparsenet model (same seed as test_bench_end_to_end, hence the same
    # weights) is the reference for the accounting; the peer is built from it.
    reference = model_cache.get(("e2e", net.name), "sparse", lambda: None, lambda _, b: net.build("sparse"))
    runner = model_cache.get(("e2e", net.name), engine, lambda: None,
                             lambda _, e: _peer(e, peers.ops_of(reference), reference.input_shape, request.config))
    benchlib.run_peer_case(benchmark, request.config, runner, reference,
                           benchlib.make_input(reference.input_shape, batch),
                           group=net.group(batch), engine=engine,
                           info={"kind": "model", "case": f"e2e {net.name}", "arch": net.arch})
