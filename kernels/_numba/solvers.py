"""Linear-model solver kernels, compiled with Numba.

Same names, arguments and semantics as ``kernels._reference.solvers`` (the
specification and its input contract).  What this module adds is speed:

* On CSR data with no penalty or the l1 penalty (with or without the ridge:
  the elastic net), a step touches only the coordinates its samples read
  (ALGORITHMS.md section 5).  Between two reads of coordinate k, every step
  applies the same map to it, ``w <- soft(w - eta*c_k, eta*l1) / (1 +
  eta*ridge)`` with c_k the k-th entry of the dense part of the direction,
  which only changes when a sample that reads k is processed.  ``last[k]``
  is the step coordinate k is current at; ``_advance`` applies any number
  of pending steps at once, in closed form while the sign of w stays the
  same (the map is affine there), and across a sign change (at most one:
  the map is monotone, so the iterates are too) by a closed-form jump to
  just before it and a few exact steps.
* SAGA's usual call (one output, one sample per step, CSR, no penalty or
  l1) takes ``_table_epoch_single``: the same iterates, in three passes
  over a row on one record per coordinate, as in the cython backend.
* On dense data, or with the group l1 and l0 penalties (not separable, or
  without a closed form), every step updates every coordinate, as the
  reference does.
"""

import math

import numpy as np

from kernels._codes import (
    LOSS_LOGISTIC,
    LOSS_SQUARED,
    METHOD_RECURSIVE,
    METHOD_SNAPSHOT,
    METHOD_TABLE,
    PENALTY_GROUP_L1,
    PENALTY_L0,
    PENALTY_L1,
    PENALTY_NONE,
)
from kernels._numba._jit import kernel


@kernel
def _row_bounds(indptr, n_features, i):
    """(first value, first column, length) of sample i's row."""
    if indptr.shape[0] == 0:
        return i * n_features, 0, n_features
    return indptr[i], indptr[i], indptr[i + 1] - indptr[i]


@kernel
def _margins(data, indices, first, column, length, coef, intercept, out):
    for kk in range(out.shape[0]):
        out[kk] = intercept[kk]
    for j in range(length):
        value = np.float64(data[first + j])
        k = indices[column + j]
        for kk in range(out.shape[0]):
            out[kk] += value * coef[k, kk]


@kernel
def _loss_and_derivative(loss, margins, target, derivative):
    """The loss of one sample; writes dloss/dm into ``derivative``."""
    if loss == LOSS_SQUARED:
        residual = margins[0] - target
        derivative[0] = residual
        return 0.5 * residual * residual
    if loss == LOSS_LOGISTIC:
        z = target * margins[0]
        if z > 0:
            value = math.log1p(math.exp(-z))
            derivative[0] = -target * math.exp(-z) / (1.0 + math.exp(-z))
        else:
            value = -z + math.log1p(math.exp(z))
            derivative[0] = -target / (1.0 + math.exp(z))
        return value
    top = margins[0]
    for kk in range(1, margins.shape[0]):
        top = max(top, margins[kk])
    total = 0.0
    for kk in range(margins.shape[0]):
        derivative[kk] = math.exp(margins[kk] - top)
        total += derivative[kk]
    for kk in range(margins.shape[0]):
        derivative[kk] /= total
    label = int(target)
    derivative[label] -= 1.0
    return math.log(total) + top - margins[label]


@kernel
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
    n_features, n_outputs = coef.shape
    margins = np.empty(n_outputs)
    total = 0.0
    for j in range(samples.shape[0]):
        i = samples[j]
        first, column, length = _row_bounds(indptr, n_features, i)
        _margins(data, indices, first, column, length, coef, intercept, margins)
        total += _loss_and_derivative(loss, margins, y[i], derivatives[j])
        for kk in range(n_outputs):
            grad_intercept[kk] += derivatives[j, kk]
        for jj in range(length):
            value = np.float64(data[first + jj])
            k = indices[column + jj]
            for kk in range(n_outputs):
                grad[k, kk] += value * derivatives[j, kk]
    return total


