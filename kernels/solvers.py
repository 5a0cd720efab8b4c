"""Variance-reduced solvers for regularised linear models (ALGORITHMS.md
sections 1, 2 and 5).

Each solver minimises

    F(W, b) = (1/n) sum_i loss(x_i @ W + b, y_i) + alpha/2 * ||W||^2
              + beta * penalty(W)

over the coefficients W (and the intercept b with ``fit_intercept``), where
``loss`` is "squared" (least squares), "logistic" (binary, any two labels)
or "multinomial" (softmax over the classes of ``y``), and ``penalty`` is
None, "l1", "elastic_net" (``l1_ratio * ||W||_1 + (1 - l1_ratio)/2 *
||W||^2``), "group_l1" (``sum_g sqrt(size_g) * ||W_g||_2`` over groups of
consecutive features, given by ``groups``) or "l0" (the number of
non-zeros).  The ridge term and the penalty are applied by their prox after
every step; the intercept is not penalised.

``X`` is a dense array (C-contiguous float32 or float64 is used without a
copy; anything else is converted once) or sparse (``kernels.CSRMatrix`` or
any scipy sparse matrix, converted to CSR once).  float32 data stays
float32; coefficients, gradients and the SAGA table are float64.  On CSR
data with no penalty, "l1" or "elastic_net", each step costs O(nnz(x_i))
(lazy updates); "group_l1" and "l0" update every coordinate at every step.

Every solver returns a ``SolverResult`` and counts its work in IFOs (one
IFO = one sample's gradient; ALGORITHMS.md section 1).  Once per epoch the
solver evaluates F and the gradient-mapping norm ||G_step(W, b)|| at the
current point (a full pass that is neither counted in IFOs nor in seconds,
unless the method needs that gradient anyway, as SVRG and SARAH do) and
stops when the norm is at most ``tol``.  A NaN, an infinity or an objective
that grows a million-fold raises ``DivergenceError`` naming the step size.

The solvers share their keywords (``kernels._solver_run.KEYWORDS``, each
solver's signature and parameter list are made of them): ``X`` and ``y``
come first, by position or by name, every other argument by name.  This
module holds the algorithms, each a loop over epochs (or stages) of one
epoch kernel call; ``kernels._solver_run`` the problem, the run and the
result they share.
"""

import dataclasses
import math

import numpy as np

from kernels import _checks
from kernels._codes import METHOD_RECURSIVE, METHOD_SNAPSHOT, METHOD_TABLE
from kernels._solver_run import (
    DivergenceError,
    Keyword,
    SolverResult,
    ifos_per_sample,
    solver,
)
from kernels._vcsg import VCSGSchedule
from kernels.update import lambda_coefficients

SOLVERS = ("sgd", "svrg", "saga", "sarah", "scsg", "vcsg")

__all__ = [
    *SOLVERS,
    "SOLVERS",
    "SolverResult",
    "DivergenceError",
    "lambda_coefficients",
]

_LAM = Keyword(
    "lam",
    None,
    "None for the textbook direction g - s + mu, or a number in [0, 1]: the "
    "lambda-estimator's mix of the same terms (``lambda_coefficients``)",
)


@solver(safe_factor=1.0)
def sgd(run, batch_size):
    """Proximal stochastic gradient descent: v = grad f_I(x), constant step
    (default 1/L).  Not variance-reduced: with small batches it reaches a
    neighbourhood of the solution whose size scales with the step;
    ``batch_size=n_samples`` is proximal gradient descent.  One IFO per
    sample per epoch."""
    while run.monitor():
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_SNAPSHOT,
            samples,
            batch_size,
            run.step,
            (1.0, 0.0, 0.0),
            direction=np.zeros_like(run.coef),
            direction_intercept=np.zeros_like(run.intercept),
        )
        run.n_ifo += samples.shape[0]
        run.epoch += 1


