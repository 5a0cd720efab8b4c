"""Linear-model solver kernels: the NumPy reference and the "numpy" backend.

The specification that ``kernels._numba.solvers`` and the Cython module
``kernels._cy.solvers`` match name for name and argument for argument.  It
computes every step eagerly (O(n_features) per step); the compiled backends
apply the same steps lazily on CSR data (ALGORITHMS.md section 5) and must
agree with this module to rounding.

Model and data.  A linear model has coefficients ``coef`` of shape
(n_features, K) and an ``intercept`` of shape (K,), both float64; sample i
has margins ``m_i = x_i @ coef + intercept`` (K of them).  K = 1 for least
squares and binary logistic regression, K = n_classes for the multinomial
loss.  The data is read row by row in one of two layouts:

* CSR: ``data`` (nnz,), ``indices`` (nnz,), ``indptr`` (n_samples + 1,);
  row i is ``data[indptr[i]:indptr[i+1]]`` at columns
  ``indices[indptr[i]:indptr[i+1]]``.
* dense: ``data`` is the C-contiguous (n_samples, n_features) matrix
  flattened, ``indices`` is ``arange(n_features)`` and ``indptr`` is empty;
  row i is ``data[i*d:(i+1)*d]``.

``data`` is float32 or float64 (float32 data stays float32 in memory and is
converted as it is read); ``indices`` and ``indptr`` share one integer dtype
(int32 or int64); ``y`` is float64 (targets, +-1 labels, or class numbers);
``samples`` is int64.  Every array the solver state lives in is float64: the
coefficients, the snapshot mean, the SAGA table and the SARAH direction
accumulate sums over many samples, which float32 would round away.

Steps.  With step size ``eta``, the prox of ``eta * h`` for
``h(W) = ridge/2 * ||W||^2 + l1 * penalty(W)`` is
``prox(z) = shrink(z) / (1 + eta * ridge)`` where ``shrink`` is the identity,
the soft threshold at ``eta * l1``, the group shrink at
``eta * l1 * group_weights[g]``, or the hard threshold at
``sqrt(2 * eta * l1 * (1 + eta * ridge))`` (codes in ``kernels._codes``).
The intercept is never penalised.  The kernels trust their inputs;
``kernels._solver_run.LinearProblem`` validates them.
"""

import numpy as np

from kernels._codes import (
    LOSS_LOGISTIC,
    LOSS_SQUARED,
    METHOD_RECURSIVE,
    METHOD_TABLE,
    PENALTY_GROUP_L1,
    PENALTY_L0,
    PENALTY_L1,
)


def _row(data, indices, indptr, n_features, i):
    """(values as float64, columns) of sample ``i``.  A row may repeat a
    column (its entries then add up, as in scipy): scatters into columns go
    through np.add.at, since ``a[columns] += b`` keeps only one of them."""
    if indptr.shape[0] == 0:
        start = i * n_features
        return data[start : start + n_features].astype(np.float64), indices
    start, stop = indptr[i], indptr[i + 1]
    return data[start:stop].astype(np.float64), indices[start:stop]


def _loss_and_derivative(loss, margins, target):
    """The loss of one sample and its derivative with respect to the margins."""
    if loss == LOSS_SQUARED:
        residual = margins - target
        return 0.5 * residual[0] ** 2, residual
    if loss == LOSS_LOGISTIC:
        z = target * margins[0]
        # log(1 + exp(-z)) and -y / (1 + exp(z)), without overflow.
        value = np.logaddexp(0.0, -z)
        return value, np.array([-target * np.exp(-np.logaddexp(0.0, z))])
    shifted = margins - margins.max()
    total = np.exp(shifted).sum()
    derivative = np.exp(shifted) / total
    k = int(target)
    derivative[k] -= 1.0
    return np.log(total) - shifted[k], derivative