@kernel(inline="always")
def _soft(z, threshold):
    """The part of z above threshold plus the part below -threshold (0 for
    NaN): two selects that LLVM turns into maxsd/minsd, no branch to
    mispredict when the signs of the coordinates are a coin toss."""
    above = z - threshold
    below = z + threshold
    return (above if above > 0.0 else 0.0) + (below if below < 0.0 else 0.0)


@kernel(inline="always")
def _affine_power(w, s, steps, shrink, log_shrink):
    """``steps`` applications of w -> (w - s) / (1 + shrink): the geometric
    sum of (1 + shrink)^-j for j = 1..steps is -expm1(-steps*log_shrink) /
    shrink, exact to rounding even for a tiny shrink."""
    if shrink == 0.0:
        return w - steps * s
    return (
        math.exp(-steps * log_shrink) * w
        - s * (-math.expm1(-steps * log_shrink)) / shrink
    )


@kernel
def _steps_before_crossing(w, s, steps, shrink, log_shrink):
    """A number of steps of the affine map w -> (w - s) / (1 + shrink) that
    keeps w on its side of 0 (s of the sign of w: the drift towards 0), a
    little under the largest such number so that rounding cannot take it
    past, and less than ``steps``; 0 when unsure.  With u = |w|, v = |s|,
    a step from u_m stays affine while u_m > v: without the ridge u_m = u -
    m v, so for m < u / v - 1; with it u_m + v / r = (u + v / r) / (1 +
    r)^m (r = shrink), so for m < log1p((u - v) / (v + v / r)) / log1p(r).
    """
    u = abs(w)
    v = abs(s)
    if not (v > 0.0 and u > v):
        return 0
    if shrink == 0.0:
        m = (u - v) / v
    else:
        m = math.log1p((u - v) / (v + v / shrink)) / log_shrink
    m = m * (1.0 - 1e-9) - 2.0  # 2 steps and 1e-9 under: taken exactly
    if not m >= 1.0:  # also NaN
        return 0
    if m >= steps - 1:
        return steps - 1
    return int(m)


@kernel
def _advance(w, shift, threshold, shrink, log_shrink, steps):
    """``steps`` applications of w <- soft(w - shift, threshold) / (1 +
    shrink), ``log_shrink`` = log1p(shrink): in closed form while the sign
    of w holds (the map is affine there, and everywhere without the l1
    term), and across the sign change (at most one: the map is monotone) by
    a closed-form jump to a few steps before it, then exact steps.  O(1)."""
    divisor = 1.0 + shrink
    while steps > 0:
        if w != w or steps == 1:
            return _soft(w - shift, threshold) / divisor
        if w == 0.0:
            if abs(shift) <= threshold:
                return 0.0
            w = _soft(-shift, threshold) / divisor
            steps -= 1
            continue
        s = shift + threshold if w > 0.0 else shift - threshold
        result = _affine_power(w, s, steps, shrink, log_shrink)
        if threshold == 0.0 or ((result > 0.0) == (w > 0.0) and result != 0.0):
            return result
        positive = w > 0.0
        jump = _steps_before_crossing(w, s, steps, shrink, log_shrink)
        if jump > 0:
            result = _affine_power(w, s, jump, shrink, log_shrink)
            if (result > 0.0) == positive and result != 0.0:
                w = result
                steps -= jump
        while steps > 0 and w != 0.0 and (w > 0.0) == positive:
            w = _soft(w - shift, threshold) / divisor
            steps -= 1
    return w


@kernel(inline="always")
def _catch_up_one(w, shift, threshold, shrink, log_shrink, steps):
    """_advance, with its common cases inline and computed as it computes
    them: one step, a coordinate at 0 that stays there (most of them, under
    l1) and, without the ridge, one that keeps its sign."""
    if steps == 1:
        return _soft(w - shift, threshold) / (1.0 + shrink)
    if w == 0.0:
        if abs(shift) <= threshold:
            return 0.0
    elif shrink == 0.0 and w == w:
        s = shift + math.copysign(threshold, w)  # (shift - threshold for w < 0)
        result = w - np.float64(steps) * s
        if threshold == 0.0 or ((result > 0.0) == (w > 0.0) and result != 0.0):
            return result
    return _advance(w, shift, threshold, shrink, log_shrink, steps)


