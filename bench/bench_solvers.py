"""Variance-reduced solvers (kernels.solvers) against scikit-learn's and
copt's, on three problems (the issue's):

* breast_cancer: dense, standardised, binary logistic + l1;
* digits: multinomial logistic, l2 only and l1;
* sparse: synthetic 50,000 x 100,000 CSR at 0.1% density, logistic + l1.

The objective is the mean loss + alpha/2 ||w||^2 + beta ||w||_1, with
either alpha or beta zero (scikit-learn's C = 1 / (n * beta) for l1, 1 /
(n * alpha) for l2; copt's LogLoss(alpha) and an L1Norm(beta) prox), no
intercept, so all solve the same problem.  F* is the best objective found
by long runs of
ours and scikit-learn's (setup_cache), and "to tolerance" means relative
suboptimality (F - F*) / F* <= 1e-6.

Figures: time of a solve to tolerance, seconds per epoch, IFOs to
tolerance (track_, the convergence claims of ALGORITHMS.md), peak memory.
Ours run through the public API; their epoch time excludes the monitoring
passes (SolverResult.history), while a time_ of a whole solve includes
them (a conservative figure for ours).  BLAS is pinned to one thread.
"""

import functools
import warnings

import numpy as np

import kernels.solvers
from kernels.benchmarks.timing import marginal_seconds, single_thread_blas

from .common import AVAILABLE, SMOKE

# The smoke run (scripts/asv-smoke) checks that every row runs: a loose
# tolerance, short runs and a small sparse problem then keep it to seconds.
TOLERANCE = 1e-2 if SMOKE else 1e-6
MAX_EPOCHS = 50 if SMOKE else 5_000
PROBLEMS = ("breast_cancer", "digits_l2", "digits_l1", "sparse_l1")
OURS = ("svrg", "saga", "sarah", "scsg", "vcsg", "sgd")


def load_problem(name):
    """(X, y, alpha, beta, loss) of a benchmark problem."""
    rng = np.random.default_rng(0)
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        X, y = load_breast_cancer(return_X_y=True)
        X = (X - X.mean(axis=0)) / X.std(axis=0)
        return np.ascontiguousarray(X), y, 0.0, 1e-2, "logistic"
    if name.startswith("digits"):
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = np.ascontiguousarray(X / 16.0)
        if name == "digits_l1":
            return X, y, 0.0, 1e-3, "multinomial"
        return X, y, 1e-3, 0.0, "multinomial"
    import scipy.sparse as sp

    n, d = (2_000, 5_000) if SMOKE else (50_000, 100_000)
    X = sp.random_array(
        (n, d), density=1e-3, format="csr", rng=rng, data_sampler=rng.standard_normal
    )
    w = rng.standard_normal(d) * (rng.random(d) < 0.01)
    y = (X @ w + 0.1 * rng.standard_normal(n) > 0).astype(np.int64)
    return X, y, 0.0, 1e-5, "logistic"


def epoch_seconds(result):
    """Our solver's seconds per epoch: the median of the epoch-to-epoch
    differences of ``result.history``, the solver's clock, which leaves out
    its monitoring passes."""
    return float(np.median(np.diff([entry[1] for entry in result.history])))


def _penalty(beta):
    return "l1" if beta > 0 else None


def solve_ours(name, problem, backend, **options):
    X, y, alpha, beta, loss = problem
    kwargs = dict(
        loss=loss, alpha=alpha, penalty=_penalty(beta), beta=beta, backend=backend
    )
    kwargs.update(options)
    return getattr(kernels.solvers, name)(X, y, **kwargs)


