# cython: embedsignature=False
# Every def here is fused, and Cython (3.3) embeds the fused dispatcher's
# signature "(signatures, args, kwargs, defaults, ...)" into fused docstrings;
# inspect.signature (what help() and the contract test use) is right without it.
"""Linear-model solver kernels, compiled: the "cython" backend of
kernels.solvers.

Same names, arguments and semantics as ``kernels._reference.solvers`` (the
specification, input contract included), and a line-by-line port of
``kernels._numba.solvers`` (same lazy "just-in-time" updates on CSR data,
ALGORITHMS.md section 5, and the same floating-point operation order, so
the two agree bit for bit; ``_advance`` in both jumps across a sign change
in closed form, O(1) per catch-up).  ``data`` is float32 or float64 (fused type
``floating``, converted to double as it is read); ``indices`` and ``indptr``
are both int32 or both int64 (fused type ``index_t``); ``samples``,
``group_ptr`` and ``last`` are int64; every other array is float64 and
C-contiguous, and unused ones may be empty (shape (0,) or (0, K)).  The
loss, penalty and method codes are those of ``kernels._codes`` (C enums
that setup.py writes from that table into pyx/_codes.pxi; ``CODES`` here).
Each kernel takes its arrays as typed memoryviews, then runs serially
without the GIL on raw pointers.

SAGA's usual call (one output, one sample per step, CSR data, no penalty
or l1) has a path of its own, ``_table_epoch_single``: the same operations
in the same order (so the same iterates, bit for bit), on one 32-byte
record per coordinate (coef, direction, work, last step) with the next
rows prefetched, the common catch-ups inline and a branch-free soft
threshold.  On the 50,000 x 100,000 SAGA + l1 problem of bench_solvers that
took an epoch from about 200 ms to about 60 ms (``python -m
bench.saga_epoch``); most of the gain is the soft threshold, whose branches
the sign of each coordinate made a coin toss.
"""

from cython cimport floating
from libc.math cimport copysign, exp, expm1, fabs, log, log1p, sqrt
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

from shrink cimport kernels_soft_solver

include "_codes.pxi"


ctypedef fused index_t:
    int32_t
    int64_t


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define kernels_prefetch(address) __builtin_prefetch(address)
    #else
    #define kernels_prefetch(address) ((void)0)
    #endif
    """
    void kernels_prefetch(const void* address) noexcept nogil


cdef struct _Coordinate:
    # Everything a lazy single-output step reads or writes at one coordinate,
    # side by side: one cache line per random access instead of four.
    double coef
    double direction
    double work
    int64_t last


# Rows --------------------------------------------------------------------------


cdef inline void _row_bounds(const index_t* indptr, Py_ssize_t n_indptr,
                             Py_ssize_t n_features, int64_t i, Py_ssize_t* first,
                             Py_ssize_t* column, Py_ssize_t* length) noexcept nogil:
    """(first value, first column, length) of sample i's row."""
    if n_indptr == 0:
        first[0] = i * n_features
        column[0] = 0
        length[0] = n_features
    else:
        first[0] = <Py_ssize_t>indptr[i]
        column[0] = <Py_ssize_t>indptr[i]
        length[0] = <Py_ssize_t>(indptr[i + 1] - indptr[i])


cdef inline void _margins(const floating* data, const index_t* indices,
                          Py_ssize_t first, Py_ssize_t column, Py_ssize_t length,
                          const double* coef, const double* intercept,
                          Py_ssize_t n_outputs, double* out) noexcept nogil:
    """out = x_i @ coef + intercept (intercept first, then the row in order)."""
    cdef Py_ssize_t j, kk, k
    cdef double value
    if n_outputs == 1:
        value = intercept[0]
        for j in range(length):
            value += <double>data[first + j] * coef[<Py_ssize_t>indices[column + j]]
        out[0] = value
        return
    for kk in range(n_outputs):
        out[kk] = intercept[kk]
    for j in range(length):
        value = <double>data[first + j]
        k = <Py_ssize_t>indices[column + j] * n_outputs
        for kk in range(n_outputs):
            out[kk] += value * coef[k + kk]


cdef inline void _scatter(const floating* data, const index_t* indices,
                          Py_ssize_t first, Py_ssize_t column, Py_ssize_t length,
                          const double* weight, Py_ssize_t n_outputs,
                          double* out) noexcept nogil:
    """out[columns] += outer(x_i, weight)."""
    cdef Py_ssize_t j, kk, k
    cdef double value, w
    if n_outputs == 1:
        w = weight[0]
        for j in range(length):
            out[<Py_ssize_t>indices[column + j]] += <double>data[first + j] * w
        return
    for j in range(length):
        value = <double>data[first + j]
        k = <Py_ssize_t>indices[column + j] * n_outputs
        for kk in range(n_outputs):
            out[k + kk] += value * weight[kk]


