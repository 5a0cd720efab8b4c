# cython: embedsignature=False
# Every def here is fused, and Cython (3.3) embeds the fused dispatcher's
# signature into fused docstrings; inspect.signature is right without it.
"""Sparse matrix-vector kernels, compiled: the "cython" backend of
kernels.sparse.

Same names, arguments and semantics as ``kernels._reference.sparse`` (the
specification, input contract included: a kernel trusts the structure it is
given).  Fused types: values ``floating`` (float32, float64) with CSR/BSR
``indices`` and ``indptr`` of one dtype ``index_t`` (int32, int64); a
quantised matrix has int8 values, ``qindex_t`` indices (uint8, uint16,
int32), ``qptr_t`` indptr (int32, int64), float32 scales, x and y.

Rows are summed in the values' dtype (float32 for quantised matrices) with
four independent partial sums, so that the adds of one row overlap instead
of waiting on each other; alpha and beta are applied once per row, in
double.  ``y`` is not read when beta == 0.  With ``n_threads > 1`` and an
OpenMP build, the rows are cut into one consecutive range per thread, of
about equal work (stored entries plus rows); the transposed products are
scatters into y and run serially.
"""

from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #ifdef _OPENMP
    #include <omp.h>
    static int kernels_sparse_team_size(void) { return omp_get_num_threads(); }
    #else
    static int kernels_sparse_team_size(void) { return 1; }
    #endif

    /* GCC's SLP vectoriser packs the four partial sums of a row into one
       vector register, then adds its lanes one after the other: a serial
       chain again, slower than the scalar loop.  Keep these loops scalar. */
    #if defined(__GNUC__) && !defined(__clang__)
    #define KERNELS_SPARSE_SCALAR __attribute__((optimize("no-tree-vectorize")))
    #else
    #define KERNELS_SPARSE_SCALAR
    #endif

    /* Rows r0 <= i < r1 of y = alpha * diag(scales) A x + beta * y (scales
       NULL: none).  Row i sums v[p] * x[col[p]] in ST with four partial
       sums, so that four multiply-adds are in flight instead of each add
       waiting on the previous one; pointers are bumped, and alpha, beta and
       the scale are applied once per row, in double.  y is not read when
       beta == 0.  One function per type combination, generated as scipy's
       sparsetools does. */
    #define KERNELS_SPARSE_ROWS(NAME, VT, IT, PT, ST)                          \
    static KERNELS_SPARSE_SCALAR void NAME(                                    \
        const VT *data, const IT *indices, const PT *indptr,                   \
        const float *scales, const ST *x, double alpha, double beta, ST *y,    \
        ptrdiff_t r0, ptrdiff_t r1)                                            \
    {                                                                          \
        ptrdiff_t i;                                                           \
        const VT *v = data + indptr[r0];                                       \
        const IT *col = indices + indptr[r0];                                  \
        for (i = r0; i < r1; ++i) {                                            \
            const VT *end = data + indptr[i + 1];                              \
            const VT *end4 = v + ((end - v) & ~(ptrdiff_t)3);                  \
            ST s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                 \
            double row;                                                        \
            for (; v < end4; v += 4, col += 4) {                               \
                s0 += (ST)v[0] * x[col[0]];                                    \
                s1 += (ST)v[1] * x[col[1]];                                    \
                s2 += (ST)v[2] * x[col[2]];                                    \
                s3 += (ST)v[3] * x[col[3]];                                    \
            }                                                                  \
            for (; v < end; ++v, ++col)                                        \
                s0 += (ST)v[0] * x[col[0]];                                    \
            row = (double)((s0 + s1) + (s2 + s3));                             \
            if (scales)                                                        \
                row *= scales[i];                                              \
            y[i] = (ST)(beta == 0 ? alpha * row : alpha * row + beta * y[i]);  \
        }                                                                      \
    }
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_f_i32, float, int32_t, int32_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_f_i64, float, int64_t, int64_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_d_i32, double, int32_t, int32_t, double)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_d_i64, double, int64_t, int64_t, double)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_q_u8_i32, signed char, uint8_t, int32_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_q_u8_i64, signed char, uint8_t, int64_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_q_u16_i32, signed char, uint16_t, int32_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_q_u16_i64, signed char, uint16_t, int64_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_q_i32_i32, signed char, int32_t, int32_t, float)
    KERNELS_SPARSE_ROWS(kernels_sparse_rows_q_i32_i64, signed char, int32_t, int64_t, float)
    """
    int _team_size "kernels_sparse_team_size"() noexcept nogil
    void _rows_f_i32 "kernels_sparse_rows_f_i32"(
        const float*, const int32_t*, const int32_t*, const float*, const float*,
        double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_f_i64 "kernels_sparse_rows_f_i64"(
        const float*, const int64_t*, const int64_t*, const float*, const float*,
        double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_d_i32 "kernels_sparse_rows_d_i32"(
        const double*, const int32_t*, const int32_t*, const float*, const double*,
        double, double, double*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_d_i64 "kernels_sparse_rows_d_i64"(
        const double*, const int64_t*, const int64_t*, const float*, const double*,
        double, double, double*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_u8_i32 "kernels_sparse_rows_q_u8_i32"(
        const signed char*, const uint8_t*, const int32_t*, const float*, const float*,
        double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_u8_i64 "kernels_sparse_rows_q_u8_i64"(
        const signed char*, const uint8_t*, const int64_t*, const float*, const float*,
        double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_u16_i32 "kernels_sparse_rows_q_u16_i32"(
        const signed char*, const uint16_t*, const int32_t*, const float*,
        const float*, double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_u16_i64 "kernels_sparse_rows_q_u16_i64"(
        const signed char*, const uint16_t*, const int64_t*, const float*,
        const float*, double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_i32_i32 "kernels_sparse_rows_q_i32_i32"(
        const signed char*, const int32_t*, const int32_t*, const float*,
        const float*, double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_i32_i64 "kernels_sparse_rows_q_i32_i64"(
        const signed char*, const int32_t*, const int64_t*, const float*,
        const float*, double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil


ctypedef fused index_t:
    int32_t
    int64_t

ctypedef fused qindex_t:
    uint8_t
    uint16_t
    int32_t

ctypedef fused qptr_t:
    int32_t
    int64_t

ctypedef fused anyptr_t:
    int32_t
    int64_t


cdef enum:
    _ALIGN = 64  # bytes between per-thread scratch rows: no false sharing


# ---------------------------------------------------------------- helpers

cdef inline Py_ssize_t _first_row(const anyptr_t* indptr, Py_ssize_t m,
                                  int part, int parts) noexcept nogil:
    """First row of the part-th of `parts` consecutive row ranges of about
    equal work, one unit per stored entry and one per row: the smallest r
    with indptr[r] + r >= part / parts of indptr[m] + m."""
    cdef Py_ssize_t lo = 0, hi = m, mid
    cdef double target
    if part >= parts:
        return m
    target = (<double>indptr[m] + <double>m) * part / parts
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if <double>indptr[mid] + <double>mid < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _finish(floating* y, const floating* acc, Py_ssize_t k,
                         double alpha, double beta) noexcept nogil:
    """y[:k] = alpha * acc[:k] + beta * y[:k], y not read when beta == 0."""
    cdef Py_ssize_t t
    if beta == 0:
        for t in range(k):
            y[t] = <floating>(alpha * acc[t])
    else:
        for t in range(k):
            y[t] = <floating>(alpha * acc[t] + beta * y[t])


cdef inline void _scale(floating* y, Py_ssize_t n, double beta) noexcept nogil:
    """y *= beta before a scatter; y = 0 without reading it when beta == 0."""
    cdef Py_ssize_t t
    cdef floating b = <floating>beta
    if beta == 0:
        memset(y, 0, n * sizeof(floating))
    elif beta != 1:
        for t in range(n):
            y[t] = y[t] * b


cdef inline void _axpy4(floating* acc, Py_ssize_t k, floating a0, const floating* x0,
                        floating a1, const floating* x1, floating a2,
                        const floating* x2, floating a3,
                        const floating* x3) noexcept nogil:
    """acc[:k] += a0 x0 + a1 x1 + a2 x2 + a3 x3: one pass over acc for four
    stored entries (vectorised over t)."""
    cdef Py_ssize_t t
    for t in range(k):
        acc[t] += (a0 * x0[t] + a1 * x1[t]) + (a2 * x2[t] + a3 * x3[t])


cdef inline void _axpy(floating* acc, Py_ssize_t k, floating a,
                       const floating* x) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(k):
        acc[t] += a * x[t]


cdef inline void _row_axpy(floating* acc, Py_ssize_t k, const floating* v,
                           const index_t* col, Py_ssize_t n,
                           const floating* X) noexcept nogil:
    """acc[:k] = sum over p < n of v[p] * X[col[p], :k] (X rows of length k)."""
    cdef Py_ssize_t p = 0
    memset(acc, 0, k * sizeof(floating))
    while p + 4 <= n:
        _axpy4(acc, k, v[p], X + col[p] * k, v[p + 1], X + col[p + 1] * k,
               v[p + 2], X + col[p + 2] * k, v[p + 3], X + col[p + 3] * k)
        p += 4
    while p < n:
        _axpy(acc, k, v[p], X + col[p] * k)
        p += 1


cdef inline void _qrow_axpy(float* acc, Py_ssize_t k, const signed char* v,
                            const qindex_t* col, Py_ssize_t n,
                            const float* X) noexcept nogil:
    """acc[:k] = sum over p < n of float(v[p]) * X[col[p], :k]."""
    cdef Py_ssize_t p = 0
    memset(acc, 0, k * sizeof(float))
    while p + 4 <= n:
        _axpy4(acc, k, <float>v[p], X + col[p] * k, <float>v[p + 1],
               X + col[p + 1] * k, <float>v[p + 2], X + col[p + 2] * k,
               <float>v[p + 3], X + col[p + 3] * k)
        p += 4
    while p < n:
        _axpy(acc, k, <float>v[p], X + col[p] * k)
        p += 1


cdef void* _scratch(Py_ssize_t n_threads, Py_ssize_t per_thread, Py_ssize_t* stride):
    """One 64-byte-aligned scratch row of per_thread bytes per thread."""
    cdef void* buf
    stride[0] = (per_thread + _ALIGN - 1) // _ALIGN * _ALIGN + _ALIGN
    buf = malloc(n_threads * stride[0] + _ALIGN)
    if buf == NULL:
        raise MemoryError()
    return buf


cdef inline char* _aligned(void* buf) noexcept nogil:
    return <char*>((<size_t>buf + _ALIGN - 1) // _ALIGN * _ALIGN)


# ---------------------------------------------------------------- row ranges

cdef inline void _csr_rows(const floating* data, const index_t* indices,
                           const index_t* indptr, const floating* x, double alpha,
                           double beta, floating* y, Py_ssize_t r0,
                           Py_ssize_t r1) noexcept nogil:
    """Rows r0 <= i < r1 of y = alpha * A x + beta * y."""
    if floating is float:
        if index_t is int32_t:
            _rows_f_i32(data, indices, indptr, NULL, x, alpha, beta, y, r0, r1)
        else:
            _rows_f_i64(data, indices, indptr, NULL, x, alpha, beta, y, r0, r1)
    else:
        if index_t is int32_t:
            _rows_d_i32(data, indices, indptr, NULL, x, alpha, beta, y, r0, r1)
        else:
            _rows_d_i64(data, indices, indptr, NULL, x, alpha, beta, y, r0, r1)


cdef void _csr_rows_mat(const floating* data, const index_t* indices,
                        const index_t* indptr, const floating* X, Py_ssize_t k,
                        double alpha, double beta, floating* Y, floating* acc,
                        Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t i, start = indptr[r0], stop
    for i in range(r0, r1):
        stop = indptr[i + 1]
        _row_axpy(acc, k, data + start, indices + start, stop - start, X)
        _finish(Y + i * k, acc, k, alpha, beta)
        start = stop


cdef inline void _qcsr_rows(const signed char* values, const qindex_t* indices,
                            const qptr_t* indptr, const float* scales, const float* x,
                            double alpha, double beta, float* y, Py_ssize_t r0,
                            Py_ssize_t r1) noexcept nogil:
    """Rows r0 <= i < r1 of y = alpha * diag(scales) Q x + beta * y."""
    if qindex_t is uint8_t:
        if qptr_t is int32_t:
            _rows_q_u8_i32(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)
        else:
            _rows_q_u8_i64(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)
    elif qindex_t is uint16_t:
        if qptr_t is int32_t:
            _rows_q_u16_i32(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)
        else:
            _rows_q_u16_i64(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)
    else:
        if qptr_t is int32_t:
            _rows_q_i32_i32(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)
        else:
            _rows_q_i32_i64(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)


cdef void _qcsr_rows_mat(const signed char* values, const qindex_t* indices,
                         const qptr_t* indptr, const float* scales, const float* X,
                         Py_ssize_t k, double alpha, double beta, float* Y,
                         float* acc, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t i, start = indptr[r0], stop
    for i in range(r0, r1):
        stop = indptr[i + 1]
        _qrow_axpy(acc, k, values + start, indices + start, stop - start, X)
        _finish(Y + i * k, acc, k, alpha * scales[i], beta)
        start = stop


cdef void _bsr_rows(const floating* data, const index_t* indices,
                    const index_t* indptr, Py_ssize_t r, Py_ssize_t c,
                    const floating* x, double alpha, double beta, floating* y,
                    floating* acc, Py_ssize_t b0, Py_ssize_t b1) noexcept nogil:
    """Block rows b0 <= I < b1 (rows I*r .. I*r + r - 1); acc holds r sums."""
    cdef Py_ssize_t I, b, rr, cc, rc = r * c
    cdef const floating* blk
    cdef const floating* xb
    cdef floating s0, s1, s2, s3
    for I in range(b0, b1):
        if r == 4 and c == 4:
            s0 = s1 = s2 = s3 = 0
            for b in range(indptr[I], indptr[I + 1]):
                blk = data + b * 16
                xb = x + <Py_ssize_t>indices[b] * 4
                s0 += (blk[0] * xb[0] + blk[1] * xb[1]) + (blk[2] * xb[2] + blk[3] * xb[3])
                s1 += (blk[4] * xb[0] + blk[5] * xb[1]) + (blk[6] * xb[2] + blk[7] * xb[3])
                s2 += (blk[8] * xb[0] + blk[9] * xb[1]) + (blk[10] * xb[2] + blk[11] * xb[3])
                s3 += (blk[12] * xb[0] + blk[13] * xb[1]) + (blk[14] * xb[2] + blk[15] * xb[3])
            acc[0] = s0
            acc[1] = s1
            acc[2] = s2
            acc[3] = s3
        elif r == 1:
            acc[0] = _bsr_row_1xc(data, indices, indptr[I], indptr[I + 1], c, x)
        else:
            for rr in range(r):
                acc[rr] = 0
            for b in range(indptr[I], indptr[I + 1]):
                blk = data + b * rc
                xb = x + indices[b] * c
                for rr in range(r):
                    s0 = 0
                    for cc in range(c):
                        s0 += blk[rr * c + cc] * xb[cc]
                    acc[rr] += s0
        _finish(y + I * r, acc, r, alpha, beta)


cdef inline floating _bsr_row_1xc(const floating* data, const index_t* indices,
                                  Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t c,
                                  const floating* x) noexcept nogil:
    """One block row of 1 x c blocks: c consecutive x entries per index."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef const floating* blk
    cdef const floating* xb
    cdef Py_ssize_t b, cc
    for b in range(b0, b1):
        blk = data + b * c
        xb = x + indices[b] * c
        cc = 0
        while cc + 4 <= c:
            s0 += blk[cc] * xb[cc]
            s1 += blk[cc + 1] * xb[cc + 1]
            s2 += blk[cc + 2] * xb[cc + 2]
            s3 += blk[cc + 3] * xb[cc + 3]
            cc += 4
        while cc < c:
            s0 += blk[cc] * xb[cc]
            cc += 1
    return (s0 + s1) + (s2 + s3)


