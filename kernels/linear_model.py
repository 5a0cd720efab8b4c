"""scikit-learn-style estimators over ``kernels.solvers``.

``SparseLogisticRegression`` (binary or multinomial) and
``SparseLinearRegression`` (least squares) fit by any solver of
``kernels.solvers`` and follow scikit-learn's estimator API: ``fit``,
``predict``, ``predict_proba`` and ``decision_function`` (classifier), ``score``,
``get_params`` / ``set_params``, and the fitted ``coef_``, ``intercept_``,
``n_iter_`` (and ``classes_``).  With scikit-learn installed they derive from
its ``BaseEstimator`` and mixins, so ``clone``, ``Pipeline`` and
``GridSearchCV`` work; without it this module still imports and the
estimators work on their own (a small base class provides the same
parameter handling and ``score``).

Their inputs follow scikit-learn's conventions, with scikit-learn's
messages (what its users and its estimator checks look for), whether or
not it is installed: X is 2-D (a 1-D X is "Expected 2D array ... Reshape
your data"), with at least one sample and one feature, finite, real
(object arrays are converted to float64, complex ones are a ValueError
"Complex data not supported"), dense or sparse; ``predict`` and the other
methods check X's number of features against ``fit``'s and raise
``NotFittedError`` (an AttributeError and a ValueError) before ``fit``; a
column-vector y is used as 1-D with a ``DataConversionWarning``; the
classifier refuses a continuous target ("Unknown label type: continuous")
and a single class.  ``seed`` is a parameter like any other, 0 by default,
so that two fits with the same parameters give the same model
(``seed=None`` draws fresh randomness in every fit).  Below the
estimators, ``kernels.solvers`` keeps the library's own conventions
(kernels._checks).
"""

import inspect
import warnings

import numpy as np

from kernels import _checks, solvers
from kernels.sparse import CSRMatrix, _is_scipy_sparse, spmv

__all__ = ["SparseLogisticRegression", "SparseLinearRegression"]


try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError
except ImportError:

    class NotFittedError(ValueError, AttributeError):
        """A method that needs a fitted estimator was called before fit
        (scikit-learn's exception of that name, when it is installed)."""

    class DataConversionWarning(UserWarning):
        """The input was converted to the form the estimator takes
        (scikit-learn's warning of that name, when it is installed)."""

    class BaseEstimator:
        """get_params / set_params from the constructor's keyword arguments,
        as scikit-learn defines them."""

        @classmethod
        def _get_param_names(cls):
            signature = inspect.signature(cls.__init__)
            return sorted(p for p in signature.parameters if p != "self")

        def get_params(self, deep=True):
            """The constructor's keyword arguments and their current values
            (``deep`` is accepted for scikit-learn's signature; these
            estimators hold no sub-estimators)."""
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            """Set constructor parameters by name and return the estimator;
            an unknown name is a ValueError listing the valid ones."""
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


_RESHAPE = (
    "Reshape your data either using array.reshape(-1, 1) if your data has a "
    "single feature or array.reshape(1, -1) if it contains a single sample."
)


def _finite(values, name):
    """scikit-learn's ValueError for NaN or inf in ``values``."""
    if values.size and not np.isfinite(values).all():
        found = "NaN" if np.isnan(values).any() else "infinity"
        raise ValueError(f"Input {name} contains {found}.")


def _samples(X, estimator, n_features=None):
    """X as the solvers and the products take it: a C-contiguous float32 or
    float64 array, or a ``CSRMatrix`` for sparse X, checked as
    scikit-learn's ``check_array`` checks it (messages included); with
    ``n_features``, X must have that many columns."""
    if isinstance(X, CSRMatrix) or _is_scipy_sparse(X):
        X = X if isinstance(X, CSRMatrix) else CSRMatrix.from_scipy(X)
        _finite(X.data, "X")
    else:
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError(f"Complex data not supported\n{X!r}\n")
        if X.dtype.kind in "OUS":
            X = X.astype(np.float64)  # float()'s TypeError or ValueError
        X = _checks.as_float_array(X, "X")
        if X.ndim != 2:
            kind = "scalar" if X.ndim == 0 else f"{X.ndim}D"
            if X.ndim > 2:
                raise ValueError(f"Found array with dim {X.ndim}. Expected <= 2.")
            raise ValueError(
                f"Expected 2D array, got {kind} array instead:\narray={X}.\n{_RESHAPE}"
            )
        _finite(X, "X")
    shape = X.shape
    if shape[0] < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={shape}) while a minimum of 1 "
            "is required."
        )
    if shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 "
            "is required."
        )
    if n_features is not None and shape[1] != n_features:
        raise ValueError(
            f"X has {shape[1]} features, but {type(estimator).__name__} is "
            f"expecting {n_features} features as input."
        )
    return X


def _targets(y, estimator, n_samples):
    """y as a 1-D array of n_samples entries, checked as scikit-learn
    checks a target (messages included): a column vector is raveled with a
    DataConversionWarning."""
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target "
            "y is None."
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please "
            "change the shape of y to (n_samples, ), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(
            f"y should be a 1d array, got an array of shape {y.shape} instead."
        )
    if y.shape[0] != n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_samples}, {y.shape[0]}]"
        )
    return y


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
        seed=0,
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

    def __sklearn_tags__(self):
        # scikit-learn >= 1.6 reads the tags here: sparse X is accepted
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _fitted_samples(self, X):
        """X checked for a method of the fitted estimator."""
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call "
                "'fit' with appropriate arguments before using this estimator."
            )
        return _samples(X, self, self.n_features_in_)

    def _margins(self, X):
        """X @ coef_.T + intercept_ for the checked X: (n_samples,) for one
        output, (n_samples, n_classes) for the multinomial model."""
        coef = np.atleast_2d(self.coef_)
        if isinstance(X, CSRMatrix):
            scores = np.stack(
                [spmv(X, row.astype(X.dtype)).astype(np.float64) for row in coef],
                axis=1,
            )
        else:
            scores = X.astype(np.float64, copy=False) @ coef.T
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
        X = _samples(X, self)
        y = _targets(y, self, X.shape[0])
        if y.dtype.kind in "fc":
            _finite(y, "y")
            if (y != np.round(y)).any():
                raise ValueError(
                    "Unknown label type: continuous. Maybe you are trying to fit "
                    "a classifier, which expects discrete classes on a regression "
                    "target with continuous values."
                )
        classes = _checks.class_labels(y)[0]
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the "
                f"data, but the data contains only one class: {classes[0]!r}"
            )
        loss = "logistic" if classes.size == 2 else "multinomial"
        result = self._solve(X, y, loss)
        self.classes_ = result.classes
        return self

    def decision_function(self, X):
        """The margins X @ coef_.T + intercept_: (n_samples,) for two
        classes (positive for ``classes_[1]``), (n_samples, n_classes) for
        the multinomial model."""
        return self._margins(self._fitted_samples(X))

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
        X = _samples(X, self)
        y = _targets(y, self, X.shape[0])
        if y.dtype.kind in "OUS":
            y = y.astype(np.float64)
        _finite(_checks.as_float_array(y, "y"), "y")
        self._solve(X, y, "squared")
        return self

    def predict(self, X):
        """The predicted target X @ coef_ + intercept_ of each row of ``X``."""
        return self._margins(self._fitted_samples(X))
