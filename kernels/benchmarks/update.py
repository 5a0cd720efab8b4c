"""Benchmark cases of the fused proximal gradient step
(``kernels.prox_gradient_step``) against the NumPy a user would write for
the same training-loop update::

    v = (1 - lam) * (g - s) + lam * mu      # the lambda-estimator
    w -= step * v
    kernels.prox_l1(w, step * beta, out=w)   # or the cumulative penalty

(peer ``"numpy-expression"``; ``"numpy-expression-numpy-prox"`` writes the
soft threshold in NumPy too).  In place on w, as a training loop runs it.
Bytes moved, the least any implementation must move: read w, g (and s, mu)
and write w; the cumulative penalty also reads and writes its state.
"""

import types

import numpy as np

import kernels
from kernels.benchmarks.case import EXPRESSION, Case, expression

__all__ = ["NUMPY_PROX", "prox_gradient_step"]

# The peer that writes the penalty's soft threshold in NumPy as well.
NUMPY_PROX = "numpy-expression-numpy-prox"
# The step and beta are small, so that thousands of timed calls leave the
# weights of the same size.
LAM, STEP, BETA = 0.7, 1e-3, 1e-3


def _lambda_step(a):
    v = (1 - a.lam) * (a.g - a.s) + a.lam * a.mu
    a.w -= a.step * v
    return v


def _lambda_step_expression(a):
    _lambda_step(a)
    if a.state is None:
        return kernels.prox_l1(a.w, a.step * a.beta, out=a.w)
    a.state.total += a.step * a.beta
    return kernels.cumulative_l1(a.w, a.state.received, a.state.total)


def _lambda_step_numpy(a):
    _lambda_step(a)
    threshold = a.step * a.beta
    return np.multiply(np.sign(a.w), np.maximum(np.abs(a.w) - threshold, 0), out=a.w)


def _sgd_step_expression(a):
    a.w -= a.step * a.g
    return kernels.prox_l1(a.w, a.step * a.beta, out=a.w)


def prox_gradient_step(n, dtype, estimator="lambda", penalty="l1"):
    """One in-place step on ``n`` parameters of ``dtype``: the
    lambda-estimator (lam 0.7) or plain SGD (``estimator="sgd"``), with
    the l1 prox or the cumulative l1 penalty (``penalty="cumulative_l1"``,
    lambda-estimator only)."""
    if estimator not in ("lambda", "sgd") or penalty not in ("l1", "cumulative_l1"):
        raise ValueError(f"no case for estimator {estimator!r}, penalty {penalty!r}")
    sgd = estimator == "sgd"
    cumulative = penalty == "cumulative_l1"
    if sgd and cumulative:
        raise ValueError("the cumulative penalty's case is the lambda-estimator's")
    arrays = (3 if sgd else 5) + (2 if cumulative else 0)

    def setup():
        rng = np.random.default_rng(0)
        w, g, s, mu = (rng.standard_normal(n, dtype=np.dtype(dtype)) for _ in "wgsm")
        state = kernels.CumulativeL1(w) if cumulative else None
        return types.SimpleNamespace(
            w=w, g=g, s=s, mu=mu, lam=LAM, step=STEP, beta=BETA, state=state
        )

    def ours(a, backend):
        snapshot = () if sgd else (a.s, a.mu)
        lam = {} if sgd else {"lam": a.lam}
        return kernels.prox_gradient_step(
            a.w, a.g, *snapshot, step=a.step, penalty=penalty, beta=a.beta,
            cumulative=a.state, out=a.w, backend=backend, **lam,
        )  # fmt: skip

    if sgd:
        peers = {EXPRESSION: expression(_sgd_step_expression)}
    else:
        peers = {EXPRESSION: expression(_lambda_step_expression)}
        if not cumulative:
            peers[NUMPY_PROX] = expression(_lambda_step_numpy, "NumPy expr, NumPy prox")
    return Case(
        kernel=f"prox_gradient_step {'sgd' if sgd else 'lam'} "
        + ("cumulative" if cumulative else "l1"),
        shape=(n,),
        dtype=np.dtype(dtype).name,
        setup=setup,
        ours=ours,
        peers=peers,
        bytes_moved=arrays * n * np.dtype(dtype).itemsize,
        copy_of="w",
    )
