"""scikit-learn's own estimator checks on the estimators of
kernels.linear_model (issue 19).  Every check passes: none is listed as an
expected failure.  A few are skipped by scikit-learn itself where an
optional dependency is missing (pandas, or SCIPY_ARRAY_API unset for the
array API checks)."""

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from kernels import SparseLinearRegression, SparseLogisticRegression  # noqa: E402

# Reasons for the checks that are expected to fail, by estimator class and
# check name: none today.
EXPECTED_FAILURES = {}


@parametrize_with_checks(
    [SparseLogisticRegression(), SparseLinearRegression()],
    expected_failed_checks=lambda estimator: EXPECTED_FAILURES.get(
        type(estimator).__name__, {}
    ),
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
