"""scikit-learn-style estimators over the solvers (kernels.linear_model)."""

import warnings

import numpy as np
import pytest
from _support import run_python

import kernels
from kernels import SparseLinearRegression, SparseLogisticRegression

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), np.where(y == 1, "benign", "malignant")


def test_logistic_fit_predict_score_and_sparsity(cancer):
    X, y = cancer
    model = SparseLogisticRegression(beta=0.01, max_epochs=200, seed=0).fit(X, y)
    assert model.coef_.shape == (30,)
    assert set(model.classes_) == {"benign", "malignant"}
    assert model.score(X, y) > 0.95
    assert 0 < np.count_nonzero(model.coef_) < 30
    proba = model.predict_proba(X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(model.predict(X[:5])) == list(model.classes_[proba.argmax(axis=1)])
    assert model.n_iter_ == model.result_.n_epochs


def test_logistic_matches_scikit_learn_on_the_same_objective(cancer):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer
    n, beta = X.shape[0], 0.01
    ours = SparseLogisticRegression(
        beta=beta, tol=1e-5, max_epochs=5000, fit_intercept=False, seed=0
    ).fit(X, y)
    theirs = LogisticRegression(
        C=1 / (n * beta),
        l1_ratio=1.0,
        penalty="elasticnet",
        solver="saga",
        tol=1e-10,
        max_iter=20000,
        fit_intercept=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # penalty deprecated in scikit-learn 1.8
        theirs.fit(X, y)

    def objective(coef):
        margins = np.where(y == ours.classes_[1], 1.0, -1.0) * (X @ coef)
        return np.mean(np.logaddexp(0.0, -margins)) + beta * np.abs(coef).sum()

    # l1 without a ridge converges slowly near the end for both: compare what
    # is minimised, not the iterates
    assert objective(ours.coef_) <= objective(theirs.coef_[0]) * (1 + 1e-4)
    assert ours.result_.objective == pytest.approx(objective(ours.coef_), rel=1e-12)


def test_multinomial_and_sparse_input():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    model = SparseLogisticRegression(beta=1e-4, max_epochs=30, seed=0).fit(X, y)
    assert model.coef_.shape == (10, 64)
    assert model.predict_proba(X[:3]).shape == (3, 10)
    assert model.score(X, y) > 0.9
    sparse = kernels.CSRMatrix.from_dense(X)
    np.testing.assert_allclose(
        model.decision_function(sparse), model.decision_function(X), atol=1e-5
    )


def test_linear_regression_is_the_lasso():
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 10))
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.standard_normal(100)
    ours = SparseLinearRegression(
        beta=0.05, solver="svrg", tol=1e-10, max_epochs=2000, seed=0
    ).fit(X, y)
    theirs = Lasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, atol=1e-6)
    assert ours.score(X, y) > 0.99


def test_pipeline_grid_search_and_clone(cancer):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer
    model = SparseLogisticRegression(max_epochs=20, seed=0)
    assert clone(model).get_params() == model.get_params()
    search = GridSearchCV(
        make_pipeline(StandardScaler(), model),
        {"sparselogisticregression__beta": [1e-3, 1e-1]},
        cv=3,
    ).fit(X, y)
    assert search.best_params_["sparselogisticregression__beta"] == 1e-3
    assert search.score(X, y) > 0.9


def test_errors(cancer):
    X, y = cancer
    with pytest.raises(AttributeError, match="not fitted"):
        SparseLogisticRegression().predict(X)
    with pytest.raises(ValueError, match="solver must be"):
        SparseLogisticRegression(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="lam applies"):
        SparseLogisticRegression(solver="sarah", lam=0.5).fit(X, y)
    model = SparseLogisticRegression(max_epochs=2).fit(X, y)
    with pytest.raises(ValueError, match="30 features"):
        model.predict(X[:, :5])


def test_importable_and_usable_without_scikit_learn():
    result = run_python(
        "import sys; sys.modules['sklearn'] = None\n"
        "import numpy as np, kernels\n"
        "X = np.random.default_rng(0).standard_normal((50, 4))\n"
        "y = X[:, 0] > 0\n"
        "m = kernels.SparseLogisticRegression(beta=1e-3, max_epochs=50).fit(X, y)\n"
        "assert m.score(X, y) > 0.9, m.score(X, y)\n"
        "assert m.get_params()['beta'] == 1e-3\n"
        "m.set_params(beta=0.5)\n"
        "assert 'beta=0.5' in repr(m)\n"
    )
    assert result.returncode == 0, result.stderr
