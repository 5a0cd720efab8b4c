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
"""

import dataclasses
import math
import time

import numpy as np

from kernels import _checks, prox
from kernels._backend import kernels_for
from kernels._codes import (
    LOSS_LOGISTIC,
    LOSS_MULTINOMIAL,
    LOSS_SQUARED,
    METHOD_RECURSIVE,
    METHOD_SNAPSHOT,
    METHOD_TABLE,
    PENALTY_GROUP_L1,
    PENALTY_L0,
    PENALTY_L1,
    PENALTY_NONE,
)
from kernels.update import lambda_coefficients

__all__ = [
    "sgd",
    "svrg",
    "saga",
    "sarah",
    "scsg",
    "vcsg",
    "SolverResult",
    "DivergenceError",
    "lambda_coefficients",
]

_LOSSES = {
    "squared": LOSS_SQUARED,
    "logistic": LOSS_LOGISTIC,
    "multinomial": LOSS_MULTINOMIAL,
}
# Lipschitz constant of the loss's derivative per unit of ||x_i||^2.
_CURVATURE = {LOSS_SQUARED: 1.0, LOSS_LOGISTIC: 0.25, LOSS_MULTINOMIAL: 0.5}
_PENALTIES = {
    None: PENALTY_NONE,
    "l1": PENALTY_L1,
    "elastic_net": PENALTY_L1,
    "group_l1": PENALTY_GROUP_L1,
    "l0": PENALTY_L0,
}
_EMPTY_INDEX = np.zeros(0, dtype=np.int64)
_EMPTY = np.zeros(0)


class DivergenceError(ArithmeticError):
    """The iterates became NaN or infinite, or the objective blew up."""


@dataclasses.dataclass
class SolverResult:
    """What a solver returns.

    ``coef`` has shape (n_features,) for one output, (n_classes,
    n_features) for the multinomial loss; ``intercept`` is a float or an
    (n_classes,) array.  ``history`` is a list of (ifos, seconds,
    objective, gradient_mapping_norm), one entry per epoch and one for the
    starting point; ``seconds`` excludes the monitoring passes.
    ``classes`` holds the labels for the logistic and multinomial losses.
    """

    coef: np.ndarray
    intercept: object
    n_epochs: int
    n_ifo: int
    converged: bool
    objective: float
    gradient_mapping_norm: float
    step: float
    history: list
    classes: object = None


# The problem: validated data, labels and regularisation --------------------


class _Problem:
    """The data and the objective, validated once, in the kernels' layout."""

    def __init__(
        self, X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    ):
        self.kernels = kernels_for("solvers", backend)
        self._data_arrays(X)
        self._targets(y, loss)
        self.fit_intercept = bool(fit_intercept)
        self._regularisation(alpha, penalty, beta, l1_ratio, groups)
        norms = self.row_sq_norms + (1.0 if self.fit_intercept else 0.0)
        self.lipschitz = _CURVATURE[self.loss] * float(norms.max(initial=0.0))
        self.all_samples = np.arange(self.n_samples, dtype=np.int64)

    def _data_arrays(self, X):
        from kernels.sparse import CSRMatrix, _is_scipy_sparse

        if _is_scipy_sparse(X):
            X = CSRMatrix.from_scipy(X)
        if isinstance(X, CSRMatrix):
            data, indices, indptr = X._arrays
            self.n_samples, self.n_features = X.shape
            self.sparse = True
            self.row_sq_norms = (
                np.add.reduceat(
                    np.square(data, dtype=np.float64), indptr[:-1].astype(np.intp)
                )
                if data.size
                else np.zeros(self.n_samples)
            )
            self.row_sq_norms[np.diff(indptr) == 0] = 0.0
        else:
            X = _checks.as_float_array(X, "X")
            if X.ndim != 2:
                raise ValueError(
                    f"X must be 2-D (n_samples, n_features), got shape {X.shape}"
                )
            self.n_samples, self.n_features = X.shape
            self.sparse = False
            data = X.reshape(-1)
            indices = np.arange(self.n_features, dtype=np.int64)
            indptr = _EMPTY_INDEX
            self.row_sq_norms = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        if self.n_samples == 0:
            raise ValueError("X must have at least one sample, got 0 rows")
        _checks.require_finite(data, "X")
        self.data, self.indices, self.indptr = data, indices, indptr

    def _targets(self, y, loss):
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        self.loss = _LOSSES[loss]
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != self.n_samples:
            raise ValueError(
                f"y must be 1-D with one entry per sample ({self.n_samples}), "
                f"got shape {y.shape}"
            )
        self.classes = None
        if self.loss == LOSS_SQUARED:
            y = _checks.as_float_array(y, "y", dtype=np.float64)
            _checks.require_finite(y, "y")
            self.n_outputs = 1
        else:
            self.classes, codes = np.unique(y, return_inverse=True)
            if self.loss == LOSS_LOGISTIC and self.classes.size != 2:
                raise ValueError(
                    f"the logistic loss needs exactly two classes in y, got "
                    f"{self.classes.size}; use loss='multinomial'"
                )
            if self.classes.size < 2:
                raise ValueError(
                    f"y must hold at least two classes, got {self.classes}"
                )
            if self.loss == LOSS_LOGISTIC:
                y = np.where(codes == 1, 1.0, -1.0)
                self.n_outputs = 1
            else:
                y = codes.astype(np.float64)
                self.n_outputs = self.classes.size
        self.y = np.ascontiguousarray(y, dtype=np.float64)

    def _regularisation(self, alpha, penalty, beta, l1_ratio, groups):
        alpha = _checks.scalar(alpha, "alpha", minimum=0.0, allow_inf=False)
        beta = _checks.scalar(beta, "beta", minimum=0.0, allow_inf=False)
        if penalty not in _PENALTIES:
            raise ValueError(
                f"penalty must be None or one of 'l1', 'elastic_net', 'group_l1', "
                f"'l0', got {penalty!r}"
            )
        self.penalty = _PENALTIES[penalty]
        self.ridge, self.l1 = alpha, beta
        if penalty is None:
            self.l1 = 0.0
        elif penalty == "elastic_net":
            l1_ratio = _checks.scalar(
                l1_ratio, "l1_ratio", minimum=0.0, allow_inf=False
            )
            if l1_ratio > 1.0:
                raise ValueError(f"l1_ratio must be in [0, 1], got {l1_ratio}")
            self.ridge, self.l1 = alpha + beta * (1.0 - l1_ratio), beta * l1_ratio
        self.group_ptr, self.group_weights = _EMPTY_INDEX, _EMPTY
        if penalty == "group_l1":
            self.group_ptr = _group_pointer(groups, self.n_features)
            sizes = np.diff(self.group_ptr) * self.n_outputs
            self.group_weights = np.sqrt(sizes.astype(np.float64))
        elif groups is not None:
            raise ValueError("groups is only used with penalty='group_l1'")

    def start(self):
        shape = (self.n_features, self.n_outputs)
        return np.zeros(shape), np.zeros(self.n_outputs)

    def gradient(self, coef, intercept, samples=None):
        """(mean loss, mean gradient, its intercept part, derivatives) over
        ``samples`` (all by default)."""
        samples = self.all_samples if samples is None else samples
        grad = np.zeros_like(coef)
        grad_intercept = np.zeros_like(intercept)
        derivatives = np.empty((samples.shape[0], self.n_outputs))
        total = self.kernels.linear_pass(
            self.loss,
            self.data,
            self.indices,
            self.indptr,
            self.y,
            coef,
            intercept,
            samples,
            derivatives,
            grad,
            grad_intercept,
        )
        m = max(samples.shape[0], 1)
        grad /= m
        grad_intercept /= m
        return total / m, grad, grad_intercept, derivatives

    def penalty_value(self, coef):
        value = 0.5 * self.ridge * float(np.sum(coef * coef))
        if self.penalty == PENALTY_L1:
            value += self.l1 * float(np.abs(coef).sum())
        elif self.penalty == PENALTY_GROUP_L1:
            squares = (
                np.add.reduceat(
                    np.sum(coef * coef, axis=1), self.group_ptr[:-1].astype(np.intp)
                )
                if self.n_features
                else _EMPTY
            )
            squares[np.diff(self.group_ptr) == 0] = 0.0
            value += self.l1 * float(self.group_weights @ np.sqrt(squares))
        elif self.penalty == PENALTY_L0:
            value += self.l1 * float(np.count_nonzero(coef))
        return value

    def prox(self, coef, step):
        coef = coef.copy()
        self.kernels.prox_step(
            self.penalty,
            coef,
            step,
            self.ridge,
            self.l1,
            self.group_ptr,
            self.group_weights,
        )
        return coef

    def certificate(self, coef, intercept, grad, grad_intercept, step):
        """||G_step||: the gradient mapping norm (0 exactly at a solution)."""
        mapped = (coef - self.prox(coef - step * grad, step)) / step
        total = float(np.sum(mapped * mapped))
        if self.fit_intercept:
            total += float(np.sum(grad_intercept * grad_intercept))
        return math.sqrt(total)