cdef void _bsr_rows_mat(const floating* data, const index_t* indices,
                        const index_t* indptr, Py_ssize_t r, Py_ssize_t c,
                        const floating* X, Py_ssize_t k, double alpha,
                        double beta, floating* Y, floating* acc, Py_ssize_t b0,
                        Py_ssize_t b1) noexcept nogil:
    """Block rows b0 <= I < b1 of a feature-major batch; acc holds r * k."""
    cdef Py_ssize_t I, b, rr, cc, rc = r * c
    cdef const floating* blk
    cdef const floating* xb
    for I in range(b0, b1):
        memset(acc, 0, r * k * sizeof(floating))
        for b in range(indptr[I], indptr[I + 1]):
            blk = data + b * rc
            xb = X + indices[b] * c * k
            for rr in range(r):
                cc = 0
                while cc + 4 <= c:
                    _axpy4(acc + rr * k, k, blk[rr * c + cc], xb + cc * k,
                           blk[rr * c + cc + 1], xb + (cc + 1) * k,
                           blk[rr * c + cc + 2], xb + (cc + 2) * k,
                           blk[rr * c + cc + 3], xb + (cc + 3) * k)
                    cc += 4
                while cc < c:
                    _axpy(acc + rr * k, k, blk[rr * c + cc], xb + cc * k)
                    cc += 1
        _finish(Y + I * r * k, acc, r * k, alpha, beta)