cdef double _loss_and_derivative(int loss, const double* margins,
                                 Py_ssize_t n_outputs, double target,
                                 double* derivative) noexcept nogil:
    """The loss of one sample; writes dloss/dm into ``derivative``."""
    cdef double residual, z, e, value, top, total
    cdef Py_ssize_t kk, label
    if loss == LOSS_SQUARED:
        residual = margins[0] - target
        derivative[0] = residual
        return 0.5 * residual * residual
    if loss == LOSS_LOGISTIC:
        z = target * margins[0]
        if z > 0:
            e = exp(-z)
            value = log1p(e)
            derivative[0] = -target * e / (1.0 + e)
        else:
            value = -z + log1p(exp(z))
            derivative[0] = -target / (1.0 + exp(z))
        return value
    top = margins[0]
    for kk in range(1, n_outputs):
        if margins[kk] > top:
            top = margins[kk]
    total = 0.0
    for kk in range(n_outputs):
        derivative[kk] = exp(margins[kk] - top)
        total += derivative[kk]
    for kk in range(n_outputs):
        derivative[kk] /= total
    label = <Py_ssize_t>target
    derivative[label] -= 1.0
    return log(total) + top - margins[label]


# linear_pass -------------------------------------------------------------------


cdef double _pass(int loss, const floating* data, const index_t* indices,
                  const index_t* indptr, Py_ssize_t n_indptr, const double* y,
                  const double* coef, const double* intercept,
                  Py_ssize_t n_features, Py_ssize_t n_outputs,
                  const int64_t* samples, Py_ssize_t n_samples,
                  double* derivatives, double* grad, double* grad_intercept,
                  double* margins) noexcept nogil:
    cdef Py_ssize_t j, kk, first, column, length
    cdef int64_t i
    cdef double total = 0.0
    cdef double* d
    for j in range(n_samples):
        i = samples[j]
        d = derivatives + j * n_outputs
        _row_bounds(indptr, n_indptr, n_features, i, &first, &column, &length)
        _margins(data, indices, first, column, length, coef, intercept,
                 n_outputs, margins)
        total += _loss_and_derivative(loss, margins, n_outputs, y[i], d)
        for kk in range(n_outputs):
            grad_intercept[kk] += d[kk]
        _scatter(data, indices, first, column, length, d, n_outputs, grad)
    return total


def linear_pass(int loss, const floating[::1] data not None,
                const index_t[::1] indices not None,
                const index_t[::1] indptr not None, const double[::1] y not None,
                const double[:, ::1] coef not None,
                const double[::1] intercept not None,
                const int64_t[::1] samples not None,
                double[:, ::1] derivatives not None, double[:, ::1] grad not None,
                double[::1] grad_intercept not None):
    """One pass over ``samples`` at the point (coef, intercept).

    For the j-th sample i: ``derivatives[j] = dloss/dm (m_i)``, then
    ``grad += outer(x_i, derivatives[j])`` and
    ``grad_intercept += derivatives[j]`` (accumulated: the caller zeroes
    them and divides by the number of samples).  Returns the sum of the
    samples' losses.  O(sum of nnz(x_i) * K); reads each row once, so moves
    about sum nnz(x_i) * (itemsize + index size + 2 * 8 * K) bytes.
    """
    cdef Py_ssize_t n_features = coef.shape[0], n_outputs = coef.shape[1]
    cdef Py_ssize_t n_samples = samples.shape[0]
    cdef double total
    cdef double* margins
    if n_samples == 0:
        return 0.0
    margins = <double*>malloc(max(n_outputs, 1) * sizeof(double))
    if margins == NULL:
        raise MemoryError()
    with nogil:
        total = _pass(
            loss, &data[0] if data.shape[0] else NULL,
            &indices[0] if indices.shape[0] else NULL,
            &indptr[0] if indptr.shape[0] else NULL, indptr.shape[0],
            &y[0] if y.shape[0] else NULL,
            &coef[0, 0] if n_features else NULL, &intercept[0], n_features,
            n_outputs, &samples[0], n_samples, &derivatives[0, 0],
            &grad[0, 0] if n_features else NULL, &grad_intercept[0], margins)
    free(margins)
    return total


