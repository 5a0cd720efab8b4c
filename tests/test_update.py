"""kernels.update: the fused proximal gradient step on every backend against
the NumPy reference, its mathematics (lam = 0 is SGD, lam = 1/2 half the
SVRG direction, the fused step equals kernels.prox_* of the NumPy
expression, the cumulative penalty equals kernels.cumulative_l1), and input
validation."""

import tracemalloc

import numpy as np
import pytest
from _support import SHAPES, arrays, assert_close, magnitude, rtol
from hypothesis import given
from hypothesis import strategies as st

import kernels

REF = "numpy"
BACKENDS = kernels.available_backends()
COMPILED = [b for b in BACKENDS if b != REF]

# (penalty, keyword arguments) for every penalty code.
PENALTIES = {
    "none": (None, {}),
    "l1": ("l1", {"beta": 0.8}),
    "elastic_net": ("elastic_net", {"beta": 0.8, "l2": 0.3}),
    "l0": ("l0", {"beta": 0.8}),
    "cumulative_l1": ("cumulative_l1", {"beta": 0.8}),
}
# None: SVRG; numbers: the lambda-estimator's branches and edges; "sgd": no
# snapshot terms.
ESTIMATORS = ["sgd", None, 0.0, 0.3, 0.5, 0.7, 1.0]


def _terms(shape, dtype, rng):
    w, g, s, mu = (rng.normal(size=shape).astype(dtype) for _ in range(4))
    return w, g, s, mu


def _step(w, g, s, mu, lam, name, backend, state=None, **extra):
    """prox_gradient_step with the estimator and penalty named."""
    penalty, kwargs = PENALTIES[name]
    snapshot = () if lam == "sgd" else (s, mu)
    lam_kw = {} if lam in ("sgd", None) else {"lam": lam}
    if penalty == "cumulative_l1":
        kwargs = {**kwargs, "cumulative": state}
    return kernels.prox_gradient_step(
        w, g, *snapshot, step=0.5, penalty=penalty, backend=backend,
        **lam_kw, **kwargs, **extra,
    )  # fmt: skip


def _state(w, rng):
    state = kernels.CumulativeL1(w)
    state.received[...] = rng.uniform(-0.2, 0.2, size=w.shape).astype(w.dtype)
    state.total = 0.4
    return state


def _copy_state(state):
    copy = kernels.CumulativeL1(state.received)
    copy.received[...] = state.received
    copy.total = state.total
    return copy


# Every backend against the reference -----------------------------------------


@pytest.mark.parametrize("name", sorted(PENALTIES))
@pytest.mark.parametrize("lam", ESTIMATORS, ids=str)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in_place"])
def test_matches_reference(backend, dtype, rng, name, lam, in_place):
    w, g, s, mu = _terms((7, 13), dtype, rng)
    state = _state(w, rng)
    ref_state = _copy_state(state)
    expected = _step(w.copy(), g, s, mu, lam, name, REF, ref_state)
    target = w.copy()
    extra = {"out": target} if in_place else {}
    result = _step(target, g, s, mu, lam, name, backend, state, **extra)
    if in_place:
        assert result is target
    else:
        assert result is not target
        np.testing.assert_array_equal(target, w)  # w untouched
    scale = magnitude(w, g, s, mu)
    assert_close(result, expected, scale, signed_zeros=True)
    if name == "cumulative_l1":
        assert_close(state.received, ref_state.received, scale)
        assert state.total == ref_state.total == pytest.approx(0.4 + 0.5 * 0.8)


@given(data=st.data())
@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_matches_reference_hypothesis(backend, dtype, name, data):
    shape = data.draw(SHAPES)
    w, g, s, mu = (data.draw(arrays(dtype, shape, bound=10.0)) for _ in range(4))
    lam = data.draw(st.sampled_from(ESTIMATORS))
    state, ref_state = kernels.CumulativeL1(w), kernels.CumulativeL1(w)
    expected = _step(w, g, s, mu, lam, name, REF, ref_state)
    result = _step(w, g, s, mu, lam, name, backend, state)
    # hard thresholding may keep or drop a z at the cutoff within rounding
    if name == "l0":
        cutoff = np.sqrt(2 * 0.5 * 0.8)
        near = np.abs(np.abs(expected) - cutoff) < 1e3 * rtol(dtype)
        result, expected = result[~near], expected[~near]
    assert_close(result, expected, magnitude(w, g, s, mu))
    assert_close(state.received, ref_state.received, magnitude(w, g, s, mu))