def linear_pass(
    loss,
    data,
    indices,
    indptr,
    y,
    coef,
    intercept,
    samples,
    derivatives,
    grad,
    grad_intercept,
):
    """One pass over ``samples`` at the point (coef, intercept).

    For the j-th sample i: ``derivatives[j] = dloss/dm (m_i)``, then
    ``grad += outer(x_i, derivatives[j])`` and
    ``grad_intercept += derivatives[j]`` (accumulated, not overwritten: the
    caller zeroes them and divides by the number of samples).  Returns the
    sum of the samples' losses.  O(sum of nnz(x_i) * K); reads each row once.
    """
    n_features = coef.shape[0]
    total = 0.0
    for j, i in enumerate(samples):
        values, columns = _row(data, indices, indptr, n_features, i)
        margins = values @ coef[columns] + intercept
        value, derivative = _loss_and_derivative(loss, margins, y[i])
        derivatives[j] = derivative
        np.add.at(grad, columns, np.outer(values, derivative))
        grad_intercept += derivative
        total += value
    return total


def prox_step(penalty, coef, step, ridge, l1, group_ptr, group_weights):
    """coef <- prox_{step * h}(coef), in place (see the module docstring)."""
    scale = 1.0 / (1.0 + step * ridge)
    if penalty == PENALTY_L1:
        coef[...] = np.sign(coef) * np.maximum(np.abs(coef) - step * l1, 0.0)
    elif penalty == PENALTY_GROUP_L1:
        for g in range(group_ptr.shape[0] - 1):
            block = coef[group_ptr[g] : group_ptr[g + 1]]
            norm = np.sqrt(np.sum(block * block))
            threshold = step * l1 * group_weights[g]
            block *= max(0.0, 1.0 - threshold / norm) if norm > 0.0 else 0.0
    elif penalty == PENALTY_L0:
        cutoff = np.sqrt(2.0 * step * l1 * (1.0 + step * ridge))
        coef[np.abs(coef) <= cutoff] = 0.0
    coef *= scale


