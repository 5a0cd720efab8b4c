"""The benchmark cases (kernels.benchmarks), their timing loops and the table
of ``python -m kernels bench`` (kernels.benchmarks._table).

Behaviour only, never speed: every implementation of a case computes what
its peers compute, the loops return what they say, the table prints every
row and reports a broken kernel as an error.
"""

import io
import itertools
import json
import types

import numpy as np
import pytest
from _support import rtol

import kernels
from kernels.__main__ import main
from kernels._progress import ProgressBar
from kernels.benchmarks import (
    EXPRESSION,
    Case,
    _table,
    compress,
    nn,
    prox,
    sparse,
    timing,
    update,
)
from kernels.benchmarks.case import BACKENDS, Peer, expression


def _first_result(case, implementation):
    """The result of a first call of ``implementation`` on fresh inputs,
    checked by the case's check, as a float64 copy."""
    inputs = case.setup()
    call = case.bind(implementation, inputs)
    return np.array(case.warm_up(call, inputs), dtype=np.float64)


def _available(case):
    return [
        name
        for name in case.implementations
        if name in kernels.available_backends()
        or (name in case.peers and case.peers[name].available)
    ]


PROX_CASES = [
    lambda dtype: prox.prox_l1(1000, dtype),
    lambda dtype: prox.prox_elastic_net(1000, dtype),
    lambda dtype: prox.prox_l0(1000, dtype),
    lambda dtype: prox.project_box(1000, dtype),
    lambda dtype: prox.prox_group_l1((64, 32), dtype, "rows"),
    lambda dtype: prox.prox_group_l1((64, 32), dtype, "rows", 1e-3, in_place=True),
    lambda dtype: prox.prox_group_l1((64, 32), dtype, "cols"),
    lambda dtype: prox.keep_top_k(1000, dtype),
    lambda dtype: prox.project_l1_ball(1000, dtype),
    lambda dtype: prox.cumulative_l1(1000, dtype),
    lambda dtype: update.prox_gradient_step(1000, dtype),
    lambda dtype: update.prox_gradient_step(1000, dtype, penalty="cumulative_l1"),
    lambda dtype: update.prox_gradient_step(1000, dtype, estimator="sgd"),
]


@pytest.mark.parametrize("make", PROX_CASES)
def test_prox_and_update_cases_compute_what_their_expressions_do(make, dtype):
    case = make(dtype)
    expected = _first_result(case, EXPRESSION)
    tol = rtol(dtype)
    for implementation in _available(case):
        np.testing.assert_allclose(
            _first_result(case, implementation),
            expected,
            rtol=10 * tol,
            atol=10 * tol,
            err_msg=f"{case.kernel} {implementation}",
        )


@pytest.mark.parametrize("fmt", sparse.FORMATS)
@pytest.mark.parametrize("batch", [1, 8])
def test_sparse_cases_pass_their_check_for_every_implementation(fmt, batch):
    case = sparse.product(fmt, (40, 64), 0.2, "float32", batch)
    assert case.check is not None
    for implementation in _available(case):
        _first_result(case, implementation)  # raises when wrong


def test_sparse_check_catches_a_wrong_product():
    case = sparse.product("csr", (40, 64), 0.2)
    inputs = case.setup()
    with pytest.raises(AssertionError, match="wrong product"):
        case.check(inputs, np.ones(40, np.float32))


def test_int8_cases_are_float32_only():
    with pytest.raises(ValueError, match="float32 only"):
        sparse.product("int8", (40, 64), 0.2, "float64")