# ---------------------------------------------------------------- CSR

def csr_matvec(const floating[::1] data not None, const index_t[::1] indices not None,
               const index_t[::1] indptr not None, const floating[::1] x not None,
               double alpha, double beta, floating[::1] y not None, int n_threads):
    """y = alpha * A @ x + beta * y for A in CSR (m x n).

    y_i = alpha * sum_{p in row i} data[p] * x[indices[p]] + beta * y_i,
    each row summed in the values' dtype with four partial sums.
    O(nnz + m); moves nnz * (sv + si) + (m + 1) * si + m * sv bytes (plus x,
    n * sv, from cache when it fits).  Rows split over n_threads threads.
    """
    cdef Py_ssize_t m = y.shape[0], r0, r1
    cdef int nt
    cdef const floating* dp = &data[0]
    cdef const index_t* jp = &indices[0]
    cdef const index_t* ip = &indptr[0]
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    with nogil:
        if n_threads > 1 and m > 1:
            with parallel(num_threads=n_threads):
                nt = _team_size()
                r0 = _first_row(ip, m, threadid(), nt)
                r1 = _first_row(ip, m, threadid() + 1, nt)
                _csr_rows(dp, jp, ip, xp, alpha, beta, yp, r0, r1)
        else:
            _csr_rows(dp, jp, ip, xp, alpha, beta, yp, 0, m)


