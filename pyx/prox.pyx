# cython: embedsignature=False
# Every def here is fused, and Cython (3.3) embeds the fused dispatcher's
# signature "(signatures, args, kwargs, defaults, ...)" into fused docstrings;
# inspect.signature (what help() and the contract test use) is right without it.
"""Proximal-operator kernels, compiled: the "cython" backend of kernels.prox.

Same names, arguments and semantics as ``kernels._reference.prox`` (the
specification, input contract included: contiguous arrays of one floating
dtype, ``out`` may be ``x``).  Values are float32 or float64 (fused type
``floating``); ``group_ptr`` is int64.  Scalar arguments are taken as C
doubles and rounded once to the dtype of ``x``, so float32 data are computed
in float32 like NumPy does; group norms and l1 sums are float64.  Kernels
run without the GIL, serially, in loops written so that GCC -O3 vectorises
them without -ffast-math (so NaN and -0.0 come out as in NumPy).
"""

from cython cimport floating
from libc.math cimport fabs, fabsf, sqrt
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from shrink cimport clipped_l1, hard, soft


cdef enum:
    _TIE_BLOCK = 512  # entries (2 or 4 KiB): keep_largest reads each block twice, in L1


cdef inline floating _abs(floating v) noexcept nogil:
    if floating is float:
        return fabsf(v)
    else:
        return fabs(v)


cdef inline double _sumsq(const floating* y, Py_ssize_t n) noexcept nogil:
    """sum(y ** 2) in double.  Eight partial sums, one per lane of a block
    of 8, let GCC vectorise the sum without -ffast-math (which it needs to
    reorder a single running sum)."""
    cdef double acc[8]
    cdef double v
    cdef Py_ssize_t i = 0, k
    for k in range(8):
        acc[k] = 0
    while i + 8 <= n:
        for k in range(8):
            v = y[i + k]
            acc[k] += v * v
        i += 8
    while i < n:
        v = y[i]
        acc[0] += v * v
        i += 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double _soft_sumsq(const floating* x, floating* out, Py_ssize_t n,
                               floating t) noexcept nogil:
    """out = soft(x, t) (a copy when t == 0: soft(x, 0) is x bit for bit),
    returning sum(out ** 2) in double, in one pass; partial sums as in
    _sumsq.  Meant for out != x: it is correct in place, but GCC's alias
    check then sends it to the scalar loop."""
    cdef double acc[8]
    cdef floating v
    cdef Py_ssize_t i = 0, k
    for k in range(8):
        acc[k] = 0
    if t == 0:
        while i + 8 <= n:
            for k in range(8):
                v = x[i + k]
                out[i + k] = v
                acc[k] += <double>v * v
            i += 8
    else:
        while i + 8 <= n:
            for k in range(8):
                v = soft(x[i + k], t)
                out[i + k] = v
                acc[k] += <double>v * v
            i += 8
    while i < n:
        v = soft(x[i], t)
        out[i] = v
        acc[0] += <double>v * v
        i += 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double _abs_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """sum(|x|) in double, with partial sums as in _sumsq."""
    cdef double acc[8]
    cdef Py_ssize_t i = 0, k
    for k in range(8):
        acc[k] = 0
    while i + 8 <= n:
        for k in range(8):
            acc[k] += _abs(x[i + k])
        i += 8
    while i < n:
        acc[0] += _abs(x[i])
        i += 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double _group_factor(double norm, double threshold) noexcept nogil:
    """max(0, 1 - threshold / norm), 0 unless norm > 0 (NaN kept, as NumPy)."""
    cdef double f
    if not norm > 0:
        return 0.0
    f = 1.0 - threshold / norm
    if f < 0:
        f = 0.0
    return f


