"""The VCSG schedule (arXiv 2102.09893; ALGORITHMS.md section 2): each
stage's batch size, lambda and step, for the linear-model solver
``kernels.solvers.vcsg`` and the MLP training
``kernels.train.train_mlp(optimizer="vcsg")``.

Stage j of VCSG:

1. the stage batch B: n for the first ``warmup_stages`` stages, then the
   smallest B whose sampling variance (n - B) / (B (n - 1)) sigma^2 is at
   most the tolerance, B = n sigma^2 / (sigma^2 + (n - 1) tolerance),
   clipped to [n^min_batch_exponent, n]; sigma^2 is the per-sample
   gradient variance measured on the previous stage's batch
   (``per_sample_variance``);
2. mu, the mean gradient of the B samples at the snapshot;
3. B/b inner steps of the lambda-estimator on inner batches of b =
   B^inner_batch_exponent (``inner_batches``);
4. the regime sets lam and the step: warm-up lam = 0 and the step; the
   variance bound active (n^min_batch_exponent < B <= n) lam =
   ``lam_unbiased`` and step / n^step_exponent_unbiased; the tolerance
   bound active (B clipped to n^min_batch_exponent) lam = ``lam_biased``
   and step / n^step_exponent_biased.

The tolerance is ``eps`` when it is a number; with ``eps=None`` it is
relative, theta times the squared norm of the gradient (or gradient
mapping) the caller measured at the previous snapshot, so that the batch
grows to n as the iterates approach a solution.  The author's code fixes
eps and r for its data's scale; a library cannot (ALGORITHMS.md).

The schedule only computes sizes and constants: drawing the samples and
taking the steps is the caller's.
"""

import dataclasses
import math

from kernels import _checks
from kernels.update import lambda_coefficients


def _constant(default, doc):
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass
class VCSGSchedule:
    """VCSG's constants, checked, and the rules of the module docstring."""

    warmup_stages: int = _constant(
        1, "stages on the whole data set (B = n, lam = 0) before the schedule"
    )
    eps: object = _constant(
        None,
        "the stage batch's variance tolerance; None makes it theta times the "
        "squared gradient(-mapping) norm at the previous snapshot",
    )
    theta: float = _constant(0.5, "the relative tolerance when eps is None")
    min_batch_exponent: float = _constant(
        0.88, "the stage batch is at least n^min_batch_exponent, in [0, 1]"
    )
    inner_batch_exponent: float = _constant(
        0.625, "inner batches of b = B^inner_batch_exponent samples, in [0, 1]"
    )
    lam_unbiased: float = _constant(
        0.4, "lam when the variance bound sets B (0.5 converges exactly)"
    )
    lam_biased: float = _constant(0.75, "lam when B is clipped to its minimum")
    step_exponent_unbiased: float = _constant(
        5 / 32, "with lam_unbiased the step is divided by n^step_exponent_unbiased"
    )
    step_exponent_biased: float = _constant(
        3 / 32, "with lam_biased the step is divided by n^step_exponent_biased"
    )

    def __post_init__(self):
        self.warmup_stages = _checks.integer(
            self.warmup_stages, "warmup_stages", minimum=0
        )
        self.theta = _checks.scalar(self.theta, "theta", minimum=0.0, allow_inf=False)
        if self.eps is not None:
            self.eps = _checks.scalar(self.eps, "eps", minimum=0.0, allow_inf=False)
        for name in ("min_batch_exponent", "inner_batch_exponent"):
            value = getattr(self, name)
            if not 0.0 <= _checks.scalar(value, name, allow_inf=False) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for value in (self.lam_unbiased, self.lam_biased):
            lambda_coefficients(value)

    @classmethod
    def from_options(cls, options):
        """The schedule with the constants of the dict ``options`` (any
        subset of the fields), the defaults for the rest; an unknown key is
        a ValueError."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown VCSG options: {', '.join(sorted(unknown))}")
        return cls(**options)

    def stage(self, n, stage, sigma2, target):
        """(B, lam, step exponent) of stage ``stage`` over ``n`` samples:
        the stage batch, lam, and e such that the stage's step is the step
        divided by n^e (0 in the warm-up).  ``sigma2`` is the per-sample
        variance measured on the previous stage's batch and ``target`` the
        squared norm the relative tolerance is taken of (both None before
        the first stage)."""
        if stage < self.warmup_stages or sigma2 is None:
            return n, 0.0, 0.0
        smallest = min(n, max(1, math.ceil(n**self.min_batch_exponent)))
        tolerance = self.theta * target if self.eps is None else self.eps
        wanted = n if tolerance <= 0 else n * sigma2 / (sigma2 + (n - 1) * tolerance)
        batch = int(min(n, max(smallest, math.ceil(wanted))))
        if batch <= smallest < n:
            return batch, self.lam_biased, self.step_exponent_biased
        return batch, self.lam_unbiased, self.step_exponent_unbiased

    def inner_batches(self, batch):
        """(b, number of inner steps) of a stage batch of ``batch`` samples:
        b = B^inner_batch_exponent rounded (at least 1), B // b steps (at
        least 1)."""
        b = max(1, round(batch**self.inner_batch_exponent))
        return b, max(1, batch // b)

    @staticmethod
    def per_sample_variance(mean_square_norm, mean_norm2):
        """sigma^2 = mean ||grad f_i||^2 - ||mean grad f_i||^2 over a batch,
        from the two terms (never negative)."""
        return max(mean_square_norm - mean_norm2, 0.0)
