"""kernels.train: the MLP's gradient against finite differences, the
per-sample gradient norms against one-sample gradients, every optimizer
and penalty on a small problem, IFO accounting, the sparsity the penalties
promise (exact zeros, whole neurons), fine-tuning's fixed pattern, and
input validation."""

import numpy as np
import pytest

from kernels.compress import load_digits
from kernels.train import MLP, OPTIMIZERS, train_mlp

# Marked slow: left out of the emulated ARM runs (scripts/cross-build --quick)
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def small():
    """300 digits, standardised: a problem a run solves in a second."""
    data = load_digits()
    X = data.X_train[:300]
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    return X.astype(np.float32), data.y_train[:300]


def tiny_network(seed=0):
    return MLP.initial([5, 4, 3, 3], seed)


def tiny_data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((7, 5)).astype(np.float32), rng.integers(0, 3, 7)


def test_gradient_matches_finite_differences():
    net = tiny_network()
    X, y = tiny_data()
    grads = [np.empty_like(p) for p in net.params]
    loss = net.gradient(X, y, grads)
    assert loss == pytest.approx(net.loss(X, y), rel=1e-6)
    h = 1e-2
    for p, g in zip(net.params, grads, strict=True):
        for index in np.ndindex(p.shape):
            saved = p[index]
            p[index] = saved + h
            up = net.loss(X, y)
            p[index] = saved - h
            down = net.loss(X, y)
            p[index] = saved
            assert g[index] == pytest.approx((up - down) / (2 * h), abs=2e-3)


def test_sample_norms_are_the_norms_of_one_sample_gradients():
    net = tiny_network()
    X, y = tiny_data()
    grads = [np.empty_like(p) for p in net.params]
    _, norms = net.gradient(X, y, grads, sample_norms=True)
    for i in range(len(y)):
        net.gradient(X[i : i + 1], y[i : i + 1], grads)
        expected = sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)
        assert norms[i] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "optimizer, lam",
    [
        (o, None) if o in ("sgd", "svrg") else pytest.param(o, None, marks=SLOW)
        for o in OPTIMIZERS
    ]
    + [pytest.param("svrg", 0.7, marks=SLOW), pytest.param("saga", 0.3, marks=SLOW)],
)
def test_every_optimizer_learns_within_its_ifo_budget(small, optimizer, lam):
    X, y = small
    step = 0.01 if optimizer == "adam" else None  # the default suits longer runs
    result = train_mlp(
        X,
        y,
        (16,),
        optimizer=optimizer,
        lam=lam,
        step=step,
        epochs=40,
        batch_size=16,
        seed=3,
    )
    history = result.history
    assert history[0]["ifos"] == 0
    # VCSG's default constants (small biased steps) learn slowest
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert result.network.accuracy(X, y) > 0.6
    # the budget is 40 passes; a run stops within one step of it: 2 IFOs per
    # sample of a batch of 16, or for VCSG a stage's batch gradient (up to n)
    # and one step on its inner batch B^0.625
    step_ifos = 2 * 16 if optimizer != "vcsg" else len(y) + 2 * round(len(y) ** 0.625)
    assert 40 * len(y) <= result.ifos <= 40 * len(y) + step_ifos
    ifos = [h["ifos"] for h in history]
    assert ifos == sorted(ifos)


def test_same_seed_same_network(small):
    X, y = small
    a = train_mlp(X, y, (8,), optimizer="saga", epochs=2, seed=5).network
    b = train_mlp(X, y, (8,), optimizer="saga", epochs=2, seed=5).network
    c = train_mlp(X, y, (8,), optimizer="saga", epochs=2, seed=6).network
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params, strict=True))
    assert not np.array_equal(a.weights[0], c.weights[0])


