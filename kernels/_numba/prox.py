"""Proximal-operator kernels, compiled with Numba.

Same names, arguments and semantics as ``kernels._reference.prox`` (the
specification, with the input contract these kernels trust), for float32 and
float64.  Streaming kernels compute in the dtype of ``x``; group norms and
l1-ball sums accumulate in float64.

``out`` may be ``x``.  LLVM cannot prove two arrays distinct, so it guards a
vectorised loop with an overlap test and runs the scalar loop when they
overlap, which includes ``out is x``.  Each streaming kernel therefore has an
in-place loop that writes through ``x`` itself, which vectorises.
"""

import math

import numpy as np

from kernels._numba._jit import kernel


@kernel(inline="always")
def _same_buffer(a, b):
    return a.ctypes.data == b.ctypes.data


@kernel(inline="always")
def _soft(v, threshold):
    """copysign(max(|v| - threshold, 0), v), NaN-propagating, branch-free."""
    shrunk = abs(v) - threshold
    zero = type(shrunk)(0)
    return math.copysign(zero if shrunk < zero else shrunk, v)


@kernel(inline="always")
def _group_factor(sum_squares, threshold):
    """max(0, 1 - threshold / norm) in float64, 0 when the norm is 0 or NaN."""
    norm = math.sqrt(sum_squares)
    if not norm > 0.0:
        return 0.0
    factor = 1.0 - np.float64(threshold) / norm
    return 0.0 if factor < 0.0 else factor


@kernel
def soft_threshold(x, threshold, scale, out):
    """out = scale * sign(x) * max(|x| - threshold, 0).  O(n), moves
    2 * n * itemsize bytes.  Spec: kernels._reference.prox."""
    if _same_buffer(x, out):
        for i in range(x.size):
            x[i] = _soft(x[i], threshold) * scale
    else:
        for i in range(x.size):
            out[i] = _soft(x[i], threshold) * scale


@kernel
def soft_threshold_each(x, threshold, scale, out):
    """As soft_threshold with one threshold per coordinate.  O(n), moves
    3 * n * itemsize bytes.  Spec: kernels._reference.prox."""
    if _same_buffer(x, out):
        for i in range(x.size):
            x[i] = _soft(x[i], threshold[i]) * scale
    else:
        for i in range(x.size):
            out[i] = _soft(x[i], threshold[i]) * scale


@kernel
def hard_threshold(x, cutoff, out):
    """out = x * (|x| > cutoff).  O(n), moves 2 * n * itemsize bytes.
    Spec: kernels._reference.prox."""
    # Multiplying by 1 or 0, rather than choosing x or x * 0, keeps the
    # in-place store unconditional, so that loop vectorises too.
    real = type(cutoff)  # float32 or float64, as x
    if _same_buffer(x, out):
        for i in range(x.size):
            x[i] = x[i] * real(abs(x[i]) > cutoff)
    else:
        for i in range(x.size):
            out[i] = x[i] * real(abs(x[i]) > cutoff)


@kernel
def keep_largest(x, cutoff, n_ties, out):
    """out = x where |x| > cutoff and at the first n_ties |x| == cutoff, else
    x * 0.  One pass, O(n), 2 * n * itemsize bytes.  Spec: kernels._reference.prox."""
    zero = type(cutoff)(0)
    ties = 0
    for i in range(x.size):
        v = x[i]
        magnitude = abs(v)
        if magnitude > cutoff:
            out[i] = v
        elif magnitude == cutoff and ties < n_ties:
            out[i] = v
            ties += 1
        else:
            out[i] = v * zero


@kernel(inline="always")
def _sum_soft_squares(x, l1):
    """sum(soft(x, l1) ** 2) in float64; the square of a float32 is exact."""
    total = 0.0
    if l1 == 0:
        for i in range(x.size):
            y = np.float64(x[i])
            total += y * y
    else:
        for i in range(x.size):
            y = np.float64(_soft(x[i], l1))
            total += y * y
    return total


@kernel(inline="always")
def _scale_soft(x, l1, factor, out):
    """out = soft(x, l1) * factor, elementwise."""
    if l1 == 0:
        for i in range(x.size):
            out[i] = x[i] * factor
    else:
        for i in range(x.size):
            out[i] = _soft(x[i], l1) * factor


@kernel(fastmath={"reassoc", "contract"})
def group_shrink(x, l1, group_ptr, thresholds, out):
    """out_g = y * max(0, 1 - thresholds[g] / ||y||_2), y = soft(x_g, l1),
    norms in float64.  O(n), 2 * n * itemsize bytes (a group's second read
    hits cache).  Spec: kernels._reference.prox."""
    # Groups are taken as slices so that loop indices start at 0: Numba then
    # drops its negative-index wraparound and LLVM vectorises the loops.  The
    # float64 sum of squares vectorises because it may be reassociated (and
    # fused into FMAs), which changes its rounding, not its NaN/inf results.
    in_place = _same_buffer(x, out)
    for g in range(group_ptr.size - 1):
        start = group_ptr[g]
        stop = group_ptr[g + 1]
        xg = x[start:stop]
        factor = _group_factor(_sum_soft_squares(xg, l1), thresholds[g])
        factor = x.dtype.type(factor)
        if in_place:
            _scale_soft(xg, l1, factor, xg)
        else:
            _scale_soft(xg, l1, factor, out[start:stop])