# prox_step ---------------------------------------------------------------------


cdef inline double _soft(double z, double threshold) noexcept nogil:
    """z - threshold above it, z + threshold below -threshold, else 0 (NaN
    included), without a branch: the solvers' soft threshold of
    pyx/shrink.h (+0.0 where the prox's gives -0.0, as the numba solvers)."""
    return kernels_soft_solver(z, threshold)


cdef void _prox(int penalty, double* coef, Py_ssize_t n_features,
                Py_ssize_t n_outputs, double step, double ridge, double l1,
                const int64_t* group_ptr, Py_ssize_t n_group_ptr,
                const double* group_weights) noexcept nogil:
    cdef double scale = 1.0 / (1.0 + step * ridge)
    cdef double total, norm, factor, cutoff, w, threshold
    cdef Py_ssize_t g, k, n = n_features * n_outputs
    if penalty == PENALTY_GROUP_L1:
        for g in range(n_group_ptr - 1):
            total = 0.0
            for k in range(group_ptr[g] * n_outputs, group_ptr[g + 1] * n_outputs):
                total += coef[k] * coef[k]
            norm = sqrt(total)
            factor = 0.0
            if norm > 0.0:
                factor = 1.0 - step * l1 * group_weights[g] / norm
                if not factor > 0.0:  # max(0.0, factor), as Numba's max
                    factor = 0.0
            factor = factor * scale
            for k in range(group_ptr[g] * n_outputs, group_ptr[g + 1] * n_outputs):
                coef[k] *= factor
        return
    if penalty == PENALTY_L1:
        threshold = step * l1
        for k in range(n):
            coef[k] = _soft(coef[k], threshold) * scale
    elif penalty == PENALTY_L0:
        cutoff = sqrt(2.0 * step * l1 * (1.0 + step * ridge))
        for k in range(n):
            w = coef[k]
            if fabs(w) <= cutoff:
                w = 0.0
            coef[k] = w * scale
    else:
        for k in range(n):
            coef[k] = coef[k] * scale


def prox_step(int penalty, double[:, ::1] coef not None, double step,
              double ridge, double l1, const int64_t[::1] group_ptr not None,
              const double[::1] group_weights not None):
    """coef <- prox_{step * h}(coef), in place: ``shrink(coef) / (1 + step *
    ridge)`` with ``shrink`` the identity (PENALTY_NONE), the soft threshold
    at ``step * l1`` (PENALTY_L1), the group shrink of the rows
    ``group_ptr[g]:group_ptr[g + 1]`` at ``step * l1 * group_weights[g]``
    (PENALTY_GROUP_L1) or the hard threshold at ``sqrt(2 * step * l1 * (1 +
    step * ridge))`` (PENALTY_L0).  O(n_features * K); reads and writes coef
    once (twice for the group l1: the norm, then the scaling).
    """
    cdef Py_ssize_t n_features = coef.shape[0], n_outputs = coef.shape[1]
    if n_features == 0:
        return
    with nogil:
        _prox(penalty, &coef[0, 0], n_features, n_outputs, step, ridge, l1,
              &group_ptr[0] if group_ptr.shape[0] else NULL, group_ptr.shape[0],
              &group_weights[0] if group_weights.shape[0] else NULL)


# linear_epoch ------------------------------------------------------------------


cdef inline double _affine_power(double w, double s, double steps, double shrink,
                                double log_shrink) noexcept nogil:
    """``steps`` applications of w -> (w - s) / (1 + shrink): the geometric
    sum of (1 + shrink)^-j for j = 1..steps is -expm1(-steps*log_shrink) /
    shrink, exact to rounding even for a tiny shrink."""
    if shrink == 0.0:
        return w - steps * s
    return exp(-steps * log_shrink) * w - s * (-expm1(-steps * log_shrink)) / shrink