@kernel
def _catch_up(
    method,
    k,
    time,
    coef,
    direction,
    cm,
    previous,
    last,
    step,
    threshold,
    shrink,
    log_shrink,
):
    """Bring row k of coef (and of previous, for SARAH) to step ``time``."""
    steps = time - last[k]
    if steps <= 0:
        return
    scale = 1.0 if method == METHOD_RECURSIVE else cm
    for kk in range(coef.shape[1]):
        shift = step * scale * direction[k, kk]
        if method == METHOD_RECURSIVE:
            before = _advance(
                coef[k, kk], shift, threshold, shrink, log_shrink, steps - 1
            )
            previous[k, kk] = before
            coef[k, kk] = _advance(before, shift, threshold, shrink, log_shrink, 1)
        else:
            coef[k, kk] = _catch_up_one(
                coef[k, kk], shift, threshold, shrink, log_shrink, steps
            )
    last[k] = time


# Columns of the per-coordinate records of _table_epoch_single: one row of
# 32 bytes per coordinate, so a random access reads one cache line, not four.
_COEF, _DIRECTION, _WORK, _LAST = 0, 1, 2, 3


@kernel
def _table_epoch_single(
    loss,
    data,
    indices,
    indptr,
    y,
    coef,
    intercept,
    fit_intercept,
    samples,
    step,
    threshold,
    shrink,
    log_shrink,
    cg,
    cs,
    cm,
    direction,
    direction_intercept,
    table,
    last,
):
    """linear_epoch's lazy path for METHOD_TABLE with one output and one
    sample per step (SAGA's usual call), as in the cython backend: the same
    operations in the same order (the same iterates, bit for bit), in three
    passes over a row (catch-up and margin; the sparse part of v into work;
    the step, and the table's change into direction) on one record per
    coordinate (its step count kept as a float64, exact below 2**53).
    Repeated columns: work collects every entry, the step reads it once, at
    the first entry, before direction takes any of the row's change."""
    n_features = coef.shape[0]
    n_samples = samples.shape[0]
    n_table = table.shape[0]
    records = np.empty((n_features, 4))
    for k in range(n_features):
        records[k, _COEF] = coef[k, 0]
        records[k, _DIRECTION] = direction[k, 0]
        records[k, _WORK] = 0.0
        records[k, _LAST] = 0.0
    margins = np.empty(1)
    current = np.empty(1)
    for t in range(n_samples):
        i = samples[t]
        first = indptr[i]
        stop = indptr[i + 1]
        margins[0] = intercept[0]
        for j in range(first, stop):
            k = indices[j]
            steps = t - np.int64(records[k, _LAST])
            if steps != 0:
                records[k, _COEF] = _catch_up_one(
                    records[k, _COEF],
                    step * cm * records[k, _DIRECTION],
                    threshold,
                    shrink,
                    log_shrink,
                    steps,
                )
                records[k, _LAST] = t
            margins[0] += np.float64(data[j]) * records[k, _COEF]
        _loss_and_derivative(loss, margins, y[i], current)
        weight = cg * current[0] + cs * table[i, 0]
        for j in range(first, stop):
            records[indices[j], _WORK] += np.float64(data[j]) * weight
        change = (current[0] - table[i, 0]) / n_table
        table[i, 0] = current[0]
        for j in range(first, stop):
            k = indices[j]
            if records[k, _LAST] == t:
                z = _soft(
                    records[k, _COEF]
                    - step * (records[k, _WORK] + cm * records[k, _DIRECTION]),
                    threshold,
                )
                records[k, _COEF] = z / (1.0 + shrink) if shrink != 0.0 else z
                records[k, _WORK] = 0.0
                records[k, _LAST] = t + 1
            records[k, _DIRECTION] += np.float64(data[j]) * change
        if fit_intercept:
            # (0.0 + weight: the general path's partial sum, -0.0 included)
            intercept[0] -= step * ((0.0 + weight) + cm * direction_intercept[0])
        direction_intercept[0] += change
    for k in range(n_features):
        steps = n_samples - np.int64(records[k, _LAST])
        if steps > 0:
            records[k, _COEF] = _catch_up_one(
                records[k, _COEF],
                step * cm * records[k, _DIRECTION],
                threshold,
                shrink,
                log_shrink,
                steps,
            )
        coef[k, 0] = records[k, _COEF]
        direction[k, 0] = records[k, _DIRECTION]
        last[k] = n_samples