@solver(safe_factor=1 / 3, own=(_LAM,))
def svrg(run, batch_size, lam):
    """Proximal SVRG: each epoch takes a snapshot and its full gradient mu
    (n IFOs), then n/b steps along v = g - s + mu (2 IFOs per sample), or
    along the lambda-estimator's v when ``lam`` is a number in [0, 1]
    (``lambda_coefficients``).  Default step 1/(3L)."""
    coefficients = lambda_coefficients(lam)
    while run.monitor():
        mu, mu_intercept = run.full_gradient()
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_SNAPSHOT,
            samples,
            batch_size,
            run.step,
            coefficients,
            anchor=run.coef.copy(),
            anchor_intercept=run.intercept.copy(),
            direction=mu,
            direction_intercept=mu_intercept,
        )
        run.n_ifo += ifos_per_sample(coefficients) * samples.shape[0]
        run.epoch += 1


@solver(safe_factor=1 / 3, own=(_LAM,))
def saga(run, batch_size, lam):
    """Proximal SAGA: a table of each sample's last loss derivative (one
    scalar per sample and output) replaces the snapshot; v = g_j - a_j +
    mean(a), or the lambda-estimator's mix with ``lam``.  The table starts
    from a full pass at the starting point (n IFOs), then each sample costs
    one IFO.  Default step 1/(3L)."""
    p = run.problem
    coefficients = lambda_coefficients(lam)
    table = mean = mean_intercept = None
    while run.monitor():
        if table is None:
            _, mean, mean_intercept, table = run.timed(
                p.gradient, run.coef, run.intercept
            )
            run.n_ifo += p.n_samples
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_TABLE,
            samples,
            batch_size,
            run.step,
            coefficients,
            direction=mean,
            direction_intercept=mean_intercept,
            table=table,
        )
        run.n_ifo += samples.shape[0]
        run.epoch += 1


@solver(safe_factor=0.5)
def sarah(run, batch_size):
    """Proximal SARAH: each epoch restarts from the full gradient v_0 (n
    IFOs), steps along it, then along the recursive v_t = g_I(x_t) -
    g_I(x_{t-1}) + v_{t-1} (2 IFOs per sample).  Default step 1/(2L)."""
    previous = np.zeros_like(run.coef)
    previous_intercept = np.zeros_like(run.intercept)
    while run.monitor():
        v, v_intercept = run.full_gradient()
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_RECURSIVE,
            samples,
            batch_size,
            run.step,
            (1.0, -1.0, 1.0),
            direction=v,
            direction_intercept=v_intercept,
            previous=previous,
            previous_intercept=previous_intercept,
        )
        run.n_ifo += 2 * samples.shape[0]
        run.epoch += 1


def _stage(run, batch, coefficients, step, inner_batch, inner_steps):
    """One SCSG / VCSG stage: mu on ``batch`` (|batch| IFOs), then
    ``inner_steps`` snapshot steps on uniformly drawn mini-batches.
    Returns mu, its intercept part, the batch's loss derivatives and the
    snapshot (coefficients and intercept)."""
    p = run.problem
    _, mu, mu_intercept, derivatives = run.timed(
        p.gradient, run.coef, run.intercept, batch
    )
    run.n_ifo += batch.shape[0]
    samples = run.rng.integers(0, p.n_samples, size=inner_steps * inner_batch)
    anchor, anchor_intercept = run.coef.copy(), run.intercept.copy()
    run.epoch_call(
        METHOD_SNAPSHOT,
        samples.astype(np.int64),
        inner_batch,
        step,
        coefficients,
        anchor=anchor,
        anchor_intercept=anchor_intercept,
        direction=mu,
        direction_intercept=mu_intercept,
    )
    run.n_ifo += ifos_per_sample(coefficients) * samples.shape[0]
    return mu, mu_intercept, derivatives, anchor, anchor_intercept