def _group_pointer(groups, n_features):
    if groups is None:
        raise ValueError(
            "penalty='group_l1' needs groups: a group size or a list of sizes"
        )
    return prox._group_pointer(groups, n_features, "n_features")


# The driver shared by every solver ------------------------------------------


class _Run:
    """State, bookkeeping and stopping rules of one solver call."""

    def __init__(
        self,
        problem,
        name,
        step,
        max_epochs,
        tol,
        seed,
        sample_order,
        callback,
        verbose,
        safe_factor,
    ):
        self.problem = problem
        self.name = name
        self.auto_step = (
            safe_factor / problem.lipschitz if problem.lipschitz > 0 else 1.0
        )
        if isinstance(step, str):
            if step != "auto":
                raise ValueError(
                    f"step must be 'auto' or a positive number, got {step!r}"
                )
            self.step = self.auto_step
        else:
            self.step = _checks.scalar(step, "step", minimum=0.0, allow_inf=False)
            if self.step == 0.0:
                raise ValueError("step must be positive, got 0")
        self.max_epochs = _checks.integer(max_epochs, "max_epochs", minimum=0)
        self.tol = _checks.scalar(tol, "tol", minimum=0.0, allow_inf=False)
        self.rng = np.random.default_rng(seed)
        self.order = _sample_order(sample_order, problem.n_samples)
        self.callback = callback
        self.verbose = bool(verbose)
        self.coef, self.intercept = problem.start()
        self.work = np.zeros((problem.n_features, problem.n_outputs))
        self.last = np.zeros(problem.n_features, dtype=np.int64)
        self.n_ifo = 0
        self.seconds = 0.0
        self.epoch = 0
        self.history = []
        self.converged = False
        self.objective = math.inf
        self.norm = math.inf
        self.full = None  # (loss, grad, grad_intercept) at the current point

    def permutation(self, epoch):
        if self.order is not None:
            return self.order[epoch % self.order.shape[0]]
        return self.rng.permutation(self.problem.n_samples).astype(np.int64)

    def monitor(self):
        """Evaluate F and ||G|| at the current point; False to stop."""
        p = self.problem
        started = time.perf_counter()
        loss, grad, grad_intercept, _ = p.gradient(self.coef, self.intercept)
        self.full = (grad, grad_intercept, time.perf_counter() - started)
        with np.errstate(over="ignore", invalid="ignore"):  # diverged: raised below
            self.objective = loss + p.penalty_value(self.coef)
            self.norm = p.certificate(
                self.coef, self.intercept, grad, grad_intercept, self.step
            )
        if not (
            math.isfinite(self.objective)
            and np.isfinite(self.coef).all()
            and np.isfinite(self.intercept).all()
        ) or (self.history and self.objective > 1e6 * (abs(self.history[0][2]) + 1.0)):
            raise DivergenceError(
                f"{self.name} diverged at epoch {self.epoch} with "
                f"step={self.step:.6g}: "
                f"objective {self.objective:.6g}; use a smaller step (step='auto' "
                f"chooses {self.auto_step:.6g} here)"
            )
        self.history.append((self.n_ifo, self.seconds, self.objective, self.norm))
        if self.verbose:
            print(
                f"{self.name}: epoch {self.epoch:4d}  IFOs {self.n_ifo:10d}  "
                f"objective {self.objective:.10g}  ||G|| {self.norm:.3e}",
                flush=True,
            )
        self.converged = self.norm <= self.tol
        if self.callback is not None and self.callback(self.history[-1]) is True:
            return False
        return not self.converged and self.epoch < self.max_epochs

    def timed(self, func, *args):
        started = time.perf_counter()
        result = func(*args)
        self.seconds += time.perf_counter() - started
        return result

    def full_gradient(self):
        """The full gradient at the current point, as an algorithm step: from
        the last monitoring pass when it was at this point."""
        grad, grad_intercept, seconds = self.full
        self.n_ifo += self.problem.n_samples
        self.seconds += seconds
        return grad.copy(), grad_intercept.copy()

    def epoch_call(
        self,
        method,
        samples,
        batch_size,
        step,
        coefficients,
        anchor=None,
        anchor_intercept=None,
        direction=None,
        direction_intercept=None,
        table=None,
        previous=None,
        previous_intercept=None,
    ):
        p = self.problem
        k = p.n_outputs
        cg, cs, cm = coefficients
        self.timed(
            p.kernels.linear_epoch,
            method,
            p.loss,
            p.penalty,
            p.data,
            p.indices,
            p.indptr,
            p.y,
            self.coef,
            self.intercept,
            p.fit_intercept,
            samples,
            batch_size,
            step,
            step * max(cg, cm),
            p.ridge,
            p.l1,
            p.group_ptr,
            p.group_weights,
            cg,
            cs,
            cm,
            _or_empty(anchor, (0, k)),
            _or_empty(anchor_intercept, (0,)),
            _or_empty(direction, (0, k)),
            _or_empty(direction_intercept, (0,)),
            _or_empty(table, (0, k)),
            _or_empty(previous, (0, k)),
            _or_empty(previous_intercept, (0,)),
            self.work,
            self.last,
        )

    def result(self):
        p = self.problem
        coef, intercept = self.coef, self.intercept
        if p.n_outputs == 1:
            coef, intercept = coef[:, 0].copy(), float(intercept[0])
        else:
            coef, intercept = coef.T.copy(), intercept.copy()
        return SolverResult(
            coef=coef,
            intercept=intercept,
            n_epochs=self.epoch,
            n_ifo=self.n_ifo,
            converged=self.converged,
            objective=self.objective,
            gradient_mapping_norm=self.norm,
            step=self.step,
            history=self.history,
            classes=p.classes,
        )