def linear_epoch(
    method,
    loss,
    penalty,
    data,
    indices,
    indptr,
    y,
    coef,
    intercept,
    fit_intercept,
    samples,
    batch_size,
    step,
    shrink_step,
    ridge,
    l1,
    group_ptr,
    group_weights,
    cg,
    cs,
    cm,
    anchor,
    anchor_intercept,
    direction,
    direction_intercept,
    table,
    previous,
    previous_intercept,
    work,
    last,
):
    """One epoch of proximal variance-reduced steps over ``samples``.

    ``samples`` is cut into consecutive mini-batches of ``batch_size`` (the
    last may be shorter).  Each step on a batch I of size b moves

        coef <- prox_{step * h}(coef - step * v),
        intercept <- intercept - step * v_intercept (if ``fit_intercept``)

    where, with g_i and s_i the loss derivatives of sample i at the current
    point and at the method's reference:

    * METHOD_SNAPSHOT (SVRG, SCSG, VCSG and the lambda-estimator):
      s_i at (``anchor``, ``anchor_intercept``), the snapshot;
      v = (1/b) sum_i x_i (cg g_i + cs s_i) + cm * ``direction`` (the
      snapshot's mean gradient mu).
    * METHOD_TABLE (SAGA and its lambda variant): s_i = ``table[i]``, the
      derivative last seen for sample i; v as above with ``direction`` the
      table's mean gradient, (1/n) sum_j x_j table[j]; after the step,
      table[i] <- g_i and the mean follows.
    * METHOD_RECURSIVE (SARAH): ``direction`` holds v_0, the full gradient at
      the starting point.  The epoch first steps along it, then for each
      batch v <- v + (1/b) sum_i x_i (g_i - p_i), p_i the derivative at the
      previous iterate, and steps along v.  ``previous`` (and
      ``previous_intercept``) are workspace for that iterate.

    (cg, cs, cm) = (1, -1, 1) is the textbook method, (1, 0, 0) plain SGD,
    and the lambda-estimator of ALGORITHMS.md is (1 - lam, -lam, lam) for
    lam <= 1/2 and (1 - lam, lam - 1, lam) above.  The gradient part of a
    step uses ``step``, the prox ``shrink_step``: the lambda-estimator
    tends to c * grad f at a solution (c = 1 - lam, or lam above 1/2), so
    a prox with step c * step keeps the problem's solutions fixed points.
    ``direction`` and
    ``direction_intercept`` are updated in place for METHOD_TABLE and
    METHOD_RECURSIVE.  ``work`` (n_features, K) and ``last``
    (n_features,) are workspace for the lazy updates of the compiled
    backends.

    Cost: 2 * nnz(x_i) * K per sample for the derivatives (one pass for the
    current point, one for the reference), plus here O(n_features * K) per
    step for the dense part and the prox (the compiled backends make that
    O(nnz) on CSR data with the l1 or no penalty).
    """
    n_features = coef.shape[0]
    n_samples_total = table.shape[0]
    bounds = range(0, samples.shape[0], batch_size)
    if method == METHOD_RECURSIVE:
        previous[...] = coef
        previous_intercept[...] = intercept
        _apply(
            penalty,
            coef,
            intercept,
            fit_intercept,
            direction,
            direction_intercept,
            step,
            shrink_step,
            ridge,
            l1,
            group_ptr,
            group_weights,
        )
    for start in bounds:
        batch = samples[start : start + batch_size]
        partial = np.zeros_like(coef)
        partial_intercept = np.zeros_like(intercept)
        new_derivatives = []
        for i in batch:
            values, columns = _row(data, indices, indptr, n_features, i)
            current = _loss_and_derivative(
                loss, values @ coef[columns] + intercept, y[i]
            )[1]
            if method == METHOD_RECURSIVE:
                before = _loss_and_derivative(
                    loss, values @ previous[columns] + previous_intercept, y[i]
                )[1]
                weight = (current - before) / batch.shape[0]
            else:
                if method == METHOD_TABLE:
                    reference = table[i]
                elif cs == 0.0:  # plain SGD: no snapshot term to compute
                    reference = np.zeros_like(current)
                else:
                    reference = _loss_and_derivative(
                        loss, values @ anchor[columns] + anchor_intercept, y[i]
                    )[1]
                weight = (cg * current + cs * reference) / batch.shape[0]
                new_derivatives.append((values, columns, i, current))
            np.add.at(partial, columns, np.outer(values, weight))
            partial_intercept += weight
        if method == METHOD_RECURSIVE:
            direction += partial
            direction_intercept += partial_intercept
            previous[...] = coef
            previous_intercept[...] = intercept
            _apply(
                penalty,
                coef,
                intercept,
                fit_intercept,
                direction,
                direction_intercept,
                step,
                shrink_step,
                ridge,
                l1,
                group_ptr,
                group_weights,
            )
            continue
        partial += cm * direction
        partial_intercept += cm * direction_intercept
        _apply(
            penalty,
            coef,
            intercept,
            fit_intercept,
            partial,
            partial_intercept,
            step,
            shrink_step,
            ridge,
            l1,
            group_ptr,
            group_weights,
        )
        if method == METHOD_TABLE:
            for values, columns, i, current in new_derivatives:
                change = (current - table[i]) / n_samples_total
                table[i] = current
                np.add.at(direction, columns, np.outer(values, change))
                direction_intercept += change


def _apply(
    penalty,
    coef,
    intercept,
    fit_intercept,
    v,
    v_intercept,
    step,
    shrink_step,
    ridge,
    l1,
    group_ptr,
    group_weights,
):
    coef -= step * v
    prox_step(penalty, coef, shrink_step, ridge, l1, group_ptr, group_weights)
    if fit_intercept:
        intercept -= step * v_intercept
