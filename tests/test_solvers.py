"""Variance-reduced solvers (kernels.solvers) and their epoch kernels.

Kernels: every backend against the NumPy reference, step for step, on every
method x loss x penalty x layout, including long lazy intervals on CSR data.
Solvers: convergence to an independently computed high-precision optimum
(objective within 1e-6 relative, gradient-mapping norm below tolerance), the
lambda-estimator's identities (lam = 0 is SGD, lam = 1/2 is half the SVRG
direction, unbiasedness up to 1 - lam by enumerating every mini-batch), lazy
CSR iterates equal to dense ones, divergence and bad-input errors.
"""

import dataclasses
import functools
import inspect
import itertools
import zlib

import numpy as np
import pytest

import kernels
from kernels import _backend, _codes, _solver_run, _vcsg, solvers
from kernels._reference import solvers as reference

METHODS = (_codes.METHOD_SNAPSHOT, _codes.METHOD_TABLE, _codes.METHOD_RECURSIVE)
LOSSES = (_codes.LOSS_SQUARED, _codes.LOSS_LOGISTIC, _codes.LOSS_MULTINOMIAL)
PENALTIES = (
    _codes.PENALTY_NONE,
    _codes.PENALTY_L1,
    _codes.PENALTY_GROUP_L1,
    _codes.PENALTY_L0,
)


def _kernels(backend):
    return _backend.kernels_for("solvers", backend)


def _targets(rng, loss, n, k):
    if loss == _codes.LOSS_SQUARED:
        return rng.standard_normal(n)
    if loss == _codes.LOSS_LOGISTIC:
        return np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return rng.integers(0, k, n).astype(np.float64)


def _layout(X, sparse, dtype=np.float64, itype=np.int64):
    """(data, indices, indptr) as the kernels take them."""
    X = X.astype(dtype)
    if sparse:
        A = kernels.CSRMatrix.from_dense(X)
        data, indices, indptr = A._arrays
        return data, indices.astype(itype), indptr.astype(itype)
    return X.reshape(-1), np.arange(X.shape[1], dtype=itype), np.zeros(0, itype)


def _epoch_inputs(
    rng,
    method,
    loss,
    penalty,
    sparse,
    n=20,
    d=12,
    density=0.3,
    dtype=np.float64,
    itype=np.int64,
    batch_size=2,
    fit_intercept=True,
):
    k = 3 if loss == _codes.LOSS_MULTINOMIAL else 1
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    data, indices, indptr = _layout(X, sparse, dtype, itype)
    coef = rng.standard_normal((d, k)) * 0.3
    coef[rng.random((d, k)) < 0.3] = 0.0
    lam = rng.random()
    return dict(
        method=method,
        loss=loss,
        penalty=penalty,
        data=data,
        indices=indices,
        indptr=indptr,
        y=_targets(rng, loss, n, k),
        coef=coef,
        intercept=rng.standard_normal(k) * 0.1,
        fit_intercept=fit_intercept,
        samples=rng.integers(0, n, 2 * n).astype(np.int64),
        batch_size=batch_size,
        step=0.2,
        shrink_step=0.2 * max(1 - lam, lam),
        ridge=0.05,
        l1=0.03,
        group_ptr=np.array([0, 3, 7, d], dtype=np.int64),
        group_weights=np.array([1.0, 2.0, 1.5]),
        cg=1 - lam,
        cs=-lam,
        cm=lam,
        anchor=coef + 0.05 * rng.standard_normal((d, k)),
        anchor_intercept=rng.standard_normal(k) * 0.1,
        direction=rng.standard_normal((d, k)) * 0.1,
        direction_intercept=rng.standard_normal(k) * 0.1,
        table=rng.standard_normal((n, k)) * 0.1,
        previous=np.zeros((d, k)),
        previous_intercept=np.zeros(k),
        work=np.zeros((d, k)),
        last=np.zeros(d, dtype=np.int64),
    )


_STATE = ("coef", "intercept", "direction", "direction_intercept", "table")


def _run_epoch(module, inputs):
    args = {
        name: value.copy() if isinstance(value, np.ndarray) else value
        for name, value in inputs.items()
    }
    module.linear_epoch(**args)
    return [args[name] for name in _STATE]


def _assert_state_close(got, want, rtol):
    for name, a, b in zip(_STATE, got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=name)