def solve_sklearn(problem, max_iter, tol=0.0):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X, y, alpha, beta, loss = problem
    n = X.shape[0]
    strength = beta if beta > 0 else alpha
    # elasticnet with l1_ratio 1 (l1) or 0 (l2): the spelling that means the
    # same before and after scikit-learn 1.8 deprecated ``penalty``
    model = LogisticRegression(
        penalty="elasticnet",
        l1_ratio=1.0 if beta > 0 else 0.0,
        C=1.0 / (n * strength),
        solver="saga",
        fit_intercept=False,
        max_iter=max_iter,
        tol=tol,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(X, y)
    return model


def objective(problem, coef):
    X, y, alpha, beta, loss = problem
    coef = np.atleast_2d(coef)
    margins = np.asarray(X @ coef.T)
    if loss == "logistic":
        s = np.where(y == np.unique(y)[1], 1.0, -1.0)
        value = np.mean(np.logaddexp(0.0, -s * margins[:, 0]))
    else:
        top = margins.max(axis=1, keepdims=True)
        codes = np.searchsorted(np.unique(y), y)
        log_total = np.log(np.exp(margins - top).sum(axis=1)) + top[:, 0]
        value = np.mean(log_total - margins[np.arange(len(y)), codes])
    return value + alpha / 2 * np.sum(coef * coef) + beta * np.abs(coef).sum()


def solve_copt(problem, max_iter):
    import copt
    from copt import loss as copt_loss
    from copt import penalty as copt_penalty

    X, y, alpha, beta, loss = problem
    f = copt_loss.LogLoss(X, (y == np.unique(y)[1]).astype(np.float64), alpha)
    step = 1.0 / (3.0 * f.max_lipschitz)
    prox = copt_penalty.L1Norm(beta).prox_factory(X.shape[1]) if beta > 0 else None
    return copt.minimize_saga(
        f.partial_deriv,
        X,
        f.b,
        np.zeros(X.shape[1]),
        step,
        prox=prox,
        alpha=alpha,
        max_iter=max_iter,
        tol=0.0,
    )


def _require(implementation, problem_name):
    if (
        implementation in ("cython", "numba", "numpy")
        and implementation not in AVAILABLE
    ):
        raise NotImplementedError(f"backend {implementation} is not available")
    if implementation == "numpy" and problem_name == "sparse_l1":
        raise NotImplementedError("the NumPy reference takes minutes per epoch here")
    if implementation == "copt":
        try:
            import copt  # noqa: F401
        except ImportError:
            raise NotImplementedError("copt is not installed") from None
        if problem_name.startswith("digits"):
            raise NotImplementedError("copt has no multinomial loss")


class SecondsPerEpoch:
    """SAGA epoch time: ours (float64 and float32 data) against copt's
    minimize_saga and scikit-learn's LogisticRegression(solver="saga")."""

    params = (
        ["cython", "numba", "numpy", "copt", "sklearn"],
        list(PROBLEMS),
        ["float64", "float32"],
    )
    param_names = ["implementation", "problem", "dtype"]
    timeout = 600
    unit = "seconds"

    def setup(self, implementation, problem_name, dtype):
        _require(implementation, problem_name)
        if dtype == "float32" and implementation in ("copt", "sklearn"):
            raise NotImplementedError("float32 rows are for ours")
        if implementation == "sklearn" and problem_name == "sparse_l1":
            raise NotImplementedError(
                "about 11 s per epoch: run once in scripts/solver-report"
            )
        single_thread_blas()
        X, *rest = load_problem(problem_name)
        self.problem = (X.astype(dtype), *rest)
        # the peers' figure is a difference of two runs (see below): on the
        # small problems it needs many epochs to stand out of the noise of
        # copt's per-call compilation
        small = problem_name != "sparse_l1"
        peer = implementation in ("copt", "sklearn")
        self.epochs = 1000 if small and peer and not SMOKE else 3
        self.run(implementation, 1)  # compile (Numba, copt) and warm up

    def run(self, implementation, epochs):
        if implementation == "copt":
            return solve_copt(self.problem, epochs)
        if implementation == "sklearn":
            return solve_sklearn(self.problem, epochs)
        return solve_ours(
            "saga", self.problem, implementation, max_epochs=epochs, tol=0.0, seed=0
        )

    def track_seconds_per_epoch(self, implementation, problem_name, dtype):
        if implementation in ("copt", "sklearn"):
            # a call's fixed cost (copt compiles its loop on every call,
            # about 0.9 s) cancels out of the difference of two runs
            return marginal_seconds(
                functools.partial(self.run, implementation), self.epochs
            )
        return epoch_seconds(self.run(implementation, self.epochs))

    def peakmem_saga(self, implementation, problem_name, dtype):
        self.run(implementation, 1)


class ToTolerance:
    """Time and IFOs to 1e-6 relative suboptimality on the small problems."""

    params = (
        [f"{backend}-{name}" for backend in ("cython", "numba") for name in OURS]
        + ["sklearn-saga", "copt-saga"],
        ["breast_cancer", "digits_l2", "digits_l1"],
    )
    param_names = ["implementation", "problem"]
    timeout = 900

    def setup_cache(self):
        """F* per problem, and the epochs the peers need to reach it."""
        results = {}
        for name in self.params[1]:
            problem = load_problem(name)
            backend = AVAILABLE[0]
            best = solve_ours(
                "svrg",
                problem,
                backend,
                max_epochs=20 * MAX_EPOCHS if SMOKE else 20_000,
                tol=1e-11,
                seed=0,
            ).objective
            peer_epochs = MAX_EPOCHS if SMOKE else 10_000
            best = min(
                best,
                objective(problem, solve_sklearn(problem, peer_epochs, 1e-12).coef_),
            )
            target = best * (1 + TOLERANCE)
            epochs = {}
            peers = [("sklearn-saga", lambda p, k: solve_sklearn(p, k).coef_)]
            if problem[4] != "multinomial":  # copt has no multinomial loss
                peers.append(("copt-saga", lambda p, k: solve_copt(p, k).x))
            for peer, coef_after in peers:
                if SMOKE:  # every row runs; the epochs need not reach F*
                    epochs[peer] = 2
                    continue
                try:
                    epochs[peer] = _epochs_to(
                        functools.partial(_objective_after, coef_after, problem),
                        target,
                        limit=64 if SMOKE else 4096,
                    )
                except (ImportError, ValueError):
                    epochs[peer] = None
            results[name] = (best, epochs)
        return results

    def setup(self, cache, implementation, problem_name):
        backend, _, solver = implementation.partition("-")
        if backend in ("cython", "numba"):
            _require(backend, problem_name)
        elif backend == "copt":
            _require("copt", problem_name)
        best, epochs = cache[problem_name]
        if backend in ("sklearn", "copt") and epochs.get(implementation) is None:
            raise NotImplementedError(f"{implementation} did not reach the tolerance")
        single_thread_blas()
        self.problem = load_problem(problem_name)
        self.target = best * (1 + TOLERANCE)
        self.backend, self.solver = backend, solver
        self.epochs = epochs.get(implementation)
        self.solve()  # compile, warm up

    def solve(self):
        if self.backend == "sklearn":
            return solve_sklearn(self.problem, self.epochs)
        if self.backend == "copt":
            return solve_copt(self.problem, self.epochs)
        options = (
            {"batch_size": self.problem[0].shape[0]} if self.solver == "sgd" else {}
        )
        if self.solver == "vcsg":
            options.update(lam_unbiased=0.5, eps=0.0)
        return solve_ours(
            self.solver,
            self.problem,
            self.backend,
            max_epochs=MAX_EPOCHS,
            tol=0.0,
            seed=0,
            callback=lambda entry: entry[2] <= self.target,
            **options,
        )

    def time_to_tolerance(self, cache, implementation, problem_name):
        self.solve()

    def track_ifos_to_tolerance(self, cache, implementation, problem_name):
        if self.backend in ("sklearn", "copt"):
            return self.epochs * self.problem[0].shape[0]
        result = self.solve()
        if result.history[-1][2] > self.target:
            return float("nan")
        return result.n_ifo

    track_ifos_to_tolerance.unit = "IFOs"


def _objective_after(coef_after, problem, epochs):
    return objective(problem, coef_after(problem, epochs))


def _epochs_to(objective_after, target, limit=4096):
    """The smallest epoch count k (doubling, then bisection) with
    objective_after(k) <= target."""
    k = 1
    while objective_after(k) > target:
        k *= 2
        if k > limit:
            raise ValueError("did not reach the target")
    low = k // 2
    while k - low > 1:
        middle = (low + k) // 2
        if objective_after(middle) <= target:
            k = middle
        else:
            low = middle
    return k