@kernel
def group_shrink_cols(x, l1, thresholds, out):
    """group_shrink with the columns of the 2-D x as groups, norms in a float64
    scratch.  O(m n), streams x twice: 3 * m * n * itemsize bytes (2 if
    cached).  Spec: kernels._reference.prox."""
    m, n = x.shape
    sum_squares = np.zeros(n, dtype=np.float64)
    for i in range(m):
        for j in range(n):
            y = np.float64(_soft(x[i, j], l1))
            sum_squares[j] += y * y
    factors = np.empty_like(thresholds)
    for j in range(n):
        factors[j] = _group_factor(sum_squares[j], thresholds[j])
    if _same_buffer(x, out):
        for i in range(m):
            for j in range(n):
                x[i, j] = _soft(x[i, j], l1) * factors[j]
    else:
        for i in range(m):
            for j in range(n):
                out[i, j] = _soft(x[i, j], l1) * factors[j]


@kernel
def l1_ball_threshold(x, radius):
    """tau >= 0 with sum(max(|x| - tau, 0)) == radius (0.0 if ||x||_1 <= radius).
    Condat (2016), O(n) expected, in float64; reads x twice and an 8n-byte
    scratch about twice.  Spec: kernels._reference.prox."""
    # Where the reference raises IndexError (no rho found), this returns NaN when
    # x holds NaN or inf (and radius is finite); max|x| when radius is 0 or
    # below the rounding of the largest entries.
    n = x.size
    a = np.float64(radius)
    total = 0.0
    largest = 0.0
    for i in range(n):
        y = abs(np.float64(x[i]))
        total += y
        largest = max(largest, y)
    if total <= a:
        return 0.0
    if not math.isfinite(total):
        return math.nan
    if a <= 0.0:
        return largest
    # aux[:start] holds the entries set aside in the first pass (v-tilde in
    # the paper), aux[start:stop] the current candidate set v; tau is the
    # threshold for v, kept as a running mean.
    aux = np.empty(n, dtype=np.float64)
    aux[0] = abs(np.float64(x[0]))
    tau = aux[0] - a
    start = 0
    stop = 1
    for i in range(1, n):
        y = abs(np.float64(x[i]))
        if y > tau:
            aux[stop] = y
            stop += 1
            tau += (y - tau) / (stop - start)
            if tau <= y - a:
                tau = y - a
                start = stop - 1
    if start > 0:
        for k in range(start - 1, -1, -1):
            y = aux[k]
            if y > tau:
                start -= 1
                aux[start] = y
                tau += (y - tau) / (stop - start)
    changed = True
    while changed:
        kept = start
        removed = 0
        for k in range(start, stop):
            y = aux[k]
            if y > tau:
                aux[kept] = y
                kept += 1
            else:
                removed += 1
                tau += (tau - y) / (stop - start - removed)
        changed = kept < stop
        stop = kept
    if stop == start:
        # a is so small against the largest entries that tau rounded up to
        # them: the largest magnitude is tau to working precision.
        return largest
    kept_sum = 0.0
    for k in range(start, stop):
        kept_sum += aux[k]
    return max((kept_sum - a) / (stop - start), 0.0)


@kernel
def clip(x, lower, upper, out):
    """out = min(max(x, lower), upper), NaN stays NaN.  O(n), moves
    2 * n * itemsize bytes.  Spec: kernels._reference.prox."""
    # Where x equals a bound, x is kept (and the sign of its zero), as np.clip
    # does with scalar bounds.
    if _same_buffer(x, out):
        for i in range(x.size):
            v = x[i]
            v = lower if v < lower else v
            x[i] = upper if v > upper else v
    else:
        for i in range(x.size):
            v = x[i]
            v = lower if v < lower else v
            out[i] = upper if v > upper else v


@kernel
def clip_each(x, lower, upper, out):
    """As clip with per-coordinate bounds.  O(n), moves 4 * n * itemsize
    bytes.  Spec: kernels._reference.prox."""
    # Where x equals a bound, the bound is returned, as np.clip does with
    # array bounds; it differs from x only in the sign of a zero.
    if _same_buffer(x, out):
        for i in range(x.size):
            v = x[i]
            v = lower[i] if v <= lower[i] else v
            x[i] = upper[i] if v >= upper[i] else v
    else:
        for i in range(x.size):
            v = x[i]
            v = lower[i] if v <= lower[i] else v
            out[i] = upper[i] if v >= upper[i] else v


@kernel
def cumulative_l1(w, received, total):
    """Cumulative l1 penalty (Tsuruoka et al. 2009), in place on w and received.
    O(n), reads and writes both: 4 * n * itemsize bytes.  Spec: _reference.prox."""
    zero = type(total)(0)
    for i in range(w.size):
        z = w[i]
        q = received[i]
        if z > zero:
            shrunk = z - (total + q)
            v = zero if shrunk < zero else shrunk
        elif z < zero:
            shrunk = z + (total - q)
            v = zero if shrunk > zero else shrunk
        else:
            v = z
        w[i] = v
        received[i] = q + (v - z)