# Kernels against the reference ----------------------------------------------


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("method", METHODS)
def test_epoch_matches_reference(backend, method, loss, penalty, sparse, rng):
    inputs = _epoch_inputs(rng, method, loss, penalty, sparse)
    got = _run_epoch(_kernels(backend), inputs)
    want = _run_epoch(reference, inputs)
    _assert_state_close(got, want, 1e-10)


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_epoch_float32_data_and_index_dtypes(backend, sparse, itype, rng):
    inputs = _epoch_inputs(
        rng,
        _codes.METHOD_TABLE,
        _codes.LOSS_LOGISTIC,
        _codes.PENALTY_L1,
        sparse,
        dtype=np.float32,
        itype=itype,
    )
    assert inputs["data"].dtype == np.float32
    _assert_state_close(
        _run_epoch(_kernels(backend), inputs), _run_epoch(reference, inputs), 1e-10
    )


@pytest.mark.parametrize("trial", range(24))
def test_lazy_updates_over_long_intervals(backend, trial, rng):
    """Very sparse rows, so coordinates wait many steps between reads, with
    and without ridge and l1, weights that cross zero and weights that stay
    at zero: the closed-form catch-up equals the step-by-step reference."""
    method = METHODS[trial % 3]
    loss = LOSSES[(trial // 3) % 3]
    inputs = _epoch_inputs(
        rng,
        method,
        loss,
        (_codes.PENALTY_NONE, _codes.PENALTY_L1)[trial % 2],
        sparse=True,
        n=30,
        d=150,
        density=0.03,
        batch_size=1 + trial % 3,
        fit_intercept=bool(trial % 4 < 2),
    )
    inputs["samples"] = rng.permutation(30).astype(np.int64)
    inputs["ridge"] = (0.0, 0.1, 1e-9)[trial % 3]
    inputs["l1"] = (0.0, 0.01, 0.3, 0.01)[trial % 4]
    inputs["step"] = (0.05, 0.5)[trial % 2]
    inputs["shrink_step"] = inputs["step"] * (1.0, 0.6)[trial % 2]
    inputs["direction"] *= (0.1, 5.0)[trial % 2]
    _assert_state_close(
        _run_epoch(_kernels(backend), inputs), _run_epoch(reference, inputs), 1e-9
    )


@pytest.mark.parametrize("trial", range(16))
@pytest.mark.parametrize("loss", [_codes.LOSS_SQUARED, _codes.LOSS_LOGISTIC])
def test_table_epoch_one_sample_per_step(backend, loss, trial, rng):
    """SAGA's usual call (one output, one sample per step, CSR, no penalty
    or l1) has a path of its own in the compiled backends: against the
    reference with ridge or none, l1 or none, short and long waits between
    reads, float32 and int32, a row that repeats a column and an empty row
    read three times."""
    inputs = _epoch_inputs(
        rng,
        _codes.METHOD_TABLE,
        loss,
        (_codes.PENALTY_NONE, _codes.PENALTY_L1)[trial % 2],
        sparse=True,
        n=30,
        d=(12, 150)[trial // 8],
        density=(0.3, 0.03)[trial // 8],
        dtype=(np.float64, np.float32)[trial % 4 // 2],
        itype=(np.int64, np.int32)[trial % 4 // 2],
        batch_size=1,
        fit_intercept=bool(trial % 8 < 4),
    )
    inputs["ridge"] = (0.0, 0.05)[trial % 8 // 4]
    if trial % 3 == 0:  # a row that repeats a column, and one made empty
        data, indices, indptr = inputs["data"], inputs["indices"], inputs["indptr"]
        row = int(np.argmax(np.diff(indptr)))
        assert indptr[row + 1] - indptr[row] >= 2
        indices[indptr[row] + 1] = indices[indptr[row]]
        empty = int(np.argmin(np.diff(indptr)))
        start, stop = indptr[empty], indptr[empty + 1]
        inputs["data"] = np.delete(data, np.s_[start:stop])
        inputs["indices"] = np.delete(indices, np.s_[start:stop])
        inputs["indptr"] = indptr.copy()
        inputs["indptr"][empty + 1 :] -= stop - start
        inputs["samples"][:3] = empty
    _assert_state_close(
        _run_epoch(_kernels(backend), inputs), _run_epoch(reference, inputs), 1e-9
    )


def test_epoch_with_batch_longer_than_samples(backend, rng):
    inputs = _epoch_inputs(
        rng,
        _codes.METHOD_SNAPSHOT,
        _codes.LOSS_SQUARED,
        _codes.PENALTY_L1,
        True,
        batch_size=7,
    )
    inputs["samples"] = inputs["samples"][:5]
    _assert_state_close(
        _run_epoch(_kernels(backend), inputs), _run_epoch(reference, inputs), 1e-10
    )


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("loss", LOSSES)
def test_linear_pass_matches_reference(backend, loss, sparse, rng):
    inputs = _epoch_inputs(rng, 0, loss, 0, sparse)
    results = []
    for module in (_kernels(backend), reference):
        k = inputs["coef"].shape[1]
        derivatives = np.empty((inputs["samples"].size, k))
        grad, grad_intercept = np.zeros_like(inputs["coef"]), np.zeros(k)
        total = module.linear_pass(
            loss,
            inputs["data"],
            inputs["indices"],
            inputs["indptr"],
            inputs["y"],
            inputs["coef"],
            inputs["intercept"],
            inputs["samples"],
            derivatives,
            grad,
            grad_intercept,
        )
        results.append((total, derivatives, grad, grad_intercept))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_prox_step_matches_reference_and_prox_family(backend, penalty, rng):
    coef = rng.standard_normal((12, 2))
    args = (0.3, 0.2, 0.5, np.array([0, 4, 12], dtype=np.int64), np.array([1.0, 2.0]))
    got, want = coef.copy(), coef.copy()
    _kernels(backend).prox_step(penalty, got, *args)
    reference.prox_step(penalty, want, *args)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # the same prox from kernels.prox: shrink by step*l1, divide by 1 + step*ridge
    step, ridge, l1 = args[:3]
    if penalty == _codes.PENALTY_L1:
        np.testing.assert_allclose(
            got, kernels.prox_elastic_net(coef, step * l1, step * ridge), rtol=1e-13
        )
    elif penalty == _codes.PENALTY_GROUP_L1:
        shrunk = kernels.prox_group_l1(
            coef.ravel(), step * l1, [8, 16], weights=[1.0, 2.0]
        )
        np.testing.assert_allclose(got.ravel(), shrunk / (1 + step * ridge), rtol=1e-13)


# The lambda-estimator ---------------------------------------------------------


def _one_step_direction(backend, lam, batch, X, y, coef, anchor, mu):
    """v of one snapshot step with step 1, no prox and no ridge: v = w - w'."""
    data, indices, indptr = _layout(X, False)
    cg, cs, cm = solvers.lambda_coefficients(lam)
    w = coef.copy()
    k = coef.shape[1]
    _kernels(backend).linear_epoch(
        _codes.METHOD_SNAPSHOT,
        _codes.LOSS_LOGISTIC,
        _codes.PENALTY_NONE,
        data,
        indices,
        indptr,
        y,
        w,
        np.zeros(k),
        False,
        np.asarray(batch, dtype=np.int64),
        len(batch),
        1.0,
        1.0,
        0.0,
        0.0,
        np.zeros(0, np.int64),
        np.zeros(0),
        cg,
        cs,
        cm,
        anchor,
        np.zeros(k),
        mu,
        np.zeros(k),
        np.zeros((0, k)),
        np.zeros((0, k)),
        np.zeros(0),
        np.zeros_like(coef),
        np.zeros(coef.shape[0], np.int64),
    )
    return coef - w


def _full_gradient(X, y, coef):
    margins = X @ coef[:, 0]
    return (X.T @ (-y / (1 + np.exp(y * margins))) / X.shape[0])[:, np.newaxis]


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5, 0.7, 0.9])
def test_lambda_estimator_expectation_over_every_minibatch(backend, lam, rng):
    n, d, b = 6, 4, 2
    X = rng.standard_normal((n, d))
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    coef = rng.standard_normal((d, 1))
    anchor = rng.standard_normal((d, 1))
    mu = _full_gradient(X, y, anchor)
    batches = list(itertools.combinations(range(n), b))
    mean = np.mean(
        [
            _one_step_direction(backend, lam, batch, X, y, coef, anchor, mu)
            for batch in batches
        ],
        axis=0,
    )
    expected = (1 - lam) * _full_gradient(X, y, coef)
    if lam > 0.5:
        expected += (2 * lam - 1) * mu
    np.testing.assert_allclose(mean, expected, rtol=1e-12, atol=1e-14)


def _problem(rng, n=40, d=6, loss="logistic"):
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    if loss == "squared":
        y = X @ w + 0.1 * rng.standard_normal(n)
    elif loss == "logistic":
        y = np.where(X @ w + 0.5 * rng.standard_normal(n) > 0, "yes", "no")
    else:
        y = np.argmax(X @ rng.standard_normal((d, 3)), axis=1)
    return X, y


def test_lam_zero_is_sgd_step_for_step(backend, rng):
    X, y = _problem(rng)
    order = np.stack([rng.permutation(40) for _ in range(3)])
    common = dict(
        step=0.1,
        max_epochs=3,
        tol=0.0,
        sample_order=order,
        penalty="l1",
        beta=0.01,
        backend=backend,
    )
    by_svrg = solvers.svrg(X, y, lam=0.0, **common)
    by_sgd = solvers.sgd(X, y, **common)
    np.testing.assert_allclose(by_svrg.coef, by_sgd.coef, rtol=1e-13, atol=1e-15)
    assert by_sgd.n_ifo == 3 * 40


def test_lam_half_is_half_the_svrg_direction(backend, rng):
    """Step for step, with the penalty too: the prox takes the step the
    direction is scaled by (lambda_coefficients)."""
    X, y = _problem(rng)
    order = rng.permutation(40)
    common = dict(
        max_epochs=4,
        tol=0.0,
        sample_order=order,
        batch_size=3,
        fit_intercept=True,
        penalty="l1",
        beta=0.02,
        backend=backend,
    )
    half = solvers.svrg(X, y, lam=0.5, step=0.2, **common)
    textbook = solvers.svrg(X, y, lam=None, step=0.1, **common)
    np.testing.assert_allclose(half.coef, textbook.coef, rtol=1e-12)
    np.testing.assert_allclose(half.intercept, textbook.intercept, rtol=1e-12)


def test_lambda_coefficients():
    assert solvers.lambda_coefficients(None) == (1.0, -1.0, 1.0)
    assert solvers.lambda_coefficients(0.0) == (1.0, -0.0, 0.0)
    assert solvers.lambda_coefficients(0.75) == (0.25, -0.25, 0.75)
    with pytest.raises(ValueError, match="lam"):
        solvers.lambda_coefficients(1.5)


# Convergence to an independent high-precision optimum --------------------------


def _losses(loss, X, y, coef, intercept):
    """Mean loss and its gradient, written independently of the package."""
    margins = X @ coef + intercept
    n = X.shape[0]
    if loss == "squared":
        r = margins[:, 0] - y
        return 0.5 * np.mean(r * r), r[:, np.newaxis] / n
    if loss == "logistic":
        s = np.where(y == np.unique(y)[1], 1.0, -1.0)
        z = s * margins[:, 0]
        return np.mean(np.logaddexp(0, -z)), (-s / (1 + np.exp(z)))[:, np.newaxis] / n
    top = margins.max(axis=1, keepdims=True)
    p = np.exp(margins - top)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    codes = np.searchsorted(np.unique(y), y)
    value = np.mean(np.log(total[:, 0]) + top[:, 0] - margins[np.arange(n), codes])
    p[np.arange(n), codes] -= 1
    return value, p / n


def _optimum(loss, X, y, alpha, beta, fit_intercept):
    """FISTA with restarts to machine precision: F* for the l1 (beta) +
    ridge (alpha) problem."""
    k = np.unique(y).size if loss == "multinomial" else 1
    d = X.shape[1]
    curvature = {"squared": 1.0, "logistic": 0.25, "multinomial": 0.5}[loss]
    t = 1.0 / (curvature * (np.linalg.norm(X, 2) ** 2 / X.shape[0] + fit_intercept))
    w, b = np.zeros((d, k)), np.zeros(k)
    zw, zb, momentum, best = w.copy(), b.copy(), 1.0, np.inf

    def objective(w, b):
        return (
            _losses(loss, X, y, w, b)[0]
            + alpha / 2 * np.sum(w * w)
            + beta * np.abs(w).sum()
        )

    for _ in range(20000):
        value, dm = _losses(loss, X, y, zw, zb)
        gw, gb = X.T @ dm, dm.sum(axis=0)
        nw = np.sign(zw - t * gw) * np.maximum(np.abs(zw - t * gw) - t * beta, 0)
        nw /= 1 + t * alpha
        nb = zb - t * gb if fit_intercept else zb
        f = objective(nw, nb)
        if f > best:  # restart the momentum
            zw, zb, momentum = w.copy(), b.copy(), 1.0
            continue
        best = f
        nm = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
        zw = nw + (momentum - 1) / nm * (nw - w)
        zb = nb + (momentum - 1) / nm * (nb - b)
        w, b, momentum = nw, nb, nm
    return best


CONVERGENCE = [
    ("svrg", {}),
    ("saga", {}),
    ("svrg", {"lam": 0.7}),
    ("saga", {"lam": 0.5}),
    ("sarah", {}),
    ("scsg", {}),
    ("vcsg", {"lam_unbiased": 0.5, "eps": 0.0}),  # exact mode: B = n
    ("sgd", {"batch_size": 60}),  # full batch: proximal gradient descent
]


@functools.cache
def _convergence_problem(loss, penalty):
    """One problem per (loss, penalty), shared by every solver's test (its
    F* is the expensive part): X, y, alpha, beta, F*."""
    rng = np.random.default_rng(zlib.crc32(f"{loss}-{penalty}".encode()))
    n, d = 60, 8
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.6)
    X[:, 0] = 1.0  # no empty rows
    y = _problem(rng, n, d, loss)[1]
    alpha, beta = 0.05, (0.02 if penalty else 0.0)
    return X, y, alpha, beta, _optimum(loss, X, y, alpha, beta, fit_intercept=True)


# Under emulation (scripts/cross-build test --quick deselects "slow") each
# solver keeps one case: l1 logistic on CSR data, the lazy-update path.
_CONVERGENCE_CASES = [
    pytest.param(
        loss,
        penalty,
        sparse,
        id=f"{loss}-{penalty}-{'csr' if sparse else 'dense'}",
        marks=()
        if (loss, penalty, sparse) == ("logistic", "l1", True)
        else [pytest.mark.slow],
    )
    for loss, penalty in [
        ("logistic", "l1"),
        ("logistic", None),
        ("squared", "l1"),
        ("squared", None),
        ("multinomial", "l1"),
    ]
    for sparse in (False, True)
]


@pytest.mark.parametrize("loss,penalty,sparse", _CONVERGENCE_CASES)
@pytest.mark.parametrize(
    "name,extra", CONVERGENCE, ids=[f"{c[0]}{c[1].get('lam', '')}" for c in CONVERGENCE]
)
def test_solver_reaches_the_optimum(name, extra, loss, penalty, sparse):
    X, y, alpha, beta, fstar = _convergence_problem(loss, penalty)
    data = kernels.CSRMatrix.from_dense(X) if sparse else X
    result = getattr(solvers, name)(
        data,
        y,
        loss=loss,
        fit_intercept=True,
        alpha=alpha,
        penalty=penalty,
        beta=beta,
        max_epochs=20000,
        tol=1e-7,
        seed=0,
        **extra,
    )
    assert result.converged, (result.n_epochs, result.gradient_mapping_norm)
    assert result.gradient_mapping_norm <= 1e-7
    assert abs(result.objective - fstar) <= 1e-6 * abs(fstar)
    ifos, seconds, objective, norm = result.history[-1]
    assert (ifos, objective, norm) == (
        result.n_ifo,
        result.objective,
        result.gradient_mapping_norm,
    )


@pytest.mark.parametrize("name", ["svrg", "saga", "sarah", "sgd"])
def test_lazy_csr_iterates_equal_dense_iterates(name, backend, rng):
    X = rng.standard_normal((50, 30)) * (rng.random((50, 30)) < 0.1)
    y = np.where(rng.random(50) < 0.5, 0, 1)
    order = np.stack([rng.permutation(50) for _ in range(3)])
    common = dict(
        alpha=0.01,
        penalty="elastic_net",
        beta=0.05,
        step=0.3,
        max_epochs=3,
        tol=0.0,
        sample_order=order,
        fit_intercept=True,
        backend=backend,
    )
    dense = getattr(solvers, name)(X, y, **common)
    lazy = getattr(solvers, name)(kernels.CSRMatrix.from_dense(X), y, **common)
    np.testing.assert_allclose(lazy.coef, dense.coef, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lazy.intercept, dense.intercept, rtol=1e-10)
    assert np.count_nonzero(lazy.coef) < 30  # the l1 part made zeros


@pytest.mark.parametrize(
    "penalty,extra", [("group_l1", {"groups": [2, 3, 1]}), ("l0", {})]
)
def test_nonseparable_penalties_run_on_csr_and_match_dense(
    penalty, extra, backend, rng
):
    X = rng.standard_normal((30, 6)) * (rng.random((30, 6)) < 0.5)
    y = X @ rng.standard_normal(6)
    common = dict(
        loss="squared",
        penalty=penalty,
        beta=0.05,
        step=0.1,
        max_epochs=4,
        tol=0.0,
        sample_order=rng.permutation(30),
        backend=backend,
        **extra,
    )
    dense = solvers.saga(X, y, **common)
    lazy = solvers.saga(kernels.CSRMatrix.from_dense(X), y, **common)
    np.testing.assert_allclose(lazy.coef, dense.coef, rtol=1e-12, atol=1e-14)


def test_group_l1_zeroes_whole_groups(rng):
    X = rng.standard_normal((80, 6))
    y = X[:, :2] @ np.array([1.0, -2.0])
    result = solvers.svrg(
        X,
        y,
        loss="squared",
        penalty="group_l1",
        beta=0.3,
        groups=2,
        max_epochs=200,
        tol=1e-8,
        seed=1,
    )
    assert np.all(result.coef[2:] == 0.0)
    assert np.all(result.coef[:2] != 0.0)


# Results, accounting, errors ---------------------------------------------------


def test_result_shapes_and_classes(rng):
    X, y = _problem(rng, loss="multinomial")
    result = solvers.saga(X, y, loss="multinomial", fit_intercept=True, max_epochs=2)
    assert result.coef.shape == (3, 6)
    assert result.intercept.shape == (3,)
    np.testing.assert_array_equal(result.classes, [0, 1, 2])
    assert len(result.history) == result.n_epochs + 1
    X, y = _problem(rng, loss="squared")
    result = solvers.svrg(X, y, loss="squared", max_epochs=2)
    assert result.coef.shape == (6,)
    assert isinstance(result.intercept, float)
    # SVRG: per epoch n IFOs for the snapshot and 2 per sample
    assert result.n_ifo == 2 * (40 + 2 * 40)


def test_float32_data_is_not_copied(rng):
    X = rng.standard_normal((30, 5)).astype(np.float32)
    problem = _solver_run.LinearProblem(
        X, X[:, 0] > 0, "logistic", False, 0.0, None, 0.0, 0.5, None, None
    )
    assert np.shares_memory(problem.data, X)
    assert problem.data.dtype == np.float32
    A = kernels.CSRMatrix.from_dense(X)
    problem = _solver_run.LinearProblem(
        A, X[:, 0] > 0, "logistic", False, 0.0, None, 0.0, 0.5, None, None
    )
    assert problem.data is A.data


def test_float32_and_float64_data_reach_the_same_solution(rng):
    X, y = _problem(rng)
    common = dict(alpha=0.1, penalty="l1", beta=0.01, tol=1e-8, max_epochs=500, seed=0)
    single = solvers.saga(X.astype(np.float32), y, **common)
    double = solvers.saga(X.astype(np.float32).astype(np.float64), y, **common)
    np.testing.assert_allclose(single.coef, double.coef, rtol=1e-6, atol=1e-7)


def test_divergence_names_the_step(rng):
    X, y = _problem(rng, loss="squared")
    X[0] *= 1e3
    with pytest.raises(solvers.DivergenceError, match=r"step=1e\+06"):
        solvers.sgd(X, y, loss="squared", step=1e6, max_epochs=50)


def test_verbose_and_callback(rng, capsys):
    X, y = _problem(rng)
    seen = []

    def stop_after_two(entry):
        seen.append(entry)
        return len(seen) == 2

    result = solvers.svrg(X, y, verbose=True, callback=stop_after_two, max_epochs=10)
    assert result.n_epochs == 1 and len(seen) == 2
    out = capsys.readouterr().out
    assert out.count("svrg: epoch") == 2 and "||G||" in out


@pytest.mark.parametrize("name", solvers.SOLVERS)
@pytest.mark.parametrize(
    "verdict",
    [np.bool_(True), 1, "stop", [0]],
    ids=["numpy bool", "int", "str", "list"],
)
def test_a_truthy_callback_value_stops(name, verdict, rng):
    X, y = _problem(rng)
    seen = []

    def callback(entry):
        seen.append(entry)
        return verdict if len(seen) == 2 else np.bool_(False)

    result = getattr(solvers, name)(X, y, callback=callback, max_epochs=10, tol=0.0)
    assert result.n_epochs == 1 and len(seen) == 2


def test_a_comparison_in_the_callback_stops_the_solver(rng):
    """``return entry[2] < threshold`` is a numpy.bool_: it stops the solver
    as a bool would."""
    X, y = _problem(rng)
    first = solvers.saga(X, y, max_epochs=0).objective
    result = solvers.saga(
        X, y, callback=lambda entry: entry[2] < 0.9 * first, max_epochs=50, tol=0.0
    )
    assert 0 < result.n_epochs < 50
    assert result.history[-1][2] < 0.9 * first <= result.history[-2][2]


@pytest.mark.parametrize("name", solvers.SOLVERS)
def test_signature_from_the_common_keywords(name, rng):
    solve = getattr(solvers, name)
    parameters = inspect.signature(solve).parameters
    assert list(parameters)[:2] == ["X", "y"]
    assert all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        for p in list(parameters.values())[:2]
    )
    assert list(parameters)[-1] == "backend"
    dropped = {
        "scsg": {"sample_order"},
        "vcsg": {"sample_order", "batch_size"},
    }.get(name, set())
    for keyword in _solver_run.KEYWORDS:
        if keyword.name in dropped:
            assert keyword.name not in parameters
        else:
            assert parameters[keyword.name].default == keyword.default
            assert parameters[keyword.name].kind is inspect.Parameter.KEYWORD_ONLY
    X, y = _problem(rng, loss="squared")
    by_position = solve(X, y, loss="squared", max_epochs=2, seed=0)
    by_name = solve(y=y, X=X, loss="squared", max_epochs=2, seed=0)
    np.testing.assert_array_equal(by_position.coef, by_name.coef)
    with pytest.raises(TypeError):
        solve(X, y, "squared")
    with pytest.raises(TypeError, match="unknown_keyword"):
        solve(X, y, unknown_keyword=1)


def test_vcsg_defaults_are_the_schedule_s():
    parameters = inspect.signature(solvers.vcsg).parameters
    schedule = _vcsg.VCSGSchedule()
    for field in dataclasses.fields(schedule):
        assert parameters[field.name].default == getattr(schedule, field.name)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"loss": "hinge"}, ValueError, "loss must be"),
        ({"penalty": "l2"}, ValueError, "penalty must be"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"beta": float("nan")}, ValueError, "beta"),
        ({"step": 0.0}, ValueError, "step must be positive"),
        ({"step": "fast"}, ValueError, "step must be 'auto'"),
        ({"lam": 2.0}, ValueError, "lam must be in"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"max_epochs": -1}, ValueError, "max_epochs"),
        ({"penalty": "group_l1"}, ValueError, "needs groups"),
        ({"penalty": "group_l1", "groups": [2, 2]}, ValueError, "add up to n_features"),
        ({"groups": 2}, ValueError, "only used with"),
        ({"sample_order": [0, 99]}, ValueError, "sample_order"),
        ({"sample_order": [0.5]}, TypeError, "sample_order"),
        ({"l1_ratio": 2.0, "penalty": "elastic_net"}, ValueError, "l1_ratio"),
    ],
)
def test_bad_arguments(kwargs, error, pattern, rng):
    X, y = _problem(rng)
    with pytest.raises(error, match=pattern):
        solvers.svrg(X, y, **kwargs)


def test_bad_data(rng):
    X, y = _problem(rng)
    with pytest.raises(ValueError, match="one entry per sample"):
        solvers.saga(X, y[:-1])
    with pytest.raises(ValueError, match="exactly two classes"):
        solvers.saga(X, np.arange(40) % 3)
    with pytest.raises(ValueError, match="at least two classes"):
        solvers.saga(X, np.zeros(40), loss="multinomial")
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="X must be finite"):
        solvers.saga(bad, y)
    with pytest.raises(ValueError, match="2-D"):
        solvers.saga(X[0], y)
    with pytest.raises(ValueError, match="y must be finite"):
        solvers.saga(X, np.full(40, np.inf), loss="squared")
    with pytest.raises(TypeError, match="X must hold real numbers"):
        solvers.saga(X.astype(str), y)