def test_random_sparse_is_reproducible_and_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(sparse, "CACHE_MIN_NNZ", 10)
    sparse.random_sparse.cache_clear()
    drawn = sparse.random_sparse((50, 60), 0.1, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    sparse.random_sparse.cache_clear()
    loaded = sparse.random_sparse((50, 60), 0.1, cache_dir=tmp_path)
    sparse.random_sparse.cache_clear()
    again = sparse.random_sparse((50, 60), 0.1)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(loaded[name], drawn[name])
        np.testing.assert_array_equal(again[name], drawn[name])
    A = kernels.CSRMatrix(drawn["data"], drawn["indices"], drawn["indptr"], (50, 60))
    assert 0.05 < A.nnz / (50 * 60) < 0.15
    blocks = sparse.random_sparse((40, 40), 0.2, blocksize=(4, 4))
    assert blocks["data"].shape[1:] == (4, 4)


@pytest.mark.parametrize("fmt", ["csr", "int8"])
def test_mlp_cases_pass_their_check_for_every_implementation(fmt):
    case = nn.mlp_forward(fmt, 0.05, 2)
    for implementation in _available(case):
        _first_result(case, implementation)


def test_lenet_weights_are_pruned_to_the_density():
    weights, biases = nn.lenet_weights(0.05)
    assert [W.shape for W in weights] == [(300, 784), (100, 300), (10, 100)]
    for W in weights:
        assert np.count_nonzero(W) == round(0.05 * W.size)


def test_the_compressed_model_case_matches_the_dense_one():
    rng = np.random.default_rng(0)
    sizes = (64, 20, 10)
    weights = [rng.standard_normal((m, n)) for n, m in itertools.pairwise(sizes)]
    biases = [rng.standard_normal(m) for m in sizes[1:]]
    buffer = io.BytesIO()
    kernels.SparseMLP.from_dense(weights, biases, density=1.0).save(buffer)
    models = {
        "model": buffer.getvalue(),
        "weights": weights,
        "biases": biases,
        "X": rng.standard_normal((70, 64)).astype(np.float32),
    }
    for batch in (1, 64):
        case = compress.inference(models, batch)
        expected = _first_result(case, "dense")
        for implementation in _available(case):
            np.testing.assert_allclose(
                _first_result(case, implementation), expected, rtol=1e-4, atol=1e-4
            )


def test_bind_refuses_unknown_and_skips_unavailable_implementations():
    case = prox.prox_l1(10, "float32")
    with pytest.raises(ValueError, match="implementation must be one of"):
        case.bind("fortran")
    missing = Peer("missing", lambda a: a, requires=("no_such_module_here",))
    case = Case("k", (10,), "float32", case.setup, case.ours, {"missing": missing}, 80)
    with pytest.raises(NotImplementedError, match="no_such_module_here"):
        case.bind("missing")
    for backend in set(BACKENDS) - set(kernels.available_backends()):
        with pytest.raises(NotImplementedError, match="not available"):
            case.bind(backend)


def test_bytes_and_copy_source_follow_the_cost_model():
    case = prox.prox_l1(1000, "float32")
    inputs = case.setup()
    assert case.bytes_moved == 2 * 1000 * 4
    assert case.copy_source(inputs) is inputs.x
    product = sparse.product("csr", (40, 64), 0.2)
    source = product.copy_source(product.setup())
    assert 2 * source.nbytes == pytest.approx(product.bytes_moved, abs=16)
    assert product.bytes_of("dense") == (40 * 64 + 40 + 64) * 4
    assert product.bytes_of("cython") == product.bytes_moved


# Timing ---------------------------------------------------------------


def test_interleaved_samples_takes_rounds_of_every_measure():
    order = []
    samples = timing.interleaved_samples(
        {"a": lambda: order.append("a") or 1.0, "b": lambda: order.append("b") or 2.0},
        min_rounds=3,
        max_rounds=3,
    )
    assert samples == {"a": [1.0] * 3, "b": [2.0] * 3}
    assert order == ["a", "b"] * 3


def test_a_failing_measure_raises_or_is_recorded():
    def broken():
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError):
        timing.interleaved_samples({"x": broken}, min_rounds=1)
    errors = {}
    medians = timing.interleaved_medians(
        {"ok": lambda: None, "broken": broken}, budget=0.0, errors=errors
    )
    assert set(medians) == {"ok"} and medians["ok"] > 0
    assert isinstance(errors["broken"], RuntimeError)