def csr_matvec_t(const floating[::1] data not None, const index_t[::1] indices not None,
                 const index_t[::1] indptr not None, const floating[::1] x not None,
                 double alpha, double beta, floating[::1] y not None):
    """y = alpha * A.T @ x + beta * y without forming the transpose (x has m
    entries, y has n): y is scaled by beta (zeroed, unread, when beta == 0),
    then each row scatters alpha * x_i * data[p] into y[indices[p]].
    Serial.  O(nnz + m + n); moves nnz * (sv + si) + (m + 1) * si + m * sv
    bytes plus y read and written (from cache when it fits).
    """
    cdef Py_ssize_t m = x.shape[0], n = y.shape[0], i, p
    cdef floating xi
    cdef const floating* dp = &data[0]
    cdef const index_t* jp = &indices[0]
    cdef const index_t* ip = &indptr[0]
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    with nogil:
        _scale(yp, n, beta)
        for i in range(m):
            xi = <floating>(alpha * xp[i])
            for p in range(ip[i], ip[i + 1]):
                yp[jp[p]] += dp[p] * xi


def csr_matmat(const floating[::1] data not None, const index_t[::1] indices not None,
               const index_t[::1] indptr not None, const floating[:, ::1] X not None,
               double alpha, double beta, floating[:, ::1] Y not None, int n_threads):
    """Y = alpha * A @ X + beta * Y for a feature-major batch X (n, k),
    Y (m, k).

    Row i accumulates data[p] * X[indices[p], :] over its entries, four at a
    time, into a k-long scratch row (contiguous, vectorised), then writes
    Y[i, :] once.  O(nnz * k + m * k); moves nnz * (sv + si) + (m + 1) * si
    + m * k * sv bytes plus X (n * k * sv, from cache when it fits): each
    loaded entry serves k multiply-adds.  Rows split over n_threads threads.
    """
    cdef Py_ssize_t m = Y.shape[0], k = Y.shape[1], r0, r1, stride
    cdef int nt
    cdef const floating* dp = &data[0]
    cdef const index_t* jp = &indices[0]
    cdef const index_t* ip = &indptr[0]
    cdef const floating* Xp = &X[0, 0]
    cdef floating* Yp = &Y[0, 0]
    cdef void* buf
    if k == 1:
        with nogil:
            if n_threads > 1 and m > 1:
                with parallel(num_threads=n_threads):
                    nt = _team_size()
                    r0 = _first_row(ip, m, threadid(), nt)
                    r1 = _first_row(ip, m, threadid() + 1, nt)
                    _csr_rows(dp, jp, ip, Xp, alpha, beta, Yp, r0, r1)
            else:
                _csr_rows(dp, jp, ip, Xp, alpha, beta, Yp, 0, m)
        return
    if m == 0 or k == 0:
        return
    if n_threads < 1 or m == 1:
        n_threads = 1
    buf = _scratch(n_threads, k * sizeof(floating), &stride)
    try:
        with nogil:
            if n_threads > 1:
                with parallel(num_threads=n_threads):
                    nt = _team_size()
                    r0 = _first_row(ip, m, threadid(), nt)
                    r1 = _first_row(ip, m, threadid() + 1, nt)
                    _csr_rows_mat(dp, jp, ip, Xp, k, alpha, beta, Yp,
                                  <floating*>(_aligned(buf) + threadid() * stride),
                                  r0, r1)
            else:
                _csr_rows_mat(dp, jp, ip, Xp, k, alpha, beta, Yp,
                              <floating*>_aligned(buf), 0, m)
    finally:
        free(buf)


