"""The fused proximal gradient step (kernels.prox_gradient_step) against the
NumPy a user would write for the same training-loop update: the cases of
``kernels.benchmarks.update``.

    v = (1 - lam) * (g - s) + lam * mu      # the lambda-estimator
    w -= step * v
    kernels.prox_l1(w, step * beta, out=w)   # or the cumulative penalty

In place on w, as a training loop runs it ("numpy-expression"; the
implementation "numpy-expression-numpy-prox" writes the soft threshold in
NumPy too).  Bytes moved, the least any implementation must move: read w,
g, s, mu and write w (5 arrays; the cumulative penalty also reads and
writes its state: 7; plain SGD reads w and g and writes w: 3).
"""

from kernels.benchmarks import EXPRESSION, update

from .common import IMPLEMENTATIONS, BandwidthBenchmark, speedup_over_peer


class _StepBenchmark(BandwidthBenchmark):
    param_names = ("implementation", "dtype", "size")
    options = {}

    def case(self, implementation, dtype, size):
        return update.prox_gradient_step(size, dtype, **self.options), implementation

    track_speedup_over_numpy_expression = speedup_over_peer(
        EXPRESSION, "x faster than numpy-expression"
    )


class ProxGradientStepL1(_StepBenchmark):
    """One lambda-estimator step (lam = 0.7) with the l1 prox, in place."""

    params = (
        (*IMPLEMENTATIONS, update.NUMPY_PROX),
        ("float32", "float64"),
        (10_000, 1_000_000),
    )


class ProxGradientStepCumulative(_StepBenchmark):
    """One lambda-estimator step with the cumulative l1 penalty, in place."""

    params = (IMPLEMENTATIONS, ("float32",), (1_000_000,))
    options = {"penalty": "cumulative_l1"}


class ProxGradientStepSGD(_StepBenchmark):
    """One plain SGD step with the l1 prox, in place."""

    params = (IMPLEMENTATIONS, ("float32",), (1_000_000,))
    options = {"estimator": "sgd"}