def _or_empty(array, shape):
    return np.zeros(shape) if array is None else array


def _sample_order(order, n):
    """None, or an int64 (epochs, n) array of sample indices."""
    if order is None:
        return None
    order = np.asarray(order)
    if order.dtype.kind not in "iu":
        raise TypeError(f"sample_order must hold integers, got dtype {order.dtype}")
    if order.ndim == 1:
        order = order[np.newaxis]
    if order.ndim != 2 or order.shape[1] == 0:
        raise ValueError(
            f"sample_order must be a non-empty 1-D array (used every epoch) or a "
            f"2-D array (one row per epoch), got shape {order.shape}"
        )
    if order.min() < 0 or order.max() >= n:
        raise ValueError(f"sample_order entries must lie in [0, {n})")
    return np.ascontiguousarray(order, dtype=np.int64)


def _ifos_per_sample(coefficients):
    """2 for a snapshot step (current point and snapshot), 1 when the
    snapshot term has weight 0 (lam = 0: plain SGD) and is not computed."""
    return 1 if coefficients[1] == 0.0 else 2


def _batch_size(batch_size, n):
    return _checks.integer(batch_size, "batch_size", minimum=1, maximum=max(n, 1))


_COMMON = """
    Parameters common to every solver: ``X`` (n_samples, n_features), dense
    or sparse; ``y`` targets or labels; ``loss`` "squared", "logistic" or
    "multinomial"; ``fit_intercept``; ``alpha`` the ridge strength;
    ``penalty`` None, "l1", "elastic_net", "group_l1" or "l0" with strength
    ``beta`` (``l1_ratio`` for the elastic net, ``groups`` a group size or a
    list of sizes for the group lasso); ``step`` "auto" (a safe multiple of
    1/L, L the largest per-sample Lipschitz constant) or a number;
    ``batch_size``; ``max_epochs``; ``tol`` on the gradient-mapping norm;
    ``seed``; ``sample_order`` None (a fresh permutation each epoch) or an
    array of sample indices, 1-D (every epoch) or 2-D (row e for epoch e);
    ``callback(entry)`` called with each history entry (return True to
    stop); ``verbose`` prints one line per epoch; ``backend``.
"""