def soft_threshold(const floating[::1] x not None, double threshold, double scale,
                   floating[::1] out not None):
    """out = scale * sign(x) * max(|x| - threshold, 0), scalar threshold.

    The prox of threshold * ||.||_1 (scale = 1) or of the elastic net
    (scale = 1 / (1 + l2)); the sign of x is kept, so -0.0 and entries inside
    the threshold give +-0.0.  Branch-free and vectorised.
    O(n); moves 2 * n * itemsize bytes (read x, write out).
    """
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating t = <floating>threshold, s = <floating>scale
    cdef const floating* xp
    cdef floating* op
    if n == 0:
        return
    xp = &x[0]
    op = &out[0]
    with nogil:
        for i in range(n):
            op[i] = soft(xp[i], t) * s


def soft_threshold_each(const floating[::1] x not None,
                        const floating[::1] threshold not None, double scale,
                        floating[::1] out not None):
    """As soft_threshold with one threshold per coordinate:
    out_i = scale * sign(x_i) * max(|x_i| - threshold_i, 0).
    O(n); moves 3 * n * itemsize bytes.
    """
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating s = <floating>scale
    cdef const floating* xp
    cdef const floating* tp
    cdef floating* op
    if n == 0:
        return
    xp = &x[0]
    tp = &threshold[0]
    op = &out[0]
    with nogil:
        for i in range(n):
            op[i] = soft(xp[i], tp[i]) * s


def hard_threshold(const floating[::1] x not None, double cutoff,
                   floating[::1] out not None):
    """out = x where |x| > cutoff, else 0 (the prox of t * ||.||_0 with
    cutoff = sqrt(2 t)).  Dropped entries are x * 0 like the reference's
    x * (|x| > cutoff): -0.0 for a negative x, NaN for NaN or inf.
    O(n); moves 2 * n * itemsize bytes.
    """
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating c = <floating>cutoff
    cdef const floating* xp
    cdef floating* op
    if n == 0:
        return
    xp = &x[0]
    op = &out[0]
    with nogil:
        for i in range(n):
            op[i] = hard(xp[i], c)


def keep_largest(const floating[::1] x not None, double cutoff, Py_ssize_t n_ties,
                 floating[::1] out not None):
    """Keep the entries with |x| > cutoff and the first n_ties entries (index
    order) with |x| == cutoff; zero the others (x * keep, as the reference).
    keep_top_k chooses cutoff and n_ties so that exactly k entries survive.
    One pass with a tie counter, block by block: a block without ties (found
    by a vectorised scan) is plain hard_threshold, and so is everything
    after the last kept tie.  O(n); moves 2 * n * itemsize bytes.
    """
    cdef Py_ssize_t i, start = 0, stop, n = x.shape[0], ties_left = n_ties
    cdef int block_has_tie
    cdef floating c = <floating>cutoff
    cdef const floating* xp
    cdef floating* op
    if n == 0:
        return
    xp = &x[0]
    op = &out[0]
    with nogil:
        while start < n and ties_left > 0:
            stop = min(start + _TIE_BLOCK, n)
            block_has_tie = 0
            for i in range(start, stop):
                if _abs(xp[i]) == c:
                    block_has_tie = 1
            if not block_has_tie:
                for i in range(start, stop):
                    op[i] = hard(xp[i], c)
            else:
                for i in range(start, stop):
                    if ties_left > 0 and _abs(xp[i]) == c:
                        op[i] = xp[i]
                        ties_left -= 1
                    else:
                        op[i] = hard(xp[i], c)
            start = stop
        for i in range(start, n):
            op[i] = hard(xp[i], c)


def group_shrink(const floating[::1] x not None, double l1,
                 const int64_t[::1] group_ptr not None,
                 const floating[::1] thresholds not None, floating[::1] out not None):
    """Sparse-group shrinkage over contiguous groups (group g is
    x[group_ptr[g]:group_ptr[g+1]], group_ptr int64):
    y = soft(x_g, l1), out_g = y * max(0, 1 - thresholds[g] / ||y||_2)
    (0 when ||y|| = 0); l1 = 0 gives the group-lasso prox.  Norms in float64.
    Per group, one pass writes y to out_g while summing ||y||^2 (a copy when
    l1 = 0; in place, y is written first and summed from cache), a second
    scales out_g in place, from cache when the group fits.
    O(n); moves 2 * n * itemsize bytes to and from memory.
    """
    cdef Py_ssize_t g, i, start, size, n_groups = group_ptr.shape[0] - 1
    cdef floating t = <floating>l1, f
    cdef floating* op
    cdef double norm2
    cdef bint in_place
    if x.shape[0] == 0:
        return
    in_place = &x[0] == <const floating*>&out[0]
    with nogil:
        for g in range(n_groups):
            start = group_ptr[g]
            size = group_ptr[g + 1] - start
            op = &out[start]
            if not in_place:
                norm2 = _soft_sumsq(&x[start], op, size, t)
            else:
                if t != 0:
                    for i in range(size):
                        op[i] = soft(op[i], t)
                norm2 = _sumsq(op, size)
            f = <floating>_group_factor(sqrt(norm2), thresholds[g])
            for i in range(size):
                op[i] = op[i] * f