# ---------------------------------------------------------------- BSR

def bsr_matvec(const floating[:, :, ::1] data not None,
               const index_t[::1] indices not None, const index_t[::1] indptr not None,
               const floating[::1] x not None, double alpha, double beta,
               floating[::1] y not None, int n_threads):
    """y = alpha * A @ x + beta * y for A in BSR with (r, c) blocks (data of
    shape (n_blocks, r, c), block-column indices, block-row indptr).

    Each block row sums its blocks into r partial sums (4 x 4 and 1 x c
    blocks have their own unrolled loops), then writes its r entries of y.
    O(n_blocks * r * c + m); moves n_blocks * (r * c * sv + si) + (m / r + 1)
    * si + m * sv bytes (plus x).  Block rows split over n_threads threads.
    """
    cdef Py_ssize_t n_brows = indptr.shape[0] - 1, r = data.shape[1], c = data.shape[2]
    cdef Py_ssize_t b0, b1, stride
    cdef int nt
    cdef const floating* dp = &data[0, 0, 0]
    cdef const index_t* jp = &indices[0]
    cdef const index_t* ip = &indptr[0]
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    cdef void* buf
    if n_brows == 0 or r == 0:
        return
    if n_threads < 1 or n_brows == 1:
        n_threads = 1
    buf = _scratch(n_threads, r * sizeof(floating), &stride)
    try:
        with nogil:
            if n_threads > 1:
                with parallel(num_threads=n_threads):
                    nt = _team_size()
                    b0 = _first_row(ip, n_brows, threadid(), nt)
                    b1 = _first_row(ip, n_brows, threadid() + 1, nt)
                    _bsr_rows(dp, jp, ip, r, c, xp, alpha, beta, yp,
                              <floating*>(_aligned(buf) + threadid() * stride), b0, b1)
            else:
                _bsr_rows(dp, jp, ip, r, c, xp, alpha, beta, yp,
                          <floating*>_aligned(buf), 0, n_brows)
    finally:
        free(buf)