def _problem(
    X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
):
    return _Problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )


def sgd(
    X,
    y,
    loss="logistic",
    fit_intercept=False,
    alpha=0.0,
    penalty=None,
    beta=0.0,
    step="auto",
    batch_size=1,
    max_epochs=100,
    tol=1e-4,
    seed=None,
    sample_order=None,
    callback=None,
    verbose=False,
    l1_ratio=0.5,
    groups=None,
    backend=None,
):
    (
        """Proximal stochastic gradient descent: v = grad f_I(x), constant step
    (default 1/L).  Not variance-reduced: with small batches it reaches a
    neighbourhood of the solution whose size scales with the step;
    ``batch_size=n_samples`` is proximal gradient descent.  One IFO per
    sample per epoch."""
        + _COMMON
    )
    p = _problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )
    run = _Run(
        p, "sgd", step, max_epochs, tol, seed, sample_order, callback, verbose, 1.0
    )
    b = _batch_size(batch_size, p.n_samples)
    while run.monitor():
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_SNAPSHOT,
            samples,
            b,
            run.step,
            (1.0, 0.0, 0.0),
            direction=np.zeros_like(run.coef),
            direction_intercept=np.zeros_like(run.intercept),
        )
        run.n_ifo += samples.shape[0]
        run.epoch += 1
    return run.result()