def test_median_and_marginal_seconds():
    assert timing.median_seconds(lambda: None, budget=0.0) > 0
    fake = {1: 3.0, 11: 5.0}  # a fixed cost of 2.8, 0.2 per unit
    clock = iter([0.0, fake[1], 10.0, 10.0 + fake[11]])
    original = timing.time.perf_counter
    timing.time.perf_counter = lambda: next(clock)
    try:
        assert timing.marginal_seconds(lambda k: None, 10) == pytest.approx(0.2)
    finally:
        timing.time.perf_counter = original
    assert timing.copy_gbps_of_bytes(1 << 16) > 0


def test_single_thread_blas_pins_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_limits():
        return [
            pool["num_threads"]
            for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "blas"
        ]

    before = blas_limits()
    with timing.single_thread_blas() as limit:
        assert limit.description == "1 thread (threadpoolctl)"
        assert all(n == 1 for n in blas_limits())
    assert blas_limits() == before


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_draws_on_a_terminal_only():
    quiet = io.StringIO()
    bar = ProgressBar(stream=quiet)
    bar.update(1, 2, after="half")
    bar.close()
    assert quiet.getvalue() == ""
    terminal = _Terminal()
    bar = ProgressBar(stream=terminal, width=10, keep=True)
    bar.update(1, 2, "phase", "half")
    bar.close()
    assert terminal.getvalue().startswith("\rphase [#####.....] half")
    assert terminal.getvalue().endswith("\n")


# The table ------------------------------------------------------------


def test_the_quick_table_has_every_family_and_distinct_rows():
    rows = _table.rows(quick=True)
    labels = [(r.case.kernel, r.case.shape, r.case.dtype, r.baseline) for r in rows]
    assert len(set(map(str, labels))) == len(labels)
    kernels_shown = {r.case.kernel.split()[0] for r in rows}
    assert {"prox_l1", "cumulative_l1", "spmv", "mlp", "prox_gradient_step"} <= (
        kernels_shown
    )
    for row in rows:
        assert isinstance(row.baseline, Case) or row.baseline in row.case.peers


def _tiny_rows(quick):
    broken = prox.prox_l1(100, "float32")

    def fail(inputs, backend):
        raise RuntimeError("deliberately broken")

    broken = Case(
        "broken", broken.shape, broken.dtype, broken.setup, fail, broken.peers, 800
    )
    one = sparse.product("csr", (30, 40), 0.2)
    return [
        _table._against(prox.prox_l1(100, "float32")),
        _table.Row(sparse.product("csr", (30, 40), 0.2, threads=2), one, "1 thread"),
        _table._against(broken),
    ]


def test_the_table_prints_every_row_and_reports_errors(monkeypatch, capsys):
    monkeypatch.setattr(_table, "rows", _tiny_rows)
    status = main(["bench", "--quick"])
    out = capsys.readouterr().out
    assert status == 1  # the broken row
    assert "| prox_l1 " in out and "| spmv csr 20%, 2 threads" in out
    assert "per backend" in out
    assert "broken 100 float32, cython: RuntimeError: deliberately broken" in out or (
        "cython" not in kernels.available_backends()
    )
    assert "threads: BLAS" in out


def test_the_table_as_json(monkeypatch, capsys):
    monkeypatch.setattr(_table, "rows", lambda quick: _tiny_rows(quick)[:2])
    assert main(["bench", "--quick", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    first, threaded = results["rows"]
    assert first["baseline_name"] == "NumPy expr"
    assert first["baseline"]["seconds"] > 0
    for backend in kernels.available_backends():
        assert first["backends"][backend]["speedup"] > 0
        assert threaded["backends"][backend]["baseline"]["seconds"] > 0
    assert threaded["baseline"] == {"per_backend": True}


def test_expression_peers_take_the_inputs():
    peer = expression(lambda a: a.x * 2)
    assert peer.available and peer.label == "NumPy expr"
    assert peer.prepare(types.SimpleNamespace(x=3))() == 6