def group_shrink_cols(const floating[:, ::1] x not None, double l1,
                      const floating[::1] thresholds not None,
                      floating[:, ::1] out not None):
    """Sparse-group shrinkage where the groups are the n columns of x (m, n):
    y = soft(x, l1), out[:, j] = y[:, j] * max(0, 1 - thresholds[j] /
    ||y[:, j]||_2) (0 for a zero column).  Streams rows: y goes to out
    (skipped when l1 = 0, as y is x) while column norms add up in a malloc'd
    float64 buffer, then a second pass scales.
    O(m n); reads x (or y) twice and writes out once: 3 * m * n * itemsize
    bytes (+ m * n * itemsize when l1 > 0), n * (8 + itemsize) bytes of
    scratch.  MemoryError if malloc fails.
    """
    cdef Py_ssize_t r, j, m = x.shape[0], n = x.shape[1]
    cdef floating t = <floating>l1, v
    cdef const floating* y
    cdef floating* op
    cdef double* norms
    cdef floating* factors
    if m == 0 or n == 0:
        return
    norms = <double*>malloc(n * sizeof(double))
    factors = <floating*>malloc(n * sizeof(floating))
    try:
        if norms == NULL or factors == NULL:
            raise MemoryError()
        with nogil:
            for j in range(n):
                norms[j] = 0
            for r in range(m):
                y = &x[r, 0]
                op = &out[r, 0]
                if t != 0:
                    for j in range(n):
                        v = soft(y[j], t)
                        op[j] = v
                        norms[j] += <double>v * v
                else:
                    for j in range(n):
                        norms[j] += <double>y[j] * y[j]
            for j in range(n):
                factors[j] = <floating>_group_factor(sqrt(norms[j]), thresholds[j])
            for r in range(m):
                op = &out[r, 0]
                if t != 0:
                    y = op
                else:
                    y = &x[r, 0]
                for j in range(n):
                    op[j] = y[j] * factors[j]
    finally:
        free(norms)
        free(factors)


cdef double _condat_threshold(const floating* x, Py_ssize_t n, double a,
                              double* aux) noexcept nogil:
    """tau with sum(max(|x| - tau, 0)) = a > 0, given sum(|x|) > a.

    Condat (2016), "Fast projection onto the simplex and the l1 ball",
    Math. Program. 158, Algorithm 2 in the in-place form of the author's C
    code: ``aux`` (n doubles) holds the candidate list v, with the discarded
    prefix w in front of it.  O(n) expected time.
    """
    cdef double y, tau
    cdef double* v
    cdef Py_ssize_t i, k, length = 1, old = -1, remaining
    # Pass over y = |x|: grow v, restarting it when y alone beats the pivot.
    aux[0] = _abs(x[0])
    tau = aux[0] - a
    for i in range(1, n):
        y = _abs(x[i])
        if y > tau:
            aux[length] = y
            tau += (y - tau) / (length - old)
            if tau <= y - a:
                tau = y - a
                old = length - 1
            length += 1
    # Bring back the discarded entries that are still above the pivot.
    v = aux
    if old >= 0:
        old += 1
        length -= old
        v = aux + old
        for k in range(old - 1, -1, -1):
            if aux[k] > tau:
                v -= 1
                v[0] = aux[k]
                length += 1
                tau += (v[0] - tau) / length
    # Remove entries at or below the pivot until v no longer changes.
    while True:
        old = length - 1
        length = 0
        for i in range(old + 1):
            if v[i] > tau:
                v[length] = v[i]
                length += 1
            else:
                remaining = old - i + length
                if remaining > 0:
                    tau += (tau - v[i]) / remaining
        if length > old:
            break
    return tau