def svrg(
    X,
    y,
    loss="logistic",
    fit_intercept=False,
    alpha=0.0,
    penalty=None,
    beta=0.0,
    step="auto",
    lam=None,
    batch_size=1,
    max_epochs=100,
    tol=1e-4,
    seed=None,
    sample_order=None,
    callback=None,
    verbose=False,
    l1_ratio=0.5,
    groups=None,
    backend=None,
):
    (
        """Proximal SVRG: each epoch takes a snapshot and its full gradient mu
    (n IFOs), then n/b steps along v = g - s + mu (2 IFOs per sample), or
    along the lambda-estimator's v when ``lam`` is a number in [0, 1]
    (``lambda_coefficients``).  Default step 1/(3L)."""
        + _COMMON
    )
    p = _problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )
    run = _Run(
        p, "svrg", step, max_epochs, tol, seed, sample_order, callback, verbose, 1 / 3
    )
    b = _batch_size(batch_size, p.n_samples)
    coefficients = lambda_coefficients(lam)
    while run.monitor():
        mu, mu_intercept = run.full_gradient()
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_SNAPSHOT,
            samples,
            b,
            run.step,
            coefficients,
            anchor=run.coef.copy(),
            anchor_intercept=run.intercept.copy(),
            direction=mu,
            direction_intercept=mu_intercept,
        )
        run.n_ifo += _ifos_per_sample(coefficients) * samples.shape[0]
        run.epoch += 1
    return run.result()


def saga(
    X,
    y,
    loss="logistic",
    fit_intercept=False,
    alpha=0.0,
    penalty=None,
    beta=0.0,
    step="auto",
    lam=None,
    batch_size=1,
    max_epochs=100,
    tol=1e-4,
    seed=None,
    sample_order=None,
    callback=None,
    verbose=False,
    l1_ratio=0.5,
    groups=None,
    backend=None,
):
    (
        """Proximal SAGA: a table of each sample's last loss derivative (one
    scalar per sample and output) replaces the snapshot; v = g_j - a_j +
    mean(a), or the lambda-estimator's mix with ``lam``.  The table starts
    from a full pass at the starting point (n IFOs), then each sample costs
    one IFO.  Default step 1/(3L)."""
        + _COMMON
    )
    p = _problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )
    run = _Run(
        p, "saga", step, max_epochs, tol, seed, sample_order, callback, verbose, 1 / 3
    )
    b = _batch_size(batch_size, p.n_samples)
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
            b,
            run.step,
            coefficients,
            direction=mean,
            direction_intercept=mean_intercept,
            table=table,
        )
        run.n_ifo += samples.shape[0]
        run.epoch += 1
    return run.result()