cdef inline int64_t _steps_before_crossing(double w, double s, int64_t steps,
                                           double shrink,
                                           double log_shrink) noexcept nogil:
    """A number of steps of the affine map w -> (w - s) / (1 + shrink) that
    keeps w on its side of 0 (w != 0 and s of the sign of w, the drift
    towards 0), a little under the largest such number so that rounding
    cannot take it past, and less than ``steps``; 0 when unsure.

    With u = |w| and v = |s|, the step from u_m stays affine (u_{m+1} > 0)
    while u_m > v.  Without the ridge, u_m = u - m v, so that holds for
    m < u / v - 1; with it, u_m + v / r = (u + v / r) / (1 + r)^m (r =
    shrink), so for m < log1p((u - v) / (v + v / r)) / log1p(r)."""
    cdef double u = fabs(w), v = fabs(s), m
    if not (v > 0.0 and u > v):
        return 0
    if shrink == 0.0:
        m = (u - v) / v
    else:
        m = log1p((u - v) / (v + v / shrink)) / log_shrink
    # Stay 2 steps and 1e-9 relative under the exact count (whose rounding
    # is a few ulps of m), the remaining steps are taken exactly.
    m = m * (1.0 - 1e-9) - 2.0
    if not m >= 1.0:  # also NaN
        return 0
    if m >= <double>(steps - 1):
        return steps - 1
    return <int64_t>m


cdef double _advance(double w, double shift, double threshold, double shrink,
                     double log_shrink, int64_t steps) noexcept nogil:
    """``steps`` applications of w <- soft(w - shift, threshold) / (1 +
    shrink) (``log_shrink`` is log1p(shrink)): in closed form while the sign
    of w stays the same (the map is affine there), and across the (at most
    one: the map is monotone) sign change by a closed-form jump to a few
    steps before it, then exact steps.  O(1) per call."""
    cdef double divisor = 1.0 + shrink
    cdef double s, result
    cdef int64_t jump
    cdef bint positive
    while steps > 0:
        if w != w or steps == 1:
            return _soft(w - shift, threshold) / divisor
        if w == 0.0:
            if fabs(shift) <= threshold:
                return 0.0
            w = _soft(-shift, threshold) / divisor
            steps -= 1
            continue
        # Same sign for all the steps: w -> (w - s) / divisor, affine.
        if w > 0.0:
            s = shift + threshold
        else:
            s = shift - threshold
        result = _affine_power(w, s, <double>steps, shrink, log_shrink)
        if threshold == 0.0 or ((result > 0.0) == (w > 0.0) and result != 0.0):
            return result  # (without the l1 term the map is affine everywhere)
        # The sign changes on the way.  Jump in closed form to (just before)
        # the last step on this side, then step exactly until it has changed.
        positive = w > 0.0
        jump = _steps_before_crossing(w, s, steps, shrink, log_shrink)
        if jump > 0:
            result = _affine_power(w, s, <double>jump, shrink, log_shrink)
            if (result > 0.0) == positive and result != 0.0:
                w = result
                steps -= jump
        while steps > 0 and w != 0.0 and (w > 0.0) == positive:
            w = _soft(w - shift, threshold) / divisor
            steps -= 1
    return w


cdef inline double _catch_up_one(double w, double shift, double threshold,
                                 double shrink, double log_shrink,
                                 int64_t steps) noexcept nogil:
    """_advance, with its common cases inline and computed as it computes
    them: one step (a coordinate read by consecutive samples), a coordinate
    at 0 that stays there (most of them, under l1), and, without the ridge,
    one that keeps its sign."""
    cdef double s, result
    if steps == 1:
        return _soft(w - shift, threshold) / (1.0 + shrink)
    if w == 0.0:
        if fabs(shift) <= threshold:
            return 0.0
    elif shrink == 0.0 and w == w:
        s = shift + copysign(threshold, w)  # (shift - threshold for w < 0)
        result = w - <double>steps * s
        if threshold == 0.0 or ((result > 0.0) == (w > 0.0) and result != 0.0):
            return result
    return _advance(w, shift, threshold, shrink, log_shrink, steps)


cdef inline void _catch_up(int method, Py_ssize_t k, int64_t time, double* coef,
                           const double* direction, double cm, double* previous,
                           int64_t* last, Py_ssize_t n_outputs, double step,
                           double threshold, double shrink,
                           double log_shrink) noexcept nogil:
    """Bring row k of coef (and of previous, for SARAH) to step ``time``."""
    cdef int64_t steps = time - last[k]
    cdef double scale, shift, before
    cdef Py_ssize_t kk, at
    if steps <= 0:
        return
    scale = 1.0 if method == METHOD_RECURSIVE else cm
    for kk in range(n_outputs):
        at = k * n_outputs + kk
        shift = step * scale * direction[at]
        if method == METHOD_RECURSIVE:
            before = _advance(coef[at], shift, threshold, shrink, log_shrink, steps - 1)
            previous[at] = before
            coef[at] = _advance(before, shift, threshold, shrink, log_shrink, 1)
        else:
            coef[at] = _catch_up_one(coef[at], shift, threshold, shrink, log_shrink,
                                     steps)
    last[k] = time