def l1_ball_threshold(const floating[::1] x not None, double radius):
    """The tau >= 0 with sum(max(|x| - tau, 0)) == radius, or 0.0 when
    ||x||_1 <= radius already (max |x| for radius 0, NaN if x has a NaN);
    project with soft_threshold(x, tau, 1, out).  Returns a Python float.

    Condat's algorithm, O(n) expected time, sums in float64: one read of x
    for ||x||_1, then (only outside the ball) one more read and at most
    8 * n bytes of malloc'd scratch.  MemoryError if malloc fails.
    """
    cdef Py_ssize_t i, n = x.shape[0]
    cdef const floating* xp
    cdef double total, tau = 0
    cdef double* aux
    if n == 0:
        return 0.0
    xp = &x[0]
    with nogil:
        total = _abs_sum(xp, n)
    if total <= radius:
        return 0.0
    if total != total:
        return total
    if radius <= 0:
        with nogil:
            for i in range(n):
                if _abs(xp[i]) > tau:
                    tau = _abs(xp[i])
        return tau
    aux = <double*>malloc(n * sizeof(double))
    if aux == NULL:
        raise MemoryError()
    with nogil:
        tau = _condat_threshold(xp, n, radius, aux)
    free(aux)
    return 0.0 if tau < 0 else tau


def clip(const floating[::1] x not None, double lower, double upper,
         floating[::1] out not None):
    """out = min(max(x, lower), upper), scalar bounds (lower <= upper); NaN
    stays NaN and x is kept on ties (-0.0 vs 0.0), as np.clip.
    O(n); moves 2 * n * itemsize bytes.
    """
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating lo = <floating>lower, hi = <floating>upper, v
    cdef const floating* xp
    cdef floating* op
    if n == 0:
        return
    xp = &x[0]
    op = &out[0]
    with nogil:
        for i in range(n):
            v = xp[i]
            if v < lo:
                v = lo
            if v > hi:
                v = hi
            op[i] = v


def clip_each(const floating[::1] x not None, const floating[::1] lower not None,
              const floating[::1] upper not None, floating[::1] out not None):
    """As clip with per-coordinate bounds; NaN stays NaN.  On ties
    (-0.0 vs 0.0) the bound is taken, as np.clip does with array bounds.
    O(n); moves 4 * n * itemsize bytes.
    """
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating v
    cdef const floating* xp
    cdef const floating* lp
    cdef const floating* up
    cdef floating* op
    if n == 0:
        return
    xp = &x[0]
    lp = &lower[0]
    up = &upper[0]
    op = &out[0]
    with nogil:
        for i in range(n):
            v = xp[i]
            if v <= lp[i]:
                v = lp[i]
            if v >= up[i]:
                v = up[i]
            op[i] = v


def cumulative_l1(floating[::1] w not None, floating[::1] received not None,
                  double total):
    """Cumulative l1 penalty (Tsuruoka, Tsujii and Ananiadou 2009), in place.
    With z = w, u = total, q = received:
    z > 0: w = max(0, z - (u + q));  z < 0: w = min(0, z + (u - q));
    then q += w - z.  Weights are clipped at zero instead of crossing it.
    Both candidates are computed and selected, so the loop vectorises.
    O(n); reads and writes w and received once: 4 * n * itemsize bytes.
    """
    cdef Py_ssize_t i, n = w.shape[0]
    cdef floating u = <floating>total, z, q, v
    cdef floating* wp
    cdef floating* qp
    if n == 0:
        return
    wp = &w[0]
    qp = &received[0]
    with nogil:
        for i in range(n):
            z = wp[i]
            q = qp[i]
            v = clipped_l1(z, u, q)
            wp[i] = v
            qp[i] = q + (v - z)