def bsr_matvec_t(const floating[:, :, ::1] data not None,
                 const index_t[::1] indices not None, const index_t[::1] indptr not None,
                 const floating[::1] x not None, double alpha, double beta,
                 floating[::1] y not None):
    """y = alpha * A.T @ x + beta * y for A in BSR (x has m entries, y has n):
    y scaled by beta (zeroed, unread, when beta == 0), then each block adds
    its transpose times alpha * x over its c entries of y.  Serial.
    O(n_blocks * r * c + m + n); moves the bytes of bsr_matvec plus y read
    and written.
    """
    cdef Py_ssize_t n_brows = indptr.shape[0] - 1, r = data.shape[1], c = data.shape[2]
    cdef Py_ssize_t n = y.shape[0], I, b, rr, cc, rc = r * c
    cdef floating xi
    cdef const floating* blk
    cdef floating* yb
    cdef const floating* dp = &data[0, 0, 0]
    cdef const index_t* jp = &indices[0]
    cdef const index_t* ip = &indptr[0]
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    with nogil:
        _scale(yp, n, beta)
        for I in range(n_brows):
            for b in range(ip[I], ip[I + 1]):
                blk = dp + b * rc
                yb = yp + jp[b] * c
                for rr in range(r):
                    xi = <floating>(alpha * xp[I * r + rr])
                    for cc in range(c):
                        yb[cc] += blk[rr * c + cc] * xi