cdef void _batch_weights(int method, int loss, const floating* data,
                         const index_t* indices, const index_t* indptr,
                         Py_ssize_t n_indptr, const double* y, const double* coef,
                         const double* intercept, Py_ssize_t n_features,
                         Py_ssize_t n_outputs, const int64_t* batch,
                         Py_ssize_t size, double cg, double cs,
                         const double* anchor, const double* anchor_intercept,
                         const double* table, const double* previous,
                         const double* previous_intercept, double* margins,
                         double* scratch, double* current,
                         double* weights) noexcept nogil:
    """Per sample of the batch: ``current`` = derivative at coef, and
    ``weights`` = the sample's share of the sparse part of v."""
    cdef Py_ssize_t j, kk, first, column, length
    cdef int64_t i
    cdef double* cur
    cdef double* wj
    for j in range(size):
        i = batch[j]
        cur = current + j * n_outputs
        wj = weights + j * n_outputs
        _row_bounds(indptr, n_indptr, n_features, i, &first, &column, &length)
        _margins(data, indices, first, column, length, coef, intercept,
                 n_outputs, margins)
        _loss_and_derivative(loss, margins, n_outputs, y[i], cur)
        if method == METHOD_TABLE:
            for kk in range(n_outputs):
                scratch[kk] = table[i * n_outputs + kk]
        elif method == METHOD_SNAPSHOT and cs == 0.0:
            for kk in range(n_outputs):  # plain SGD: no snapshot term to compute
                scratch[kk] = 0.0
        elif method == METHOD_SNAPSHOT:
            _margins(data, indices, first, column, length, anchor,
                     anchor_intercept, n_outputs, margins)
            _loss_and_derivative(loss, margins, n_outputs, y[i], scratch)
        else:
            _margins(data, indices, first, column, length, previous,
                     previous_intercept, n_outputs, margins)
            _loss_and_derivative(loss, margins, n_outputs, y[i], scratch)
        for kk in range(n_outputs):
            if method == METHOD_RECURSIVE:
                wj[kk] = (cur[kk] - scratch[kk]) / <double>size
            else:
                wj[kk] = (cg * cur[kk] + cs * scratch[kk]) / <double>size


cdef struct _Buffers:
    double* margins
    double* scratch
    double* current
    double* weights
    double* partial_intercept
    _Coordinate* records  # for _table_epoch_single, else NULL


cdef void _table_epoch_single(int loss, const floating* data,
                              const index_t* indices, const index_t* indptr,
                              const double* y, double* coef, double* intercept,
                              Py_ssize_t n_features, bint fit_intercept,
                              const int64_t* samples, Py_ssize_t n_samples,
                              double step, double threshold, double shrink,
                              double log_shrink, double cg, double cs, double cm,
                              double* direction, double* direction_intercept,
                              double* table, Py_ssize_t n_table, int64_t* last,
                              _Coordinate* records) noexcept nogil:
    """_epoch's lazy path for METHOD_TABLE (SAGA and its lambda-estimator)
    on CSR data with one output and one sample per step: the same
    operations on the same values in the same order, so the same iterates
    bit for bit, in three passes over a row instead of six (catch-up and
    margin; the sparse part of v into work; coef step, work reset and the
    table's change into direction), on one record per coordinate, with the
    next sample's row prefetched.  Repeated columns in a row are handled as
    _epoch handles them: work collects every entry, the step reads it once
    (at the first entry, before direction takes any of the row's change)."""
    cdef double divisor = 1.0 + shrink
    cdef double margin, current, weight, change, z, value
    cdef Py_ssize_t j, k, first, length, t, ahead
    cdef int64_t i
    cdef _Coordinate* r
    for k in range(n_features):
        records[k].coef = coef[k]
        records[k].direction = direction[k]
        records[k].work = 0.0
        records[k].last = 0
    for t in range(n_samples):
        i = samples[t]
        first = <Py_ssize_t>indptr[i]
        length = <Py_ssize_t>(indptr[i + 1] - indptr[i])
        # Ask for the records of the next sample's columns, and for the
        # row (values and indices) of the one after: random accesses into
        # an array larger than the L2 cache and a random place in the data,
        # asked for a sample before they are read.  (Written out here: GCC
        # deletes a call to a static function that only prefetches.)
        if t + 2 < n_samples:
            j = <Py_ssize_t>indptr[samples[t + 2]]
            ahead = <Py_ssize_t>indptr[samples[t + 2] + 1]
            while j < ahead:  # a cache line at a time
                kernels_prefetch(&data[j])
                kernels_prefetch(&indices[j])
                j += 64 // sizeof(floating)
        if t + 1 < n_samples:
            for j in range(<Py_ssize_t>indptr[samples[t + 1]],
                           <Py_ssize_t>indptr[samples[t + 1] + 1]):
                kernels_prefetch(&records[<Py_ssize_t>indices[j]])
        margin = intercept[0]
        for j in range(first, first + length):
            r = &records[<Py_ssize_t>indices[j]]
            if r.last != t:
                r.coef = _catch_up_one(r.coef, step * cm * r.direction, threshold,
                                       shrink, log_shrink, t - r.last)
                r.last = t
            margin += <double>data[j] * r.coef
        _loss_and_derivative(loss, &margin, 1, y[i], &current)
        weight = cg * current + cs * table[i]
        for j in range(first, first + length):
            records[<Py_ssize_t>indices[j]].work += <double>data[j] * weight
        change = (current - table[i]) / <double>n_table
        table[i] = current
        for j in range(first, first + length):
            r = &records[<Py_ssize_t>indices[j]]
            value = <double>data[j]
            if r.last == t:
                z = _soft(r.coef - step * (r.work + cm * r.direction), threshold)
                r.coef = z / divisor if shrink != 0.0 else z  # (z / 1.0 == z)
                r.work = 0.0
                r.last = t + 1
            r.direction += value * change
        if fit_intercept:
            # (0.0 + weight: the general path's partial sum, -0.0 included)
            intercept[0] -= step * ((0.0 + weight) + cm * direction_intercept[0])
        direction_intercept[0] += change
    for k in range(n_features):
        r = &records[k]
        if r.last != n_samples:
            r.coef = _catch_up_one(r.coef, step * cm * r.direction, threshold,
                                   shrink, log_shrink, n_samples - r.last)
        coef[k] = r.coef
        direction[k] = r.direction
        last[k] = n_samples


