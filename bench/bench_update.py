"""The fused proximal gradient step (kernels.prox_gradient_step) against the
NumPy expression a user would write for the same training-loop update:

    v = (1 - lam) * (g - s) + lam * mu      # the lambda-estimator
    w -= step * v
    kernels.prox_l1(w, step * beta, out=w)   # or the cumulative penalty

In place on w, as a training loop runs it.  Bytes moved, the least any
implementation must move: read w, g, s, mu and write w (5 arrays; the
cumulative penalty also reads and writes its state: 7).
"""

import kernels

from .common import BASELINE, IMPLEMENTATIONS, KernelBenchmark, Workload, random_array

LAM, STEP, BETA = 0.7, 1e-3, 1e-3


def lambda_step_expression(w, g, s, mu):
    v = (1 - LAM) * (g - s) + LAM * mu
    w -= STEP * v
    kernels.prox_l1(w, STEP * BETA, out=w)


def cumulative_step_expression(w, g, s, mu, state):
    v = (1 - LAM) * (g - s) + LAM * mu
    w -= STEP * v
    state.total += STEP * BETA
    kernels.cumulative_l1(w, state.received, state.total)


def _terms(dtype, size):
    return [random_array(size, dtype, seed=seed) for seed in range(4)]


class ProxGradientStepL1(KernelBenchmark):
    """One lambda-estimator step (lam = 0.7) with the l1 prox, in place."""

    params = (IMPLEMENTATIONS, ("float32", "float64"), (10_000, 1_000_000))

    def make(self, implementation, dtype, size):
        w, g, s, mu = _terms(dtype, size)
        if implementation == BASELINE:
            return Workload(
                lambda: lambda_step_expression(w, g, s, mu), 5 * w.nbytes, w
            )
        return Workload(
            lambda: kernels.prox_gradient_step(
                w,
                g,
                s,
                mu,
                step=STEP,
                lam=LAM,
                penalty="l1",
                beta=BETA,
                out=w,
                backend=implementation,
            ),  # fmt: skip
            5 * w.nbytes,
            w,
        )


class ProxGradientStepCumulative(KernelBenchmark):
    """One lambda-estimator step with the cumulative l1 penalty, in place."""

    params = (IMPLEMENTATIONS, ("float32",), (1_000_000,))

    def make(self, implementation, dtype, size):
        w, g, s, mu = _terms(dtype, size)
        state = kernels.CumulativeL1(w)
        if implementation == BASELINE:
            return Workload(
                lambda: cumulative_step_expression(w, g, s, mu, state), 7 * w.nbytes, w
            )
        return Workload(
            lambda: kernels.prox_gradient_step(
                w,
                g,
                s,
                mu,
                step=STEP,
                lam=LAM,
                penalty="cumulative_l1",
                beta=BETA,
                cumulative=state,
                out=w,
                backend=implementation,
            ),  # fmt: skip
            7 * w.nbytes,
            w,
        )