@kernel
def prox_step(penalty, coef, step, ridge, l1, group_ptr, group_weights):
    scale = 1.0 / (1.0 + step * ridge)
    n_features, n_outputs = coef.shape
    if penalty == PENALTY_GROUP_L1:
        for g in range(group_ptr.shape[0] - 1):
            total = 0.0
            for k in range(group_ptr[g], group_ptr[g + 1]):
                for kk in range(n_outputs):
                    total += coef[k, kk] * coef[k, kk]
            norm = math.sqrt(total)
            factor = 0.0
            if norm > 0.0:
                factor = max(0.0, 1.0 - step * l1 * group_weights[g] / norm)
            for k in range(group_ptr[g], group_ptr[g + 1]):
                for kk in range(n_outputs):
                    coef[k, kk] *= factor * scale
        return
    cutoff = math.sqrt(2.0 * step * l1 * (1.0 + step * ridge))
    for k in range(n_features):
        for kk in range(n_outputs):
            w = coef[k, kk]
            if penalty == PENALTY_L1:
                w = _soft(w, step * l1)
            elif penalty == PENALTY_L0 and abs(w) <= cutoff:
                w = 0.0
            coef[k, kk] = w * scale


@kernel
def _batch_weights(
    method,
    loss,
    data,
    indices,
    indptr,
    y,
    coef,
    intercept,
    batch,
    cg,
    cs,
    anchor,
    anchor_intercept,
    table,
    previous,
    previous_intercept,
    margins,
    scratch,
    current,
    weights,
):
    """Per sample of the batch: ``current`` = derivative at coef, and
    ``weights`` = the sample's share of the sparse part of v."""
    n_features = coef.shape[0]
    size = batch.shape[0]
    for j in range(size):
        i = batch[j]
        first, column, length = _row_bounds(indptr, n_features, i)
        _margins(data, indices, first, column, length, coef, intercept, margins)
        _loss_and_derivative(loss, margins, y[i], current[j])
        if method == METHOD_TABLE:
            for kk in range(coef.shape[1]):
                scratch[kk] = table[i, kk]
        elif method == METHOD_SNAPSHOT and cs == 0.0:
            scratch[:] = 0.0  # plain SGD: no snapshot term to compute
        elif method == METHOD_SNAPSHOT:
            _margins(
                data, indices, first, column, length, anchor, anchor_intercept, margins
            )
            _loss_and_derivative(loss, margins, y[i], scratch)
        else:
            _margins(
                data,
                indices,
                first,
                column,
                length,
                previous,
                previous_intercept,
                margins,
            )
            _loss_and_derivative(loss, margins, y[i], scratch)
        for kk in range(coef.shape[1]):
            if method == METHOD_RECURSIVE:
                weights[j, kk] = (current[j, kk] - scratch[kk]) / size
            else:
                weights[j, kk] = (cg * current[j, kk] + cs * scratch[kk]) / size