def sarah(
    X,
    y,
    loss="logistic",
    fit_intercept=False,
    alpha=0.0,
    penalty=None,
    beta=0.0,
    step="auto",
    batch_size=1,
    max_epochs=100,
    tol=1e-4,
    seed=None,
    sample_order=None,
    callback=None,
    verbose=False,
    l1_ratio=0.5,
    groups=None,
    backend=None,
):
    (
        """Proximal SARAH: each epoch restarts from the full gradient v_0 (n
    IFOs), steps along it, then along the recursive v_t = g_I(x_t) -
    g_I(x_{t-1}) + v_{t-1} (2 IFOs per sample).  Default step 1/(2L).
    """
        + _COMMON
    )
    p = _problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )
    run = _Run(
        p, "sarah", step, max_epochs, tol, seed, sample_order, callback, verbose, 0.5
    )
    b = _batch_size(batch_size, p.n_samples)
    previous = np.zeros_like(run.coef)
    previous_intercept = np.zeros_like(run.intercept)
    while run.monitor():
        v, v_intercept = run.full_gradient()
        samples = run.permutation(run.epoch)
        run.epoch_call(
            METHOD_RECURSIVE,
            samples,
            b,
            run.step,
            (1.0, -1.0, 1.0),
            direction=v,
            direction_intercept=v_intercept,
            previous=previous,
            previous_intercept=previous_intercept,
        )
        run.n_ifo += 2 * samples.shape[0]
        run.epoch += 1
    return run.result()


def _stage(run, batch, lam, step, inner_batch, inner_steps):
    """One SCSG / VCSG stage: mu on ``batch`` (|batch| IFOs), then
    ``inner_steps`` snapshot steps on uniformly drawn mini-batches."""
    p = run.problem
    _, mu, mu_intercept, derivatives = run.timed(
        p.gradient, run.coef, run.intercept, batch
    )
    run.n_ifo += batch.shape[0]
    samples = run.rng.integers(0, p.n_samples, size=inner_steps * inner_batch)
    run.anchor, run.anchor_intercept = run.coef.copy(), run.intercept.copy()
    run.epoch_call(
        METHOD_SNAPSHOT,
        samples.astype(np.int64),
        inner_batch,
        step,
        lambda_coefficients(lam),
        anchor=run.anchor,
        anchor_intercept=run.anchor_intercept,
        direction=mu,
        direction_intercept=mu_intercept,
    )
    run.n_ifo += _ifos_per_sample(lambda_coefficients(lam)) * samples.shape[0]
    return mu, mu_intercept, derivatives