@pytest.mark.parametrize("name", sorted(PENALTIES))
@pytest.mark.parametrize("lam", ["sgd", 0.7], ids=str)
@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0)])
def test_empty(backend, dtype, name, lam, shape):
    w = np.empty(shape, dtype)
    state = kernels.CumulativeL1(w)
    result = _step(w, w.copy(), w.copy(), w.copy(), lam, name, backend, state)
    assert result.shape == shape and result.dtype == dtype
    assert _step(w, w.copy(), w.copy(), w.copy(), lam, name, backend, state, out=w) is w


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_dtype_preserved(backend, dtype, rng, name):
    w, g, s, mu = _terms((50,), dtype, rng)
    state = kernels.CumulativeL1(w)
    assert state.received.dtype == dtype
    assert _step(w, g, s, mu, 0.7, name, backend, state).dtype == dtype


# Mathematics ------------------------------------------------------------------


def _numpy_direction(g, s, mu, lam):
    """v by ALGORITHMS.md section 2, as a NumPy expression."""
    if lam == "sgd":
        return g
    if lam is None:
        return g - s + mu
    if lam <= 0.5:
        return (1 - lam) * g - lam * (s - mu)
    return (1 - lam) * (g - s) + lam * mu


PROX = {
    "none": lambda z, step, b: z,
    "l1": lambda z, step, b: kernels.prox_l1(z, step * 0.8, backend=b),
    "elastic_net": lambda z, step, b: kernels.prox_elastic_net(
        z, step * 0.8, step * 0.3, backend=b
    ),
    "l0": lambda z, step, b: kernels.prox_l0(z, step * 0.8, backend=b),
}


@pytest.mark.parametrize("name", sorted(PROX))
@pytest.mark.parametrize("lam", ESTIMATORS, ids=str)
def test_fused_equals_prox_of_numpy_expression(backend, dtype, rng, name, lam):
    """The fused step is kernels.prox_* applied to w - step * v, v written
    as ALGORITHMS.md writes it."""
    w, g, s, mu = _terms((200,), dtype, rng)
    z = w - dtype(0.5) * _numpy_direction(g, s, mu, lam).astype(dtype)
    expected = PROX[name](z, 0.5, backend)
    result = _step(w, g, s, mu, lam, name, backend)
    assert_close(result, expected, magnitude(w, g, s, mu))


def test_lam_zero_is_sgd(backend, dtype, rng):
    w, g, s, mu = _terms((300,), dtype, rng)
    for name in ("none", "l1", "elastic_net"):
        sgd = _step(w, g, s, mu, "sgd", name, backend)
        assert_close(_step(w, g, s, mu, 0.0, name, backend), sgd, magnitude(w, g))
    np.testing.assert_array_equal(
        _step(w, g, s, mu, "sgd", "none", backend), w - dtype(0.5) * g
    )


def test_lam_half_is_half_the_svrg_direction(backend, dtype, rng):
    w, g, s, mu = _terms((300,), dtype, rng)
    half = kernels.prox_gradient_step(w, g, s, mu, step=0.5, lam=0.5, backend=backend)
    svrg = kernels.prox_gradient_step(w, g, s, mu, step=0.25, backend=backend)
    np.testing.assert_array_equal(half, svrg)
    # and with l1: the same threshold step * beta needs beta doubled
    half = kernels.prox_gradient_step(
        w, g, s, mu, step=0.5, lam=0.5, penalty="l1", beta=0.1, backend=backend
    )
    svrg = kernels.prox_gradient_step(
        w, g, s, mu, step=0.25, penalty="l1", beta=0.2, backend=backend
    )
    np.testing.assert_array_equal(half, svrg)


def test_lam_one_ignores_g(backend, dtype, rng):
    w, g, s, mu = _terms((100,), dtype, rng)
    a = kernels.prox_gradient_step(w, g, s, mu, step=0.5, lam=1.0, backend=backend)
    b = kernels.prox_gradient_step(w, -g, s, mu, step=0.5, lam=1.0, backend=backend)
    np.testing.assert_array_equal(a, b)
    assert_close(a, w - dtype(0.5) * mu, magnitude(w, mu))


