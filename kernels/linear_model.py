"""scikit-learn-style estimators over ``kernels.solvers``.

``SparseLogisticRegression`` (binary or multinomial) and
``SparseLinearRegression`` (least squares) fit by any solver of
``kernels.solvers`` and follow scikit-learn's estimator API: ``fit``,
``predict``, ``predict_proba`` / ``decision_function``, ``score``,
``get_params`` / ``set_params``, and the fitted ``coef_``, ``intercept_``,
``n_iter_`` (and ``classes_``).  With scikit-learn installed they derive from
its ``BaseEstimator`` and mixins, so ``clone``, ``Pipeline`` and
``GridSearchCV`` work; without it this module still imports and the
estimators work on their own (a small base class provides the same
parameter handling and ``score``).
"""

import inspect

import numpy as np

from kernels import solvers
from kernels.sparse import CSRMatrix, _is_scipy_sparse, spmv

__all__ = ["SparseLogisticRegression", "SparseLinearRegression"]


try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError:

    class BaseEstimator:
        """get_params / set_params from the constructor's keyword arguments,
        as scikit-learn defines them."""

        @classmethod
        def _get_param_names(cls):
            signature = inspect.signature(cls.__init__)
            return sorted(p for p in signature.parameters if p != "self")

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(
                        f"invalid parameter {name!r} for {type(self).__name__}; "
                        f"valid parameters: {valid}"
                    )
                setattr(self, name, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class ClassifierMixin:
        def score(self, X, y, sample_weight=None):
            """Mean accuracy of ``predict(X)`` against ``y``."""
            return float(
                np.average(self.predict(X) == np.asarray(y), weights=sample_weight)
            )

    class RegressorMixin:
        def score(self, X, y, sample_weight=None):
            """The coefficient of determination R^2 of ``predict(X)``."""
            y = np.asarray(y, dtype=np.float64)
            residual = np.average((y - self.predict(X)) ** 2, weights=sample_weight)
            spread = np.average(
                (y - np.average(y, weights=sample_weight)) ** 2, weights=sample_weight
            )
            return float(1.0 - residual / spread) if spread > 0 else 0.0


class _SparseLinearModel(BaseEstimator):
    """Shared fitting and prediction; subclasses choose the loss."""

    def __init__(
        self,
        *,
        alpha=0.0,
        penalty="l1",
        beta=1e-3,
        l1_ratio=0.5,
        groups=None,
        solver="saga",
        lam=None,
        step="auto",
        batch_size=1,
        max_epochs=100,
        tol=1e-4,
        fit_intercept=True,
        seed=None,
        verbose=False,
        backend=None,
    ):
        self.alpha = alpha
        self.penalty = penalty
        self.beta = beta
        self.l1_ratio = l1_ratio
        self.groups = groups
        self.solver = solver
        self.lam = lam
        self.step = step
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.seed = seed
        self.verbose = verbose
        self.backend = backend

    def _solve(self, X, y, loss):
        """Fit by ``self.solver`` with the parameters of this estimator that
        the solver takes (its signature says which: vcsg has no
        ``batch_size``, only some solvers take ``lam``)."""
        if self.solver not in solvers.SOLVERS:
            raise ValueError(
                f"solver must be one of {solvers.SOLVERS}, got {self.solver!r}"
            )
        solve = getattr(solvers, self.solver)
        accepted = inspect.signature(solve).parameters
        if self.lam is not None and "lam" not in accepted:
            takes_lam = tuple(
                name
                for name in solvers.SOLVERS
                if "lam" in inspect.signature(getattr(solvers, name)).parameters
            )
            raise ValueError(
                f"lam applies to {takes_lam}, not to solver={self.solver!r}"
            )
        options = {
            name: value for name, value in self.get_params().items() if name in accepted
        }
        result = solve(X, y, loss=loss, **options)
        self.coef_ = result.coef
        self.intercept_ = result.intercept
        self.n_iter_ = result.n_epochs
        self.result_ = result
        self.n_features_in_ = result.coef.shape[-1]
        return result

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise AttributeError(
                f"this {type(self).__name__} is not fitted yet; call fit first"
            )

    def decision_function(self, X):
        """The margins X @ coef_.T + intercept_: (n_samples,) for one output,
        (n_samples, n_classes) for the multinomial model."""
        self._check_fitted()
        coef = np.atleast_2d(self.coef_)
        if _is_scipy_sparse(X) or isinstance(X, CSRMatrix):
            A = X if isinstance(X, CSRMatrix) else CSRMatrix.from_scipy(X)
            if A.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {A.shape[1]} features, the model {self.n_features_in_}"
                )
            scores = np.stack(
                [spmv(A, row.astype(A.dtype)).astype(np.float64) for row in coef],
                axis=1,
            )
        else:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X must be 2-D with {self.n_features_in_} features, got shape "
                    f"{X.shape}"
                )
            scores = X @ coef.T
        scores = scores + self.intercept_
        return scores[:, 0] if np.ndim(self.coef_) == 1 else scores


class SparseLogisticRegression(ClassifierMixin, _SparseLinearModel):
    """Logistic regression with a sparsity-inducing penalty, fit by a
    variance-reduced solver (default: SAGA with l1; ``solver`` one of
    "sgd", "svrg", "saga", "sarah", "scsg", "vcsg").  Two classes use the
    binary logistic loss, more the multinomial one; labels may be of any
    type.  The objective is the mean loss + alpha/2 ||W||^2 + beta *
    penalty(W) (see ``kernels.solvers``)."""

    def fit(self, X, y):
        """Fit on ``X`` (dense or sparse, (n_samples, n_features)) and the
        labels ``y``: the logistic loss for two classes, the multinomial one
        for more.  Returns the estimator."""
        classes = np.unique(np.asarray(y))
        loss = "logistic" if classes.size <= 2 else "multinomial"
        result = self._solve(X, y, loss)
        self.classes_ = result.classes
        return self

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes), in ``classes_`` order."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = 0.5 * (1.0 + np.tanh(0.5 * scores))  # the logistic sigmoid
            return np.column_stack((1.0 - positive, positive))
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The predicted label (from ``classes_``) of each row of ``X``."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(np.intp)]
        return self.classes_[np.argmax(scores, axis=1)]


class SparseLinearRegression(RegressorMixin, _SparseLinearModel):
    """Least squares with a sparsity-inducing penalty (the lasso with the
    default l1 penalty, the elastic net, the group lasso), fit by a
    variance-reduced solver.  The objective is 1/(2n) ||X w + b - y||^2 +
    alpha/2 ||w||^2 + beta * penalty(w)."""

    def fit(self, X, y):
        """Fit on ``X`` (dense or sparse, (n_samples, n_features)) and the
        targets ``y`` by least squares.  Returns the estimator."""
        self._solve(X, y, "squared")
        return self

    def predict(self, X):
        """The predicted target X @ coef_ + intercept_ of each row of ``X``."""
        return self.decision_function(X)