@solver(
    safe_factor=1 / 3,
    own=(
        _LAM,
        Keyword(
            "stage_batch",
            None,
            "B_0, the first stage's batch (None: n/8, at least batch_size)",
        ),
        Keyword("batch_growth", 1.5, "B_j = min(n, stage_batch * batch_growth^j)"),
    ),
    without=("sample_order",),
)
def scsg(run, batch_size, lam, stage_batch, batch_growth):
    """SCSG (Lei et al. 2017): stage j draws B_j = min(n, stage_batch *
    batch_growth^j) samples without replacement (stage_batch defaults to
    n/8) for mu, then runs N ~ Geometric(b / (B_j + b)) snapshot steps on
    mini-batches of ``batch_size`` drawn uniformly.  With a fixed B < n
    (``batch_growth=1``) the batch mean's error leaves a noise floor, so the
    batch grows (as in the paper's convergent version) until it is the
    whole data set.  One "epoch" of the history is one stage;
    ``max_epochs`` bounds the stages.  Default step 1/(3L).  No
    ``sample_order``: the stages draw their samples from ``seed``."""
    b = batch_size
    n = run.problem.n_samples
    first = (
        max(b, -(-n // 8))
        if stage_batch is None
        else _checks.integer(stage_batch, "stage_batch", minimum=1, maximum=n)
    )
    growth = _checks.scalar(batch_growth, "batch_growth", minimum=1.0, allow_inf=False)
    coefficients = lambda_coefficients(lam)
    while run.monitor():
        grown = run.epoch * math.log(growth) >= math.log(n / first)
        big = n if grown else min(n, math.ceil(first * growth**run.epoch))
        batch = np.sort(run.rng.choice(n, size=big, replace=False)).astype(np.int64)
        inner = int(run.rng.geometric(b / (big + b)))
        _stage(run, batch, coefficients, run.step, b, inner)
        run.epoch += 1


@solver(
    safe_factor=1.0,
    own=tuple(
        Keyword(f.name, f.default, f.metadata["doc"])
        for f in dataclasses.fields(VCSGSchedule)
    ),
    without=("batch_size", "sample_order"),
)
def vcsg(run, **constants):
    """VCSG (arXiv 2102.09893; ALGORITHMS.md section 2).  Stage j:

    1. the stage batch B: n for the first ``warmup_stages`` stages, then the
       smallest B whose sampling variance (n - B) / (B (n - 1)) sigma^2 is at
       most ``eps``, B = n sigma^2 / (sigma^2 + (n - 1) eps), clipped to
       [n^min_batch_exponent, n]; sigma^2 is the per-sample gradient
       variance measured on the previous stage's batch;
    2. mu = grad f_B at the snapshot (B IFOs, drawn without replacement);
    3. B/b steps of the lambda-estimator on inner batches of b =
       B^inner_batch_exponent (2 IFOs per sample);
    4. the regime sets lam and the step: warm-up lam = 0 and step; the
       variance bound active (n^min_batch_exponent < B <= n) lam =
       ``lam_unbiased`` and step / n^step_exponent_unbiased; the tolerance
       bound active (B clipped to n^min_batch_exponent) lam =
       ``lam_biased`` and step / n^step_exponent_biased.

    ``eps`` None makes the tolerance relative: theta * ||G||^2, G the
    gradient mapping at the previous snapshot estimated from its batch mean
    (the batch mean's error a fixed fraction of what it estimates, so the
    batch grows to n as the iterates approach a solution, where G
    vanishes); a number fixes it.  Default step 1/L.  One "epoch" of the
    history is one stage.  The schedule is ``kernels._vcsg.VCSGSchedule``,
    shared with ``kernels.train``.

    For lam < 1/2 the estimator's variance does not vanish at the solution
    (v = (1 - 2 lam) g_i + ... there), so with the default lam_unbiased=0.4
    the iterates settle in a small neighbourhood of it; lam_unbiased=0.5
    (half the SVRG direction) converges to it."""
    schedule = VCSGSchedule(**constants)
    p = run.problem
    n = p.n_samples
    norms = p.row_sq_norms + (1.0 if p.fit_intercept else 0.0)
    sigma2 = target = None
    while run.monitor():
        big, lam, exponent = schedule.stage(n, run.epoch, sigma2, target)
        step = run.step / n**exponent
        batch = (
            p.all_samples
            if big == n
            else np.sort(run.rng.choice(n, size=big, replace=False)).astype(np.int64)
        )
        b, inner_steps = schedule.inner_batches(big)
        mu, mu_intercept, derivatives, anchor, anchor_intercept = _stage(
            run, batch, lambda_coefficients(lam), step, b, inner_steps
        )
        mu_norm2 = float(np.sum(mu * mu) + np.sum(mu_intercept * mu_intercept))
        spread = float(norms[batch] @ np.sum(derivatives * derivatives, axis=1)) / big
        sigma2 = schedule.per_sample_variance(spread, mu_norm2)
        target = p.certificate(anchor, anchor_intercept, mu, mu_intercept, step) ** 2
        run.epoch += 1