def bsr_matmat(const floating[:, :, ::1] data not None,
               const index_t[::1] indices not None, const index_t[::1] indptr not None,
               const floating[:, ::1] X not None, double alpha, double beta,
               floating[:, ::1] Y not None, int n_threads):
    """Y = alpha * A @ X + beta * Y for A in BSR, feature-major X (n, k) and
    Y (m, k): each block row accumulates r scratch rows of length k
    (contiguous, vectorised), then writes its r rows of Y once.
    O(n_blocks * r * c * k + m * k); moves n_blocks * (r * c * sv + si)
    + (m / r + 1) * si + m * k * sv bytes plus X.  Block rows split over
    n_threads threads.
    """
    cdef Py_ssize_t n_brows = indptr.shape[0] - 1, r = data.shape[1], c = data.shape[2]
    cdef Py_ssize_t k = Y.shape[1], b0, b1, stride
    cdef int nt
    cdef const floating* dp = &data[0, 0, 0]
    cdef const index_t* jp = &indices[0]
    cdef const index_t* ip = &indptr[0]
    cdef const floating* Xp = &X[0, 0]
    cdef floating* Yp = &Y[0, 0]
    cdef void* buf
    if n_brows == 0 or r == 0 or k == 0:
        return
    if n_threads < 1 or n_brows == 1:
        n_threads = 1
    buf = _scratch(n_threads, r * k * sizeof(floating), &stride)
    try:
        with nogil:
            if n_threads > 1:
                with parallel(num_threads=n_threads):
                    nt = _team_size()
                    b0 = _first_row(ip, n_brows, threadid(), nt)
                    b1 = _first_row(ip, n_brows, threadid() + 1, nt)
                    _bsr_rows_mat(dp, jp, ip, r, c, Xp, k, alpha, beta, Yp,
                                  <floating*>(_aligned(buf) + threadid() * stride),
                                  b0, b1)
            else:
                _bsr_rows_mat(dp, jp, ip, r, c, Xp, k, alpha, beta, Yp,
                              <floating*>_aligned(buf), 0, n_brows)
    finally:
        free(buf)


# ---------------------------------------------------------------- quantised CSR

def qcsr_matvec(const signed char[::1] values not None,
                const qindex_t[::1] indices not None, const qptr_t[::1] indptr not None,
                const float[::1] scales not None, const float[::1] x not None,
                double alpha, double beta, float[::1] y not None, int n_threads):
    """y = alpha * diag(scales) @ Q @ x + beta * y for a quantised CSR matrix
    (int8 values Q, one float32 scale per row, float32 x and y).

    Row i sums float(Q[p]) * x[indices[p]] in float32 with four partial
    sums, then is multiplied by scales[i] once.  O(nnz + m); moves
    nnz * (1 + si) + (m + 1) * spi + m * 4 (scales) + m * 4 (y) bytes (plus
    x).  Rows split over n_threads threads.
    """
    cdef Py_ssize_t m = y.shape[0], r0, r1
    cdef int nt
    cdef const signed char* vp = &values[0]
    cdef const qindex_t* jp = &indices[0]
    cdef const qptr_t* ip = &indptr[0]
    cdef const float* sp = &scales[0]
    cdef const float* xp = &x[0]
    cdef float* yp = &y[0]
    with nogil:
        if n_threads > 1 and m > 1:
            with parallel(num_threads=n_threads):
                nt = _team_size()
                r0 = _first_row(ip, m, threadid(), nt)
                r1 = _first_row(ip, m, threadid() + 1, nt)
                _qcsr_rows(vp, jp, ip, sp, xp, alpha, beta, yp, r0, r1)
        else:
            _qcsr_rows(vp, jp, ip, sp, xp, alpha, beta, yp, 0, m)