def test_branches_meet_at_one_half(backend, rng):
    """Both branches give v = (g - s + mu) / 2 at lam = 1/2: the step is
    continuous in lam."""
    w, g, s, mu = _terms((100,), np.float64, rng)
    at = kernels.prox_gradient_step(w, g, s, mu, step=0.5, lam=0.5, backend=backend)
    above = kernels.prox_gradient_step(
        w, g, s, mu, step=0.5, lam=0.5 + 1e-12, backend=backend
    )
    np.testing.assert_allclose(above, at, atol=1e-10)


def test_unbiased_branch_expectation(backend):
    """Enumerating every sample of a tiny least-squares problem: for
    lam <= 1/2 the mean of v over the samples is (1 - lam) * grad f(w)."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 4)), rng.normal(size=6)
    w, snapshot = rng.normal(size=4), rng.normal(size=4)

    def grad(i, x):
        return (X[i] @ x - y[i]) * X[i]

    mu = np.mean([grad(i, snapshot) for i in range(6)], axis=0)
    full = np.mean([grad(i, w) for i in range(6)], axis=0)
    for lam in (0.0, 0.25, 0.5):
        steps = [
            kernels.prox_gradient_step(
                w,
                grad(i, w),
                grad(i, snapshot),
                mu,
                step=1.0,
                lam=lam,
                backend=backend,
            )  # fmt: skip
            for i in range(6)
        ]
        mean_v = w - np.mean(steps, axis=0)  # step 1, no prox: v = w - w'
        np.testing.assert_allclose(mean_v, (1 - lam) * full, atol=1e-12)


def test_cumulative_agrees_with_cumulative_l1(backend, dtype, rng):
    """A training loop through the fused step and through
    w -= step * v; kernels.cumulative_l1(w, received, total) agree, step
    for step, with a decaying step size."""
    shape = (5, 8)
    w = rng.normal(size=shape).astype(dtype)
    w_ref, received, total = w.copy(), np.zeros_like(w), 0.0
    state = kernels.CumulativeL1(w)
    beta = 0.05
    for k in range(25):
        step = 0.5 * 0.5 ** (k / 25)
        g, s, mu = (rng.normal(size=shape).astype(dtype) for _ in range(3))
        g *= rng.random(shape) < 0.3
        kernels.prox_gradient_step(
            w, g, s, mu, step=step, lam=0.7, penalty="cumulative_l1",
            beta=beta, cumulative=state, out=w, backend=backend,
        )  # fmt: skip
        v = (1 - 0.7) * (g - s) + 0.7 * mu
        w_ref -= (step * v).astype(dtype)
        total += step * beta
        kernels.cumulative_l1(w_ref, received, total, backend=backend)
        scale = magnitude(w_ref, total) * (k + 1)
        assert_close(w, w_ref, scale)
        assert_close(state.received, received, scale)
        assert state.total == pytest.approx(total, rel=1e-12)
    assert np.count_nonzero(w == 0) > 0


def test_cumulative_penalty_clips_at_zero(backend, dtype):
    w = np.array([1.0, -1.0, 0.2, -0.2, 0.0], dtype)
    g = np.zeros_like(w)
    state = kernels.CumulativeL1(w)
    kernels.prox_gradient_step(
        w, g, step=1.0, penalty="cumulative_l1", beta=0.5, cumulative=state,
        out=w, backend=backend,
    )  # fmt: skip
    np.testing.assert_allclose(w, [0.5, -0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(state.received, [-0.5, 0.5, -0.2, 0.2, 0.0])
    assert state.total == 0.5


def test_l1_step_satisfies_optimality(backend, rng):
    """x = prox_{t beta |.|}(z): z - x is t * beta * sign(x) where x != 0
    and at most t * beta in magnitude where x == 0."""
    w, g, s, mu = _terms((500,), np.float64, rng)
    x = kernels.prox_gradient_step(
        w, g, s, mu, step=0.5, lam=0.3, penalty="l1", beta=0.8, backend=backend
    )
    z = w - 0.5 * (0.7 * g - 0.3 * (s - mu))
    t = 0.5 * 0.8
    nonzero = x != 0
    np.testing.assert_allclose((z - x)[nonzero], t * np.sign(x[nonzero]), atol=1e-12)
    assert np.all(np.abs(z[~nonzero]) <= t + 1e-12)


def test_weight_matrix_any_shape(backend, dtype, rng):
    """An MLP's weight matrix and a 3-D array are updated as their flat
    views would be."""
    for shape in [(30, 20), (2, 3, 4)]:
        w, g, s, mu = _terms(shape, dtype, rng)
        flat = _step(w.ravel(), g.ravel(), s.ravel(), mu.ravel(), 0.7, "l1", backend)
        np.testing.assert_array_equal(
            _step(w, g, s, mu, 0.7, "l1", backend), flat.reshape(shape)
        )


# Outputs and copies --------------------------------------------------------------


def test_out_given_and_noncontiguous(backend, dtype, rng):
    w, g, s, mu = _terms((6, 8), dtype, rng)
    expected = _step(w, g, s, mu, 0.7, "l1", REF)
    out = np.empty_like(w)
    assert _step(w, g, s, mu, 0.7, "l1", backend, out=out) is out
    assert_close(out, expected, magnitude(w, g, s, mu))
    big = np.zeros((6, 16), dtype)
    view = big[:, ::2]
    assert _step(w, g, s, mu, 0.7, "l1", backend, out=view) is view
    assert_close(view, expected, magnitude(w, g, s, mu))
    np.testing.assert_array_equal(big[:, 1::2], 0)


@pytest.mark.parametrize("alias", ["g", "s", "mu"])
def test_out_aliasing_an_input(backend, dtype, rng, alias):
    """out may be one of the gradient arrays: the result is as if computed
    into a fresh array."""
    w, g, s, mu = _terms((40,), dtype, rng)
    expected = _step(w, g, s, mu, 0.7, "l1", REF)
    terms = {"g": g, "s": s, "mu": mu}
    result = _step(w, g, s, mu, 0.7, "l1", backend, out=terms[alias])
    assert result is terms[alias]
    assert_close(result, expected, magnitude(w, expected))


def test_out_is_w_shares_memory(backend, dtype, rng):
    w, g, s, mu = _terms((40,), dtype, rng)
    result = _step(w, g, s, mu, 0.7, "l1", backend, out=w)
    assert result is w and np.shares_memory(result, w)
    fresh = _step(w, g, s, mu, 0.7, "l1", backend)
    assert not np.shares_memory(fresh, w)


@pytest.mark.skipif(not COMPILED, reason="no compiled backend here")
@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("name", sorted(PENALTIES))
@pytest.mark.parametrize("lam", ["sgd", 0.7], ids=str)
def test_no_hidden_copies(compiled, dtype, name, lam):
    """In place, a compiled backend allocates nothing of w's size; with
    out=None, only the result."""
    shape = (250, 1000)
    w, g, s, mu = (np.full(shape, v, dtype) for v in (0.75, 0.1, 0.2, 0.3))
    state = kernels.CumulativeL1(w)
    small = [a[:2] for a in (w, g, s, mu)]
    _step(*small, lam, name, compiled, kernels.CumulativeL1(small[0]), out=small[0])
    tracemalloc.start()
    try:
        _step(w, g, s, mu, lam, name, compiled, state, out=w)
        in_place = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        result = _step(w, g, s, mu, lam, name, compiled, state)
        allocated = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    assert in_place < w.nbytes / 8, in_place
    assert allocated < w.nbytes * 1.05, allocated


def test_cumulative_state_repr_and_conversion():
    state = kernels.CumulativeL1([[1, 2], [3, 4]])
    assert state.received.dtype == np.float64 and state.received.shape == (2, 2)
    assert "total=0.0" in repr(state)
    assert kernels.CumulativeL1(np.zeros(3, np.float32)).received.dtype == np.float32


# Errors ---------------------------------------------------------------------------

W = np.array([1.0, -2.0, 3.0, 0.5])
G = np.array([0.1, 0.2, -0.3, 0.4])


def _call(**changes):
    args = {"w": W, "g": G, "s": G * 2, "mu": G * 3, "step": 0.1, "lam": 0.5}
    args.update(changes)
    w, g, s, mu = (args.pop(k) for k in ("w", "g", "s", "mu"))
    return lambda b: kernels.prox_gradient_step(w, g, s, mu, backend=b, **args)


ERRORS = {
    "g float32": (_call(g=G.astype(np.float32)), TypeError, "g must have w's dtype"),
    "g list": (_call(g=list(G)), TypeError, "g must be a NumPy array"),
    "g shape": (_call(g=np.zeros(5)), ValueError, r"g must have w's shape \(4,\)"),
    "s shape": (_call(s=G.reshape(2, 2)), ValueError, "s must have w's shape"),
    "mu strided": (_call(mu=np.zeros(8)[::2]), ValueError, "mu must be C-contig"),
    "s without mu": (_call(mu=None), ValueError, "s and mu go together"),
    "lam without s": (_call(s=None, mu=None), ValueError, "lam needs the snapshot"),
    "lam > 1": (_call(lam=1.5), ValueError, r"lam must be in \[0, 1\]"),
    "lam < 0": (_call(lam=-0.1), ValueError, "lam must be >= 0"),
    "lam nan": (_call(lam=float("nan")), ValueError, "lam must not be NaN"),
    "lam str": (_call(lam="0.5"), TypeError, "lam must be a real number"),
    "step inf": (_call(step=np.inf), ValueError, "step must be finite"),
    "step nan": (_call(step=np.nan), ValueError, "step must not be NaN"),
    "step < 0": (_call(step=-1.0), ValueError, "step must be >= 0"),
    "step None": (_call(step=None), TypeError, "step must be a real number"),
    "penalty": (_call(penalty="l2"), ValueError, "penalty must be one of"),
    "beta < 0": (_call(penalty="l1", beta=-1), ValueError, "beta must be >= 0"),
    "beta inf": (_call(penalty="l1", beta=np.inf), ValueError, "beta must be fin"),
    "beta no penalty": (_call(beta=0.1), ValueError, "beta=0.1 needs a penalty"),
    "l2 with l1": (_call(penalty="l1", l2=0.1), ValueError, "l2 applies to"),
    "cumulative missing": (
        _call(penalty="cumulative_l1"),
        TypeError,
        r"needs cumulative=kernels.CumulativeL1\(w\)",
    ),
    "cumulative wrong penalty": (
        _call(penalty="l1", cumulative=kernels.CumulativeL1(W)),
        ValueError,
        "cumulative is the state of penalty='cumulative_l1'",
    ),
    "cumulative shape": (
        _call(penalty="cumulative_l1", cumulative=kernels.CumulativeL1(W[:3])),
        ValueError,
        "cumulative.received must have w's shape",
    ),
    "cumulative dtype": (
        _call(
            penalty="cumulative_l1",
            cumulative=kernels.CumulativeL1(W.astype(np.float32)),
        ),
        ValueError,
        "cumulative.received must have w's shape .* and dtype",
    ),
    "out shape": (_call(out=np.zeros(5)), ValueError, "out must have shape"),
    "out dtype": (
        _call(out=np.zeros(4, np.float32)),
        ValueError,
        "out must have dtype",
    ),
    "w complex": (_call(w=W + 1j), TypeError, "w must hold real numbers"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error(case, backend):
    call, error, pattern = ERRORS[case]
    with pytest.raises(error, match=pattern):
        call(backend)


def test_bad_cumulative_state(backend):
    state = kernels.CumulativeL1(W)
    state.total = float("inf")
    with pytest.raises(ValueError, match="cumulative.total must be finite"):
        _call(penalty="cumulative_l1", cumulative=state)(backend)
    state = kernels.CumulativeL1(W)
    state.received = state.received[::-1]
    with pytest.raises(ValueError, match="cumulative.received must be C-contig"):
        _call(penalty="cumulative_l1", cumulative=state)(backend)
    state = kernels.CumulativeL1(W)
    w = W.copy()
    state.received = w
    with pytest.raises(ValueError, match="must not share memory with w"):
        _call(w=w, penalty="cumulative_l1", cumulative=state)(backend)


def test_errors_leave_state_alone(backend):
    w = W.copy()
    state = kernels.CumulativeL1(w)
    with pytest.raises(ValueError):
        _call(w=w, penalty="cumulative_l1", cumulative=state, lam=2.0)(backend)
    np.testing.assert_array_equal(w, W)
    assert state.total == 0.0


def test_read_only_w_out_of_place(backend):
    w = W.copy()
    w.flags.writeable = False
    result = _call(w=w)(backend)
    assert result.flags.writeable
    with pytest.raises(ValueError, match="out must be writable"):
        _call(w=w, out=w)(backend)