cdef void _epoch(int method, int loss, int penalty, const floating* data,
                 const index_t* indices, const index_t* indptr,
                 Py_ssize_t n_indptr, const double* y, double* coef,
                 double* intercept, Py_ssize_t n_features, Py_ssize_t n_outputs,
                 bint fit_intercept, const int64_t* samples, Py_ssize_t n_samples,
                 Py_ssize_t batch_size, double step, double shrink_step,
                 double ridge, double l1,
                 const int64_t* group_ptr, Py_ssize_t n_group_ptr,
                 const double* group_weights, double cg, double cs, double cm,
                 const double* anchor, const double* anchor_intercept,
                 double* direction, double* direction_intercept, double* table,
                 Py_ssize_t n_table, double* previous, double* previous_intercept,
                 double* work, int64_t* last, _Buffers* buf) noexcept nogil:
    cdef bint lazy = n_indptr > 0 and (penalty == PENALTY_NONE or penalty == PENALTY_L1)
    cdef double threshold = shrink_step * l1 if penalty == PENALTY_L1 else 0.0
    cdef double shrink = shrink_step * ridge
    cdef double log_shrink = log1p(shrink)
    cdef double divisor = 1.0 + shrink
    cdef double value, z
    cdef double* margins = buf.margins
    cdef double* scratch = buf.scratch
    cdef double* current = buf.current
    cdef double* weights = buf.weights
    cdef double* partial_intercept = buf.partial_intercept
    cdef double* cur
    cdef double* wj
    cdef int64_t time = 0
    cdef int64_t i
    cdef const int64_t* batch
    cdef Py_ssize_t n = n_features * n_outputs
    cdef Py_ssize_t start, size, j, jj, k, kk, at, first, column, length
    if buf.records != NULL:
        _table_epoch_single(loss, data, indices, indptr, y, coef, intercept,
                            n_features, fit_intercept, samples, n_samples, step,
                            threshold, shrink, log_shrink, cg, cs, cm, direction,
                            direction_intercept, table, n_table, last, buf.records)
        return
    if lazy:
        for k in range(n_features):
            last[k] = 0
    if method == METHOD_RECURSIVE:
        for kk in range(n_outputs):
            previous_intercept[kk] = intercept[kk]
            if fit_intercept:
                intercept[kk] -= step * direction_intercept[kk]
        if lazy:
            time = 1
        else:
            for k in range(n):
                previous[k] = coef[k]
            for k in range(n):
                coef[k] -= step * direction[k]
            _prox(penalty, coef, n_features, n_outputs, shrink_step, ridge, l1,
                  group_ptr, n_group_ptr, group_weights)
    start = 0
    while start < n_samples:
        batch = samples + start
        size = min(start + batch_size, n_samples) - start
        if lazy:
            for j in range(size):
                _row_bounds(indptr, n_indptr, n_features, batch[j], &first,
                            &column, &length)
                for jj in range(length):
                    _catch_up(method, <Py_ssize_t>indices[column + jj], time, coef,
                              direction, cm, previous, last, n_outputs, step,
                              threshold, shrink, log_shrink)
        _batch_weights(method, loss, data, indices, indptr, n_indptr, y, coef,
                       intercept, n_features, n_outputs, batch, size, cg, cs,
                       anchor, anchor_intercept, table, previous,
                       previous_intercept, margins, scratch, current, weights)
        for kk in range(n_outputs):
            partial_intercept[kk] = 0.0
        for j in range(size):
            _row_bounds(indptr, n_indptr, n_features, batch[j], &first, &column,
                        &length)
            wj = weights + j * n_outputs
            for kk in range(n_outputs):
                partial_intercept[kk] += wj[kk]
            _scatter(data, indices, first, column, length, wj, n_outputs, work)
        if lazy:
            for j in range(size):
                _row_bounds(indptr, n_indptr, n_features, batch[j], &first,
                            &column, &length)
                for jj in range(length):
                    k = <Py_ssize_t>indices[column + jj]
                    if last[k] != time:
                        continue
                    for kk in range(n_outputs):
                        at = k * n_outputs + kk
                        if method == METHOD_RECURSIVE:
                            direction[at] += work[at]
                            previous[at] = coef[at]
                            z = coef[at] - step * direction[at]
                        else:
                            z = coef[at] - step * (work[at] + cm * direction[at])
                        coef[at] = _soft(z, threshold) / divisor
                        work[at] = 0.0
                    last[k] = time + 1
        else:
            if method == METHOD_RECURSIVE:
                for k in range(n):
                    previous[k] = coef[k]
                for k in range(n):
                    direction[k] += work[k]
                    coef[k] -= step * direction[k]
                    work[k] = 0.0
            else:
                for k in range(n):
                    coef[k] -= step * (work[k] + cm * direction[k])
                    work[k] = 0.0
            _prox(penalty, coef, n_features, n_outputs, shrink_step, ridge, l1,
                  group_ptr, n_group_ptr, group_weights)
        for kk in range(n_outputs):
            if method == METHOD_RECURSIVE:
                direction_intercept[kk] += partial_intercept[kk]
                previous_intercept[kk] = intercept[kk]
                if fit_intercept:
                    intercept[kk] -= step * direction_intercept[kk]
            elif fit_intercept:
                intercept[kk] -= step * (partial_intercept[kk]
                                         + cm * direction_intercept[kk])
        if method == METHOD_TABLE:
            for j in range(size):
                i = batch[j]
                cur = current + j * n_outputs
                _row_bounds(indptr, n_indptr, n_features, i, &first, &column,
                            &length)
                for kk in range(n_outputs):
                    at = i * n_outputs + kk
                    scratch[kk] = (cur[kk] - table[at]) / <double>n_table
                    table[at] = cur[kk]
                    direction_intercept[kk] += scratch[kk]
                _scatter(data, indices, first, column, length, scratch, n_outputs,
                         direction)
        time += 1
        start += size
    if lazy:
        for k in range(n_features):
            _catch_up(method, k, time, coef, direction, cm, previous, last,
                      n_outputs, step, threshold, shrink, log_shrink)