@pytest.mark.slow
@pytest.mark.parametrize("penalty", ["l1", "cumulative_l1"])
def test_l1_penalties_zero_weights_and_more_so_when_stronger(small, penalty):
    X, y = small
    nnz = []
    for beta in (0.0, 3e-3, 3e-2):
        net = train_mlp(
            X, y, (32,), penalty=penalty if beta else None, beta=beta, epochs=20
        ).network
        nnz.append(net.nnz)
    assert nnz[0] == 64 * 32 + 32 * 10
    assert nnz[0] > nnz[1] > nnz[2]


def test_group_penalty_removes_whole_neurons(small):
    X, y = small
    net = train_mlp(X, y, (32,), penalty="group_l1", group_beta=1.3, epochs=20).network
    incoming = np.any(net.weights[0] != 0, axis=1)
    outgoing = np.any(net.weights[1] != 0, axis=0)
    assert np.array_equal(incoming, outgoing)  # a unit goes whole or not at all
    assert 0 < incoming.sum() < 32
    # within a surviving unit, group shrinkage alone zeroes no single weight
    assert np.all(net.weights[0][incoming] != 0)


def test_the_history_reports_the_penalised_objective(small):
    X, y = small
    result = train_mlp(
        X, y, (8,), penalty="l1+group_l1", beta=1e-3, group_beta=1e-3, epochs=2
    )
    last = result.history[-1]
    net = result.network
    l1 = 1e-3 * sum(np.abs(W).sum() for W in net.weights)
    groups = (
        1e-3
        * np.sqrt((net.weights[0] ** 2).sum(1) + (net.weights[1] ** 2).sum(0)).sum()
    )
    assert last["loss"] == pytest.approx(net.loss(X, y), rel=1e-6)
    assert last["objective"] == pytest.approx(last["loss"] + l1 + groups, rel=1e-5)
    assert last["nnz"] == net.nnz


def test_fine_tuning_keeps_the_sparsity_pattern(small):
    X, y = small
    sparse = train_mlp(
        X, y, (16,), penalty="cumulative_l1", beta=1e-2, epochs=10
    ).network
    start = sparse.copy()
    assert 0 < sparse.nnz < 64 * 16 + 16 * 10  # zeros to keep, weights to tune
    tuned = train_mlp(
        X, y, network=sparse, fine_tune=True, optimizer="adam", epochs=5
    ).network
    for before, after in zip(sparse.weights, tuned.weights, strict=True):
        assert np.array_equal(after[before == 0], np.zeros((before == 0).sum()))
    assert tuned.loss(X, y) < sparse.loss(X, y)
    # the starting network itself is left untouched
    for a, b in zip(start.params, sparse.params, strict=True):
        assert np.array_equal(a, b)


def test_progress_is_called_once_per_epoch(small):
    X, y = small
    calls = []
    train_mlp(
        X, y, (8,), optimizer="sgd", epochs=3, progress=lambda *a: calls.append(a)
    )
    assert len(calls) == 4  # the start and three epochs
    assert calls[-1][0] >= calls[-1][1] == 3 * len(y)


def test_divergence_is_an_error_naming_the_step(small):
    X, y = small
    with pytest.raises(FloatingPointError, match="step"):
        train_mlp(X * 1e3, y, (8,), optimizer="sgd", step=1e3, epochs=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"penalty": "l2"}, "penalty"),
        ({"optimizer": "sgd", "lam": 0.5}, "lam"),
        ({"optimizer": "svrg", "lam": 1.5}, "lam"),
        ({"beta": -1.0, "penalty": "l1"}, "beta"),
        ({"step": float("nan")}, "step"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "vcsg", "vcsg_options": {"thetta": 1}}, "thetta"),
    ],
)
def test_bad_arguments_are_value_errors(small, kwargs, message):
    X, y = small
    with pytest.raises(ValueError, match=message):
        train_mlp(X, y, (4,), epochs=1, **kwargs)


def test_bad_data_is_a_value_error():
    X = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="class indices"):
        train_mlp(X, np.array([0.5, 1, 0, 1]), (2,))
    with pytest.raises(ValueError, match="shape|2-D"):
        train_mlp(X, np.array([0, 1]), (2,))
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="X"):
        train_mlp(X, np.array([0, 1, 0, 1]), (2,))