@kernel
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
    n_features, n_outputs = coef.shape
    lazy = indptr.shape[0] > 0 and (penalty == PENALTY_NONE or penalty == PENALTY_L1)
    threshold = shrink_step * l1 if penalty == PENALTY_L1 else 0.0
    shrink = shrink_step * ridge
    log_shrink = math.log1p(shrink)
    if lazy and method == METHOD_TABLE and n_outputs == 1 and batch_size == 1:
        _table_epoch_single(
            loss,
            data,
            indices,
            indptr,
            y,
            coef,
            intercept,
            fit_intercept,
            samples,
            step,
            threshold,
            shrink,
            log_shrink,
            cg,
            cs,
            cm,
            direction,
            direction_intercept,
            table,
            last,
        )
        return
    margins = np.empty(n_outputs)
    scratch = np.empty(n_outputs)
    current = np.empty((batch_size, n_outputs))
    weights = np.empty((batch_size, n_outputs))
    partial_intercept = np.empty(n_outputs)
    time = 0
    if lazy:
        last[:] = 0
    if method == METHOD_RECURSIVE:
        for kk in range(n_outputs):
            previous_intercept[kk] = intercept[kk]
            if fit_intercept:
                intercept[kk] -= step * direction_intercept[kk]
        if lazy:
            time = 1
        else:
            previous[:, :] = coef
            for k in range(n_features):
                for kk in range(n_outputs):
                    coef[k, kk] -= step * direction[k, kk]
            prox_step(penalty, coef, shrink_step, ridge, l1, group_ptr, group_weights)
    for start in range(0, samples.shape[0], batch_size):
        batch = samples[start : min(start + batch_size, samples.shape[0])]
        size = batch.shape[0]
        if lazy:
            for j in range(size):
                first, column, length = _row_bounds(indptr, n_features, batch[j])
                for jj in range(length):
                    _catch_up(
                        method,
                        indices[column + jj],
                        time,
                        coef,
                        direction,
                        cm,
                        previous,
                        last,
                        step,
                        threshold,
                        shrink,
                        log_shrink,
                    )
        _batch_weights(
            method,
            loss,
            data,
            indices,
            indptr,
            y,
            coef,
            intercept,
            batch,
            cg,
            cs,
            anchor,
            anchor_intercept,
            table,
            previous,
            previous_intercept,
            margins,
            scratch,
            current,
            weights,
        )
        for kk in range(n_outputs):
            partial_intercept[kk] = 0.0
        for j in range(size):
            first, column, length = _row_bounds(indptr, n_features, batch[j])
            for kk in range(n_outputs):
                partial_intercept[kk] += weights[j, kk]
            for jj in range(length):
                value = np.float64(data[first + jj])
                k = indices[column + jj]
                for kk in range(n_outputs):
                    work[k, kk] += value * weights[j, kk]
        if lazy:
            for j in range(size):
                first, column, length = _row_bounds(indptr, n_features, batch[j])
                for jj in range(length):
                    k = indices[column + jj]
                    if last[k] != time:
                        continue
                    for kk in range(n_outputs):
                        if method == METHOD_RECURSIVE:
                            direction[k, kk] += work[k, kk]
                            previous[k, kk] = coef[k, kk]
                            z = coef[k, kk] - step * direction[k, kk]
                        else:
                            z = coef[k, kk] - step * (
                                work[k, kk] + cm * direction[k, kk]
                            )
                        coef[k, kk] = _soft(z, threshold) / (1.0 + shrink)
                        work[k, kk] = 0.0
                    last[k] = time + 1
        else:
            if method == METHOD_RECURSIVE:
                previous[:, :] = coef
            for k in range(n_features):
                for kk in range(n_outputs):
                    if method == METHOD_RECURSIVE:
                        direction[k, kk] += work[k, kk]
                        coef[k, kk] -= step * direction[k, kk]
                    else:
                        coef[k, kk] -= step * (work[k, kk] + cm * direction[k, kk])
                    work[k, kk] = 0.0
            prox_step(penalty, coef, shrink_step, ridge, l1, group_ptr, group_weights)
        for kk in range(n_outputs):
            if method == METHOD_RECURSIVE:
                direction_intercept[kk] += partial_intercept[kk]
                previous_intercept[kk] = intercept[kk]
                if fit_intercept:
                    intercept[kk] -= step * direction_intercept[kk]
            elif fit_intercept:
                intercept[kk] -= step * (
                    partial_intercept[kk] + cm * direction_intercept[kk]
                )
        if method == METHOD_TABLE:
            n_total = table.shape[0]
            for j in range(size):
                i = batch[j]
                first, column, length = _row_bounds(indptr, n_features, i)
                for kk in range(n_outputs):
                    scratch[kk] = (current[j, kk] - table[i, kk]) / n_total
                    table[i, kk] = current[j, kk]
                    direction_intercept[kk] += scratch[kk]
                for jj in range(length):
                    value = np.float64(data[first + jj])
                    k = indices[column + jj]
                    for kk in range(n_outputs):
                        direction[k, kk] += value * scratch[kk]
        time += 1
    if lazy:
        for k in range(n_features):
            _catch_up(
                method,
                k,
                time,
                coef,
                direction,
                cm,
                previous,
                last,
                step,
                threshold,
                shrink,
                log_shrink,
            )