def scsg(
    X,
    y,
    loss="logistic",
    fit_intercept=False,
    alpha=0.0,
    penalty=None,
    beta=0.0,
    step="auto",
    lam=None,
    batch_size=1,
    stage_batch=None,
    batch_growth=1.5,
    max_epochs=100,
    tol=1e-4,
    seed=None,
    callback=None,
    verbose=False,
    l1_ratio=0.5,
    groups=None,
    backend=None,
):
    (
        """SCSG (Lei et al. 2017): stage j draws B_j = min(n, stage_batch *
    batch_growth^j) samples without replacement (stage_batch defaults to
    n/8) for mu, then runs N ~ Geometric(b / (B_j + b)) snapshot steps on
    mini-batches of ``batch_size`` drawn uniformly.  With a fixed B < n
    (``batch_growth=1``) the batch mean's error leaves a noise floor, so the
    batch grows (as in the paper's convergent version) until it is the
    whole data set.  One "epoch" of the history is one stage;
    ``max_epochs`` bounds the stages.  Default step 1/(3L).  No
    ``sample_order``: the stages draw their samples from ``seed``."""
        + _COMMON
    )
    p = _problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )
    run = _Run(p, "scsg", step, max_epochs, tol, seed, None, callback, verbose, 1 / 3)
    b = _batch_size(batch_size, p.n_samples)
    n = p.n_samples
    first = (
        max(b, -(-n // 8))
        if stage_batch is None
        else _checks.integer(stage_batch, "stage_batch", minimum=1, maximum=n)
    )
    growth = _checks.scalar(batch_growth, "batch_growth", minimum=1.0, allow_inf=False)
    while run.monitor():
        grown = run.epoch * math.log(growth) >= math.log(n / first)
        big = n if grown else min(n, math.ceil(first * growth**run.epoch))
        batch = np.sort(run.rng.choice(n, size=big, replace=False)).astype(np.int64)
        inner = int(run.rng.geometric(b / (big + b)))
        _stage(run, batch, lam, run.step, b, inner)
        run.epoch += 1
    return run.result()


def vcsg(
    X,
    y,
    loss="logistic",
    fit_intercept=False,
    alpha=0.0,
    penalty=None,
    beta=0.0,
    step="auto",
    max_epochs=100,
    tol=1e-4,
    seed=None,
    callback=None,
    verbose=False,
    l1_ratio=0.5,
    groups=None,
    warmup_stages=1,
    eps=None,
    theta=0.5,
    min_batch_exponent=0.88,
    inner_batch_exponent=0.625,
    lam_unbiased=0.4,
    lam_biased=0.75,
    step_exponent_unbiased=5 / 32,
    step_exponent_biased=3 / 32,
    backend=None,
):
    (
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
    history is one stage.

    For lam < 1/2 the estimator's variance does not vanish at the solution
    (v = (1 - 2 lam) g_i + ... there), so with the default lam_unbiased=0.4
    the iterates settle in a small neighbourhood of it; lam_unbiased=0.5
    (half the SVRG direction) converges to it."""
        + _COMMON
    )
    p = _problem(
        X, y, loss, fit_intercept, alpha, penalty, beta, l1_ratio, groups, backend
    )
    run = _Run(p, "vcsg", step, max_epochs, tol, seed, None, callback, verbose, 1.0)
    warmup_stages = _checks.integer(warmup_stages, "warmup_stages", minimum=0)
    theta = _checks.scalar(theta, "theta", minimum=0.0, allow_inf=False)
    if eps is not None:
        eps = _checks.scalar(eps, "eps", minimum=0.0, allow_inf=False)
    for name, value in (
        ("min_batch_exponent", min_batch_exponent),
        ("inner_batch_exponent", inner_batch_exponent),
    ):
        if not 0.0 <= _checks.scalar(value, name, allow_inf=False) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    for value in (lam_unbiased, lam_biased):
        lambda_coefficients(value)
    n = p.n_samples
    smallest = min(n, max(1, math.ceil(n**min_batch_exponent)))
    norms = p.row_sq_norms + (1.0 if p.fit_intercept else 0.0)
    sigma2 = target = None
    while run.monitor():
        if run.epoch < warmup_stages or sigma2 is None:
            big, lam, step = n, 0.0, run.step
        else:
            tolerance = theta * target if eps is None else eps
            wanted = (
                n if tolerance <= 0 else n * sigma2 / (sigma2 + (n - 1) * tolerance)
            )
            big = int(min(n, max(smallest, math.ceil(wanted))))
            if big <= smallest and smallest < n:
                lam, step = lam_biased, run.step / n**step_exponent_biased
            else:
                lam, step = lam_unbiased, run.step / n**step_exponent_unbiased
        batch = (
            p.all_samples
            if big == n
            else np.sort(run.rng.choice(n, size=big, replace=False)).astype(np.int64)
        )
        b = max(1, round(big**inner_batch_exponent))
        mu, mu_intercept, derivatives = _stage(
            run, batch, lam, step, b, max(1, big // b)
        )
        mu_norm2 = float(np.sum(mu * mu) + np.sum(mu_intercept * mu_intercept))
        spread = float(norms[batch] @ np.sum(derivatives * derivatives, axis=1)) / big
        sigma2 = max(spread - mu_norm2, 0.0)
        target = (
            p.certificate(run.anchor, run.anchor_intercept, mu, mu_intercept, step) ** 2
        )
        run.epoch += 1
    return run.result()