def linear_epoch(int method, int loss, int penalty,
                 const floating[::1] data not None,
                 const index_t[::1] indices not None,
                 const index_t[::1] indptr not None, const double[::1] y not None,
                 double[:, ::1] coef not None, double[::1] intercept not None,
                 bint fit_intercept, const int64_t[::1] samples not None,
                 Py_ssize_t batch_size, double step, double shrink_step,
                 double ridge, double l1, const int64_t[::1] group_ptr not None,
                 const double[::1] group_weights not None, double cg, double cs,
                 double cm, const double[:, ::1] anchor not None,
                 const double[::1] anchor_intercept not None,
                 double[:, ::1] direction not None,
                 double[::1] direction_intercept not None,
                 double[:, ::1] table not None, double[:, ::1] previous not None,
                 double[::1] previous_intercept not None,
                 double[:, ::1] work not None, int64_t[::1] last not None):
    """One epoch of proximal variance-reduced steps over ``samples``
    (the reference's docstring has the mathematics).

    ``samples`` is cut into consecutive mini-batches of ``batch_size``; each
    step moves ``coef <- prox_{shrink_step*h}(coef - step*v)`` and the intercept by
    ``-step*v_intercept``, with v formed by METHOD_SNAPSHOT (SVRG family,
    reference derivatives at ``anchor``), METHOD_TABLE (SAGA family, the
    ``table`` of last derivatives) or METHOD_RECURSIVE (SARAH, ``direction``
    updated recursively; ``previous`` is workspace), weighted by (cg, cs,
    cm).  ``work`` must be zero on entry (it is left zero); ``last`` is
    workspace.

    On CSR data with no penalty or the l1 penalty (ridge allowed), the dense
    part of v and the prox are applied lazily: a coordinate is brought up
    to date only when a sample reads it (``_advance``, closed form while its
    sign holds), so a step costs O(nnz(x_I) * K) instead of
    O(n_features * K), plus one O(n_features * K) catch-up at the end of
    the epoch.  On dense data, or with the group l1 or l0 penalty, every
    step updates every coordinate.  Per sample it reads the row two or
    three times (margins at the current point and at the reference, then
    the scatter) and, lazily, touches each of its coordinates' coef, work
    and direction entries a constant number of times.  (METHOD_TABLE with
    one output and ``batch_size`` 1 on CSR data without the group l1 or l0
    penalty: ``_table_epoch_single``, same iterates, three passes over the
    row, one record per coordinate; it allocates n_features * 32 bytes for
    the epoch.)
    """
    cdef Py_ssize_t n_features = coef.shape[0], n_outputs = coef.shape[1]
    cdef Py_ssize_t n_samples = samples.shape[0], rows, width
    cdef bint records
    cdef _Buffers buf
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = min(batch_size, max(n_samples, 1))
    width = max(n_outputs, 1)
    buf.margins = <double*>malloc(width * sizeof(double))
    buf.scratch = <double*>malloc(width * sizeof(double))
    buf.partial_intercept = <double*>malloc(width * sizeof(double))
    buf.current = <double*>malloc(rows * width * sizeof(double))
    buf.weights = <double*>malloc(rows * width * sizeof(double))
    # SAGA's usual call (one output, one sample per step, lazy updates) takes
    # _table_epoch_single, on records
    records = (method == METHOD_TABLE and n_outputs == 1 and batch_size == 1
               and indptr.shape[0] > 0
               and (penalty == PENALTY_NONE or penalty == PENALTY_L1))
    buf.records = NULL
    if records:
        buf.records = <_Coordinate*>malloc(max(n_features, 1) * sizeof(_Coordinate))
    try:
        if (buf.margins == NULL or buf.scratch == NULL or buf.current == NULL
                or buf.weights == NULL or buf.partial_intercept == NULL
                or (records and buf.records == NULL)):
            raise MemoryError()
        with nogil:
            _epoch(method, loss, penalty,
                   &data[0] if data.shape[0] else NULL,
                   &indices[0] if indices.shape[0] else NULL,
                   &indptr[0] if indptr.shape[0] else NULL, indptr.shape[0],
                   &y[0] if y.shape[0] else NULL,
                   &coef[0, 0] if n_features else NULL,
                   &intercept[0] if intercept.shape[0] else NULL,
                   n_features, n_outputs, fit_intercept,
                   &samples[0] if n_samples else NULL, n_samples, batch_size,
                   step, shrink_step, ridge, l1,
                   &group_ptr[0] if group_ptr.shape[0] else NULL,
                   group_ptr.shape[0],
                   &group_weights[0] if group_weights.shape[0] else NULL,
                   cg, cs, cm,
                   &anchor[0, 0] if anchor.shape[0] else NULL,
                   &anchor_intercept[0] if anchor_intercept.shape[0] else NULL,
                   &direction[0, 0] if direction.shape[0] else NULL,
                   &direction_intercept[0] if direction_intercept.shape[0] else NULL,
                   &table[0, 0] if table.shape[0] else NULL, table.shape[0],
                   &previous[0, 0] if previous.shape[0] else NULL,
                   &previous_intercept[0] if previous_intercept.shape[0] else NULL,
                   &work[0, 0] if work.shape[0] else NULL,
                   &last[0] if last.shape[0] else NULL, &buf)
    finally:
        free(buf.margins)
        free(buf.scratch)
        free(buf.partial_intercept)
        free(buf.current)
        free(buf.weights)
        free(buf.records)