def qcsr_matvec_t(const signed char[::1] values not None,
                  const qindex_t[::1] indices not None, const qptr_t[::1] indptr not None,
                  const float[::1] scales not None, const float[::1] x not None,
                  double alpha, double beta, float[::1] y not None):
    """y = alpha * Q.T @ diag(scales) @ x + beta * y (x has m entries, y has
    n): y scaled by beta (zeroed, unread, when beta == 0), then row i
    scatters float(Q[p]) * (alpha * scales[i] * x[i]) into y[indices[p]].
    Serial.  O(nnz + m + n); moves the bytes of qcsr_matvec plus y read and
    written.
    """
    cdef Py_ssize_t m = x.shape[0], n = y.shape[0], i, p
    cdef float xi
    cdef const signed char* vp = &values[0]
    cdef const qindex_t* jp = &indices[0]
    cdef const qptr_t* ip = &indptr[0]
    cdef const float* sp = &scales[0]
    cdef const float* xp = &x[0]
    cdef float* yp = &y[0]
    with nogil:
        _scale(yp, n, beta)
        for i in range(m):
            xi = <float>(alpha * (<double>sp[i] * xp[i]))
            for p in range(ip[i], ip[i + 1]):
                yp[jp[p]] += <float>vp[p] * xi


def qcsr_matmat(const signed char[::1] values not None,
                const qindex_t[::1] indices not None, const qptr_t[::1] indptr not None,
                const float[::1] scales not None, const float[:, ::1] X not None,
                double alpha, double beta, float[:, ::1] Y not None, int n_threads):
    """Y = alpha * diag(scales) @ Q @ X + beta * Y, feature-major X (n, k) and
    Y (m, k), float32: row i accumulates float(Q[p]) * X[indices[p], :] into
    a k-long float32 scratch row, then writes Y[i, :] with its scale once.
    O(nnz * k + m * k); moves nnz * (1 + si) + (m + 1) * spi + m * 4
    + m * k * 4 bytes plus X.  Rows split over n_threads threads.
    """
    cdef Py_ssize_t m = Y.shape[0], k = Y.shape[1], r0, r1, stride
    cdef int nt
    cdef const signed char* vp = &values[0]
    cdef const qindex_t* jp = &indices[0]
    cdef const qptr_t* ip = &indptr[0]
    cdef const float* sp = &scales[0]
    cdef const float* Xp = &X[0, 0]
    cdef float* Yp = &Y[0, 0]
    cdef void* buf
    if k == 1:
        with nogil:
            if n_threads > 1 and m > 1:
                with parallel(num_threads=n_threads):
                    nt = _team_size()
                    r0 = _first_row(ip, m, threadid(), nt)
                    r1 = _first_row(ip, m, threadid() + 1, nt)
                    _qcsr_rows(vp, jp, ip, sp, Xp, alpha, beta, Yp, r0, r1)
            else:
                _qcsr_rows(vp, jp, ip, sp, Xp, alpha, beta, Yp, 0, m)
        return
    if m == 0 or k == 0:
        return
    if n_threads < 1 or m == 1:
        n_threads = 1
    buf = _scratch(n_threads, k * sizeof(float), &stride)
    try:
        with nogil:
            if n_threads > 1:
                with parallel(num_threads=n_threads):
                    nt = _team_size()
                    r0 = _first_row(ip, m, threadid(), nt)
                    r1 = _first_row(ip, m, threadid() + 1, nt)
                    _qcsr_rows_mat(vp, jp, ip, sp, Xp, k, alpha, beta, Yp,
                                   <float*>(_aligned(buf) + threadid() * stride),
                                   r0, r1)
            else:
                _qcsr_rows_mat(vp, jp, ip, sp, Xp, k, alpha, beta, Yp,
                               <float*>_aligned(buf), 0, m)
    finally:
        free(buf)
