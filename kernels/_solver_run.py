"""The machinery every solver of ``kernels.solvers`` runs on: the keywords
they share, written once (``KEYWORDS``) and turned into each solver's
signature and documentation by ``solver``; the validated problem
(``LinearProblem``); the driver of one call (``SolverRun``: iterate,
bookkeeping, stopping rules, the epoch kernel call); what a solver returns
(``SolverResult``) and raises (``DivergenceError``).

``kernels.solvers`` holds the algorithms, each a loop over epochs (or
stages) of ``SolverRun.epoch_call``.
"""

import dataclasses
import inspect
import math
import textwrap
import time

import numpy as np

from kernels import _checks
from kernels._backend import kernels_for
from kernels._codes import (
    LOSS_LOGISTIC,
    LOSS_MULTINOMIAL,
    LOSS_SQUARED,
    PENALTY_GROUP_L1,
    PENALTY_L0,
    PENALTY_L1,
    PENALTY_NONE,
)
from kernels._penalties import (
    ELASTIC_NET,
    GROUP_L1,
    L0,
    L1,
    group_l1_value,
    l0_value,
    l1_value,
    require,
    ridge_value,
)

_LOSSES = {
    "squared": LOSS_SQUARED,
    "logistic": LOSS_LOGISTIC,
    "multinomial": LOSS_MULTINOMIAL,
}
# Lipschitz constant of the loss's derivative per unit of ||x_i||^2.
_CURVATURE = {LOSS_SQUARED: 1.0, LOSS_LOGISTIC: 0.25, LOSS_MULTINOMIAL: 0.5}
# The penalties of a linear model and the epoch kernel's code for each (the
# elastic net is the l1 code with its l2 part in the ridge).
_PENALTIES = {
    None: PENALTY_NONE,
    L1: PENALTY_L1,
    ELASTIC_NET: PENALTY_L1,
    GROUP_L1: PENALTY_GROUP_L1,
    L0: PENALTY_L0,
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


class LinearProblem:
    """The data and the objective of a linear model, validated once, in the
    kernels' layout (``kernels._reference.solvers``)."""

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
            self.row_sq_norms = _checks.segment_sums(
                np.square(data, dtype=np.float64), indptr
            )
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
            self.classes, codes = _checks.class_labels(y, "y")
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
        require(penalty, tuple(_PENALTIES))
        self.penalty = _PENALTIES[penalty]
        self.ridge, self.l1 = alpha, beta
        if penalty is None:
            self.l1 = 0.0
        elif penalty == ELASTIC_NET:
            l1_ratio = _checks.scalar(
                l1_ratio, "l1_ratio", minimum=0.0, allow_inf=False
            )
            if l1_ratio > 1.0:
                raise ValueError(f"l1_ratio must be in [0, 1], got {l1_ratio}")
            self.ridge, self.l1 = alpha + beta * (1.0 - l1_ratio), beta * l1_ratio
        self.group_ptr, self.group_weights = _EMPTY_INDEX, _EMPTY
        if penalty == GROUP_L1:
            self.group_ptr = _group_pointer(groups, self.n_features)
            sizes = np.diff(self.group_ptr) * self.n_outputs
            self.group_weights = np.sqrt(sizes.astype(np.float64))
        elif groups is not None:
            raise ValueError("groups is only used with penalty='group_l1'")

    def start(self):
        """Zero coefficients (n_features, K) and intercept (K,)."""
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
        """h(coef): the ridge term and the penalty at ``coef``."""
        value = self.ridge * ridge_value((coef,))
        if self.penalty == PENALTY_L1:
            value += self.l1 * l1_value((coef,))
        elif self.penalty == PENALTY_GROUP_L1:
            squares = _checks.segment_sums(np.sum(coef * coef, axis=1), self.group_ptr)
            value += self.l1 * group_l1_value(np.sqrt(squares), self.group_weights)
        elif self.penalty == PENALTY_L0:
            value += self.l1 * l0_value((coef,))
        return value

    def prox(self, coef, step):
        """prox_{step h}(coef), a new array."""
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
    return _checks.group_pointer(groups, n_features, "n_features")


# The driver shared by every solver ------------------------------------------


class SolverRun:
    """State, bookkeeping and stopping rules of one solver call on a
    ``LinearProblem``: the iterate, the IFO count and seconds, the history,
    the sample orders; ``safe_factor / L`` is the step "auto"."""

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
        self.order = sample_order_array(sample_order, problem.n_samples)
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
        """The samples of epoch ``epoch``: the given order's row for it, or a
        fresh permutation from the run's generator."""
        if self.order is not None:
            return self.order[epoch % self.order.shape[0]]
        return self.rng.permutation(self.problem.n_samples).astype(np.int64)

    def monitor(self):
        """Evaluate F and ||G|| at the current point, record them, print
        them with ``verbose`` and call the callback; False to stop (converged,
        out of epochs, or a truthy value from the callback)."""
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
        if self.callback is not None and self.callback(self.history[-1]):
            return False
        return not self.converged and self.epoch < self.max_epochs

    def timed(self, func, *args):
        """func(*args), its time added to the run's seconds."""
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
        """One call of the backend's ``linear_epoch`` kernel on the run's
        iterate (timed): ``method`` with the direction coefficients
        ``coefficients`` = (cg, cs, cm), the prox taking the step
        max(cg, cm) * step; the arrays the method does not use are empty."""
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
        """The ``SolverResult`` of the run so far."""
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


def sample_order_array(order, n):
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


def ifos_per_sample(coefficients):
    """2 for a snapshot step (current point and snapshot), 1 when the
    snapshot term has weight 0 (lam = 0: plain SGD) and is not computed."""
    return 1 if coefficients[1] == 0.0 else 2


# The keywords, written once --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Keyword:
    """One keyword argument of the solvers: its name, default and what it
    means (the line of the solvers' documentation)."""

    name: str
    default: object
    doc: str


_DATA = (
    (
        "X",
        "(n_samples, n_features), dense (C-contiguous float32 or float64 is "
        "used without a copy; anything else is converted once) or sparse "
        "(``kernels.CSRMatrix`` or any scipy sparse matrix, converted to CSR "
        "once)",
    ),
    (
        "y",
        "(n_samples,): the targets of the squared loss, or the labels (of any "
        "type) of the logistic and multinomial losses",
    ),
)

# The keywords of every solver, in the order of the signature; ``backend``
# closes it, after a solver's own keywords.
KEYWORDS = (
    Keyword("loss", "logistic", '"squared", "logistic" or "multinomial"'),
    Keyword("fit_intercept", False, "fit an intercept b (never penalised)"),
    Keyword("alpha", 0.0, "the ridge strength: alpha/2 * ||W||^2"),
    Keyword(
        "penalty",
        None,
        'None, "l1", "elastic_net", "group_l1" or "l0", applied by its prox '
        "after every step",
    ),
    Keyword("beta", 0.0, "the strength of the penalty"),
    Keyword(
        "step",
        "auto",
        '"auto" (a safe multiple of 1/L, L the largest per-sample Lipschitz '
        "constant: the multiple is the default step above) or a positive number",
    ),
    Keyword("batch_size", 1, "samples per step (the mini-batch)"),
    Keyword("max_epochs", 100, "the most epochs (or stages) to run"),
    Keyword("tol", 1e-4, "stop when the gradient-mapping norm is at most tol"),
    Keyword(
        "seed", None, "seed of the random generator (permutations, batches, stages)"
    ),
    Keyword(
        "sample_order",
        None,
        "None (a fresh permutation each epoch) or an array of sample indices, "
        "1-D (used every epoch) or 2-D (row e for epoch e, cycling): "
        "deterministic runs",
    ),
    Keyword(
        "callback",
        None,
        "callback(entry), called with each history entry (ifos, seconds, "
        "objective, gradient_mapping_norm); a truthy return value stops the "
        "solver",
    ),
    Keyword("verbose", False, "print one line per epoch"),
    Keyword(
        "l1_ratio",
        0.5,
        'for penalty="elastic_net": l1_ratio * ||W||_1 + (1 - l1_ratio)/2 * ||W||^2',
    ),
    Keyword(
        "groups",
        None,
        'for penalty="group_l1": a group size or a list of group sizes of '
        "consecutive features",
    ),
    Keyword(
        "backend",
        None,
        '"cython", "numba" or "numpy"; None: the current default',
    ),
)
_BACKEND = KEYWORDS[-1]


def solver(safe_factor, own=(), without=()):
    """Make a solver of the algorithm it decorates.

    The algorithm is ``algorithm(run, **options)``: it runs a ready
    ``SolverRun`` to its end; ``options`` are the solver's ``own`` keywords
    (``Keyword``s, after the common ones in the signature) and
    ``batch_size``, checked, unless it is ``without``.  The solver is
    ``name(X, y, *, <KEYWORDS but those without>, <own>, backend)``: it
    validates the problem and the run's settings, calls the algorithm and
    returns ``run.result()``.  Its signature (``inspect.signature``,
    ``help``) and docstring (the algorithm's, then a parameter list made of
    ``KEYWORDS`` and ``own``) are built here; ``safe_factor`` / L is its
    step "auto"."""
    keywords = [k for k in KEYWORDS[:-1] if k.name not in without]
    keywords += [*own, _BACKEND]
    parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name, _ in _DATA
    ] + [
        inspect.Parameter(k.name, inspect.Parameter.KEYWORD_ONLY, default=k.default)
        for k in keywords
    ]
    signature = inspect.Signature(parameters)
    passed = [k.name for k in own]
    if "batch_size" not in without:
        passed.append("batch_size")

    def build(algorithm):
        name = algorithm.__name__

        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            problem = LinearProblem(
                a["X"],
                a["y"],
                a["loss"],
                a["fit_intercept"],
                a["alpha"],
                a["penalty"],
                a["beta"],
                a["l1_ratio"],
                a["groups"],
                a["backend"],
            )
            run = SolverRun(
                problem,
                name,
                a["step"],
                a["max_epochs"],
                a["tol"],
                a["seed"],
                a.get("sample_order"),
                a["callback"],
                a["verbose"],
                safe_factor,
            )
            options = {key: a[key] for key in passed}
            if "batch_size" in options:
                options["batch_size"] = _checks.integer(
                    options["batch_size"],
                    "batch_size",
                    minimum=1,
                    maximum=max(problem.n_samples, 1),
                )
            algorithm(run, **options)
            return run.result()

        call.__name__ = name
        call.__qualname__ = algorithm.__qualname__
        call.__module__ = algorithm.__module__
        call.__signature__ = signature
        call.__doc__ = _document(algorithm, keywords)
        return call

    return build


def _document(algorithm, keywords):
    """The solver's docstring: the algorithm's, then its parameters."""
    lines = [inspect.cleandoc(algorithm.__doc__), "", "Parameters", "----------"]
    entries = [
        *_DATA,
        *((f"{k.name} : default {k.default!r}", k.doc) for k in keywords),
    ]
    for head, doc in entries:
        lines.append(head)
        lines += textwrap.wrap(
            doc, width=76, initial_indent="    ", subsequent_indent="    "
        )
    lines += ["", *textwrap.wrap(_RETURNS, width=76)]
    return "\n".join(lines)


_RETURNS = (
    "Returns a ``SolverResult``.  Raises ``DivergenceError`` when the iterates "
    "become NaN or infinite or the objective blows up, ValueError or TypeError "
    "for a bad argument."
)
