"""Sparse matrix-vector kernels, compiled: the "cython" backend of
kernels.sparse.

Same names, arguments and semantics as ``kernels._reference.sparse`` (the
specification, input contract included: a kernel trusts the structure it is
given).  Supported dtypes: float32 or float64 values (``data``, ``x``,
``y``) with int32 or int64 ``indices`` and ``indptr`` (both the same); a
quantised matrix has int8 values, uint8, uint16 or int32 ``indices``, int32
or int64 ``indptr`` and float32 ``scales``, ``x`` and ``y``.  Anything else
is a TypeError, a wrong number of dimensions a ValueError, a non-contiguous
array or a read-only output the exporter's error.

Entry: a kernel takes its arrays through the buffer protocol (one
PyObject_GetBuffer each, C-contiguous), reads their dtypes from the buffer
formats, and calls the fused-type implementation for that combination.
That costs about a quarter of what typed-memoryview arguments with fused
dispatch cost (~0.7 vs ~2.7 us for a call with five arrays, measured here):
for small matrices the call is most of the time.

Rows are summed in the values' dtype (float32 for quantised matrices) with
eight independent partial sums (the lanes of two SIMD vectors for float32
and int8 values, through GCC/Clang vector extensions); alpha, beta and the
row scale are applied once per row, in double.  ``y`` is not read when
beta == 0.  With ``n_threads > 1`` and an OpenMP build, the rows are cut
into one consecutive range per thread of about equal work (stored entries
plus rows); the transposed products scatter into y and run serially.

Beside the kernels, two classes (outside the kernel contract: only this
backend has them) hold a model's or a matrix's buffers once, so that a
small product costs no buffer acquisition per array: ``MLPPlan`` runs one
sample through a whole chain of layers in one call, for
``kernels.nn.SparseMLP``: the same row loops and epilogues as the layer
kernels at batch 1, without a kernel call per layer and a Python loop;
``MatvecPlan`` runs one matrix-vector product of a CSR or quantised matrix,
for ``kernels.spmv``: the row loops of csr_matvec / qcsr_matvec.
"""

from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_STRIDES,
                             PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer)
from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.math cimport isnan, tanh, tanhf
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset


cdef extern from *:
    r"""
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #ifdef _OPENMP
    #include <omp.h>
    static int kernels_sparse_team_size(void) { return omp_get_num_threads(); }
    #else
    static int kernels_sparse_team_size(void) { return 1; }
    #endif

    /* The row loops below are written with their partial sums explicit.
       GCC's auto-vectoriser would regroup them into ordered (fold-left)
       reductions, one scalar add after another: slower than the plain loop. */
    #if defined(__GNUC__) && !defined(__clang__)
    #define KERNELS_SPARSE_NOVEC __attribute__((optimize("no-tree-vectorize")))
    #else
    #define KERNELS_SPARSE_NOVEC
    #endif

    /* y_i = alpha * row + beta * y_i in double; y_i not read when beta == 0. */
    #define KERNELS_SPARSE_STORE(Y, ROW, ALPHA, BETA, ST)                          \
        ((Y) = (ST)((BETA) == 0 ? (ALPHA) * (ROW)                                  \
                                : (ALPHA) * (ROW) + (BETA) * (double)(Y)))

    /* Scalar rows r0 <= i < r1 of y = alpha * diag(scales) A x + beta * y
       (scales NULL: none).  Row i sums v[p] * x[col[p]] in ST with eight
       partial sums over blocks of eight entries (s_k takes the entries
       p = k (mod 8)), so that eight multiply-adds are in flight instead of one
       add waiting on the previous; a last block of four goes to s_0..s_3, then
       s_k += s_(k+4), the 0-3 leftover entries go to s_0, and the row total is
       (s_0 + s_1) + (s_2 + s_3).  Pointers are bumped, no index arithmetic. */
    #define KERNELS_SPARSE_ROWS_SCALAR(NAME, VT, IT, PT, ST)                       \
    static KERNELS_SPARSE_NOVEC void NAME(                                         \
        const VT *data, const IT *indices, const PT *indptr, const float *scales,  \
        const ST *x, double alpha, double beta, ST *y, ptrdiff_t r0, ptrdiff_t r1) \
    {                                                                              \
        const VT *v = data + indptr[r0];                                           \
        const IT *col = indices + indptr[r0];                                      \
        ptrdiff_t i;                                                               \
        for (i = r0; i < r1; ++i) {                                                \
            const VT *end = data + indptr[i + 1];                                  \
            const VT *end8 = v + ((end - v) & ~(ptrdiff_t)7);                      \
            ST s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;     \
            double row;                                                            \
            for (; v < end8; v += 8, col += 8) {                                   \
                s0 += (ST)v[0] * x[col[0]];                                        \
                s1 += (ST)v[1] * x[col[1]];                                        \
                s2 += (ST)v[2] * x[col[2]];                                        \
                s3 += (ST)v[3] * x[col[3]];                                        \
                s4 += (ST)v[4] * x[col[4]];                                        \
                s5 += (ST)v[5] * x[col[5]];                                        \
                s6 += (ST)v[6] * x[col[6]];                                        \
                s7 += (ST)v[7] * x[col[7]];                                        \
            }                                                                      \
            if (end - v >= 4) {                                                    \
                s0 += (ST)v[0] * x[col[0]];                                        \
                s1 += (ST)v[1] * x[col[1]];                                        \
                s2 += (ST)v[2] * x[col[2]];                                        \
                s3 += (ST)v[3] * x[col[3]];                                        \
                v += 4;                                                            \
                col += 4;                                                          \
            }                                                                      \
            s0 += s4;                                                              \
            s1 += s5;                                                              \
            s2 += s6;                                                              \
            s3 += s7;                                                              \
            for (; v < end; ++v, ++col)                                            \
                s0 += (ST)v[0] * x[col[0]];                                        \
            row = (double)((s0 + s1) + (s2 + s3));                                 \
            if (scales)                                                            \
                row *= scales[i];                                                  \
            KERNELS_SPARSE_STORE(y[i], row, alpha, beta, ST);                      \
        }                                                                          \
    }

    #if defined(__GNUC__)
    /* float32 rows with the eight partial sums as the lanes of two 4-float
       vectors (GCC/Clang vector extensions: SSE2 on x86-64, NEON on aarch64,
       plain scalar code elsewhere): per four entries, one vector load of the
       values (four int8 values widened), four scalar loads of x gathered into a
       vector, one multiply and one add, where the scalar loop issues four of
       each.  Same sums in the same order as the scalar loop. */
    typedef float kernels_sparse_v4f __attribute__((vector_size(16)));

    static inline kernels_sparse_v4f kernels_sparse_load4_f32(const float *v)
    {
        kernels_sparse_v4f a;
        memcpy(&a, v, sizeof a);
        return a;
    }

    #if defined(__SSE2__)
    #include <emmintrin.h>
    /* Four int8 to float32: SSE2 has no sign-extending load; duplicate each byte
       into the top byte of its 32-bit lane, shift it back arithmetically. */
    static inline kernels_sparse_v4f kernels_sparse_load4_i8(const signed char *v)
    {
        int32_t w;
        __m128i b;
        memcpy(&w, v, sizeof w);
        b = _mm_cvtsi32_si128(w);
        b = _mm_unpacklo_epi8(b, b);
        b = _mm_unpacklo_epi16(b, b);
        return (kernels_sparse_v4f)_mm_cvtepi32_ps(_mm_srai_epi32(b, 24));
    }
    #elif defined(__ARM_NEON)
    #include <arm_neon.h>
    /* Four int8 to float32: widen 8 -> 16 -> 32 bits, convert. */
    static inline kernels_sparse_v4f kernels_sparse_load4_i8(const signed char *v)
    {
        int32_t w;
        int16x8_t h;
        memcpy(&w, v, sizeof w);
        h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w)));
        return (kernels_sparse_v4f)vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
    }
    #else
    static inline kernels_sparse_v4f kernels_sparse_load4_i8(const signed char *v)
    {
        kernels_sparse_v4f a = {(float)v[0], (float)v[1], (float)v[2], (float)v[3]};
        return a;
    }
    #endif

    #define KERNELS_SPARSE_ROWS_V4F(NAME, VT, IT, PT, LOAD4)                       \
    static KERNELS_SPARSE_NOVEC void NAME(                                         \
        const VT *data, const IT *indices, const PT *indptr, const float *scales,  \
        const float *x, double alpha, double beta, float *y, ptrdiff_t r0,         \
        ptrdiff_t r1)                                                              \
    {                                                                              \
        const VT *v = data + indptr[r0];                                           \
        const IT *col = indices + indptr[r0];                                      \
        ptrdiff_t i;                                                               \
        for (i = r0; i < r1; ++i) {                                                \
            const VT *end = data + indptr[i + 1];                                  \
            const VT *end8 = v + ((end - v) & ~(ptrdiff_t)7);                      \
            kernels_sparse_v4f acc = {0, 0, 0, 0}, acc2 = {0, 0, 0, 0};            \
            float s0;                                                              \
            double row;                                                            \
            for (; v < end8; v += 8, col += 8) {                                   \
                kernels_sparse_v4f xs = {x[col[0]], x[col[1]], x[col[2]],          \
                                         x[col[3]]};                               \
                kernels_sparse_v4f xs2 = {x[col[4]], x[col[5]], x[col[6]],         \
                                          x[col[7]]};                              \
                acc += LOAD4(v) * xs;                                              \
                acc2 += LOAD4(v + 4) * xs2;                                        \
            }                                                                      \
            if (end - v >= 4) {                                                    \
                kernels_sparse_v4f xs = {x[col[0]], x[col[1]], x[col[2]],          \
                                         x[col[3]]};                               \
                acc += LOAD4(v) * xs;                                              \
                v += 4;                                                            \
                col += 4;                                                          \
            }                                                                      \
            acc += acc2;                                                           \
            s0 = acc[0];                                                           \
            for (; v < end; ++v, ++col)                                            \
                s0 += (float)v[0] * x[col[0]];                                     \
            row = (double)((s0 + acc[1]) + (acc[2] + acc[3]));                     \
            if (scales)                                                            \
                row *= scales[i];                                                  \
            KERNELS_SPARSE_STORE(y[i], row, alpha, beta, float);                   \
        }                                                                          \
    }
    #define KERNELS_SPARSE_ROWS_F32(NAME, IT, PT)                                  \
        KERNELS_SPARSE_ROWS_V4F(NAME, float, IT, PT, kernels_sparse_load4_f32)
    #define KERNELS_SPARSE_ROWS_I8(NAME, IT, PT)                                   \
        KERNELS_SPARSE_ROWS_V4F(NAME, signed char, IT, PT, kernels_sparse_load4_i8)
    #else
    #define KERNELS_SPARSE_ROWS_F32(NAME, IT, PT)                                  \
        KERNELS_SPARSE_ROWS_SCALAR(NAME, float, IT, PT, float)
    #define KERNELS_SPARSE_ROWS_I8(NAME, IT, PT)                                   \
        KERNELS_SPARSE_ROWS_SCALAR(NAME, signed char, IT, PT, float)
    #endif

    KERNELS_SPARSE_ROWS_F32(kernels_sparse_rows_f_i32, int32_t, int32_t)
    KERNELS_SPARSE_ROWS_F32(kernels_sparse_rows_f_i64, int64_t, int64_t)
    KERNELS_SPARSE_ROWS_SCALAR(kernels_sparse_rows_d_i32, double, int32_t, int32_t,
                               double)
    KERNELS_SPARSE_ROWS_SCALAR(kernels_sparse_rows_d_i64, double, int64_t, int64_t,
                               double)
    KERNELS_SPARSE_ROWS_I8(kernels_sparse_rows_q_u8_i32, uint8_t, int32_t)
    KERNELS_SPARSE_ROWS_I8(kernels_sparse_rows_q_u8_i64, uint8_t, int64_t)
    KERNELS_SPARSE_ROWS_I8(kernels_sparse_rows_q_u16_i32, uint16_t, int32_t)
    KERNELS_SPARSE_ROWS_I8(kernels_sparse_rows_q_u16_i64, uint16_t, int64_t)
    KERNELS_SPARSE_ROWS_I8(kernels_sparse_rows_q_i32_i32, int32_t, int32_t)
    KERNELS_SPARSE_ROWS_I8(kernels_sparse_rows_q_i32_i64, int32_t, int64_t)
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
        const signed char*, const uint8_t*, const int32_t*, const float*,
        const float*, double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
    void _rows_q_u8_i64 "kernels_sparse_rows_q_u8_i64"(
        const signed char*, const uint8_t*, const int64_t*, const float*,
        const float*, double, double, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
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


# ---------------------------------------------------------------- buffers

cdef enum _Dtype:
    _OTHER, _FLOAT32, _FLOAT64, _INT8, _UINT8, _UINT16, _INT32, _INT64

_DTYPE_NAMES = (None, "float32", "float64", "int8", "uint8", "uint16", "int32",
                "int64")

cdef enum:
    _MAX_ARRAYS = 7  # qcsr_layer: values, indices, indptr, scales, X, Y, bias
    _ALIGN = 64  # bytes between per-thread scratch rows: no false sharing


cdef struct _Arrays:
    # The buffers a kernel holds, in argument order, released together.
    Py_buffer view[_MAX_ARRAYS]
    _Dtype dtype[_MAX_ARRAYS]
    const char* name[_MAX_ARRAYS]
    int n


cdef _Dtype _dtype_of(const Py_buffer* view) noexcept:
    """The dtype of a buffer from its struct format ("f", "@q", ...; native
    byte order only) and item size."""
    cdef const char* f = view.format
    cdef Py_ssize_t size = view.itemsize
    if f == NULL:
        return _UINT8
    if f[0] == b"@" or f[0] == b"=":
        f += 1
    if f[0] == 0 or f[1] != 0:
        return _OTHER
    if f[0] == b"f" and size == 4:
        return _FLOAT32
    if f[0] == b"d" and size == 8:
        return _FLOAT64
    if f[0] == b"b" and size == 1:
        return _INT8
    if f[0] == b"B" and size == 1:
        return _UINT8
    if f[0] == b"H" and size == 2:
        return _UINT16
    if f[0] in b"ilqn":
        if size == 4:
            return _INT32
        if size == 8:
            return _INT64
    return _OTHER


cdef int _take(_Arrays* a, object obj, int ndim, bint writable,
               const char* name) except -1:
    """Acquire obj as the next C-contiguous buffer of a (writable for an
    output) and check its number of dimensions."""
    cdef Py_buffer* view = &a.view[a.n]
    cdef int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
    if writable:
        flags |= PyBUF_WRITABLE
    PyObject_GetBuffer(obj, view, flags)
    a.dtype[a.n] = _dtype_of(view)
    a.name[a.n] = name
    a.n += 1
    if view.ndim != ndim:
        raise ValueError(
            f"{name.decode()} must be {ndim}-D, got {view.ndim}-D")
    return 0


cdef void _release(_Arrays* a) noexcept:
    while a.n > 0:
        a.n -= 1
        PyBuffer_Release(&a.view[a.n])


cdef str _dtype_name(const Py_buffer* view, _Dtype dtype):
    if dtype != _OTHER:
        return _DTYPE_NAMES[dtype]
    fmt = view.format.decode("ascii", "replace") if view.format != NULL else "B"
    return f"format {fmt!r} of {view.itemsize}-byte items"


cdef object _dtype_error(const _Arrays* a, str kernel, str expected):
    got = ", ".join(f"{a.name[i].decode()} {_dtype_name(&a.view[i], a.dtype[i])}"
                    for i in range(a.n))
    return TypeError(f"{kernel}: expected {expected}; got {got}")


# The dtype combinations, in the order of the dispatch in every kernel:
# (values, indices and indptr) for float matrices, (indices, indptr) for
# quantised ones.
cdef enum:
    _F32_I32, _F32_I64, _F64_I32, _F64_I64

cdef enum:
    _U8_I32, _U8_I64, _U16_I32, _U16_I64, _I32_I32, _I32_I64


cdef int _float_kind(const _Arrays* a, str kernel) except -1:
    """The combination of a float matrix kernel: arrays 0, 1, 2 are data,
    indices, indptr; every later array has the dtype of data."""
    cdef _Dtype v = a.dtype[0], i = a.dtype[1]
    cdef int k
    ok = (v == _FLOAT32 or v == _FLOAT64) and (i == _INT32 or i == _INT64)
    ok = ok and a.dtype[2] == i
    for k in range(3, a.n):
        ok = ok and a.dtype[k] == v
    if not ok:
        raise _dtype_error(
            a, kernel, "float32 or float64 values and vectors, int32 or int64 "
            "indices and indptr (of one dtype)")
    return 2 * (v == _FLOAT64) + (i == _INT64)


cdef int _quantised_kind(const _Arrays* a, str kernel) except -1:
    """The combination of a quantised kernel: arrays 0, 1, 2 are values,
    indices, indptr; every later array (scales, x, y) is float32."""
    cdef _Dtype i = a.dtype[1], p = a.dtype[2]
    cdef int k
    ok = a.dtype[0] == _INT8 and (i == _UINT8 or i == _UINT16 or i == _INT32)
    ok = ok and (p == _INT32 or p == _INT64)
    for k in range(3, a.n):
        ok = ok and a.dtype[k] == _FLOAT32
    if not ok:
        raise _dtype_error(
            a, kernel, "int8 values, uint8, uint16 or int32 indices, int32 or "
            "int64 indptr, float32 scales and vectors")
    return 2 * (0 if i == _UINT8 else 1 if i == _UINT16 else 2) + (p == _INT64)


cdef char* _scratch(int n_threads, Py_ssize_t size, Py_ssize_t* stride) except NULL:
    """One scratch row of size bytes per thread, each 64-byte aligned in one
    malloc'd block (free it with free())."""
    cdef char* block
    stride[0] = (size + _ALIGN - 1) // _ALIGN * _ALIGN
    block = <char*>malloc(n_threads * stride[0] + _ALIGN)
    if block == NULL:
        raise MemoryError()
    return block


cdef inline char* _aligned(char* block) noexcept nogil:
    return block + (-<size_t>block) % _ALIGN


# ---------------------------------------------------------------- helpers

cdef inline Py_ssize_t _first_row(const index_t* indptr, Py_ssize_t m,
                                  int part, int parts) noexcept nogil:
    """First row of the part-th of `parts` consecutive row ranges of about
    equal work, one unit per stored entry and one per row: the smallest r
    with indptr[r] + r >= (indptr[m] + m) * part / parts."""
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
    """y[:k] = alpha * acc[:k] + beta * y[:k] in double; y not read when
    beta == 0."""
    cdef Py_ssize_t t
    if beta == 0:
        for t in range(k):
            y[t] = <floating>(alpha * acc[t])
    else:
        for t in range(k):
            y[t] = <floating>(alpha * acc[t] + beta * y[t])


cdef inline void _scale(floating* y, Py_ssize_t n, double beta) noexcept nogil:
    """y *= beta before a scatter into y; y = 0, unread, when beta == 0."""
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
    stored entries (vectorised over the batch)."""
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
    """acc[:k] = sum over p < n of v[p] * X[col[p], :k] (rows of X of
    length k), four entries per pass over acc."""
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


# ---------------------------------------------------------------- layers

cdef enum:
    # activation codes, as kernels._reference.sparse.ACTIVATIONS
    _IDENTITY, _RELU, _TANH, _SIGMOID


cdef struct _Epilogue:
    # What a layer kernel adds to a product: the bias (one value of the
    # output's dtype per row; NULL for a plain product) and the activation,
    # applied to each thread's rows as soon as they are written, while they
    # are in cache.
    const void* bias
    int activation


cdef _Epilogue _NO_EPILOGUE = _Epilogue(NULL, _IDENTITY)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef void _epilogue(const _Epilogue* e, floating* Y, Py_ssize_t k, Py_ssize_t r0,
                    Py_ssize_t r1) noexcept nogil:
    """Rows r0 <= i < r1 of Y (k entries each): Y[i, :] =
    activation(Y[i, :] + bias[i]); relu keeps NaN as np.maximum(v, 0) does,
    sigmoid is 0.5 * tanh(v / 2) + 0.5 (no overflow).  Nothing when e.bias
    is NULL.  O((r1 - r0) * k), in cache."""
    cdef const floating* bias = <const floating*>e.bias
    cdef floating* row
    cdef floating v, bi
    cdef Py_ssize_t i, t
    if bias == NULL:
        return
    for i in range(r0, r1):
        row = Y + i * k
        bi = bias[i]
        if e.activation == _RELU:
            for t in range(k):
                v = row[t] + bi
                row[t] = 0 if v < 0 else v
        elif e.activation == _TANH:
            for t in range(k):
                row[t] = _tanh(row[t] + bi)
        elif e.activation == _SIGMOID:
            for t in range(k):
                v = <floating>0.5 * (row[t] + bi)
                row[t] = <floating>0.5 * _tanh(v) + <floating>0.5
        else:
            for t in range(k):
                row[t] = row[t] + bi


# ---------------------------------------------------------------- row ranges

cdef inline void _csr_rows(const floating* data, const index_t* indices,
                           const index_t* indptr, const floating* x, double alpha,
                           double beta, floating* y, Py_ssize_t r0,
                           Py_ssize_t r1) noexcept nogil:
    """Rows r0 <= i < r1 of y = alpha * A x + beta * y (the C row loops)."""
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


cdef void _csr_rows_mat(const floating* data, const index_t* indices,
                        const index_t* indptr, const floating* X, Py_ssize_t k,
                        double alpha, double beta, floating* Y, floating* acc,
                        Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0 <= i < r1 of Y = alpha * A X + beta * Y; acc holds k."""
    cdef Py_ssize_t i, start = indptr[r0], stop
    for i in range(r0, r1):
        stop = indptr[i + 1]
        _row_axpy(acc, k, data + start, indices + start, stop - start, X)
        _finish(Y + i * k, acc, k, alpha, beta)
        start = stop


cdef void _qcsr_rows_mat(const signed char* values, const qindex_t* indices,
                         const qptr_t* indptr, const float* scales, const float* X,
                         Py_ssize_t k, double alpha, double beta, float* Y,
                         float* acc, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0 <= i < r1 of Y = alpha * diag(scales) Q X + beta * Y."""
    cdef Py_ssize_t i, start = indptr[r0], stop
    for i in range(r0, r1):
        stop = indptr[i + 1]
        _qrow_axpy(acc, k, values + start, indices + start, stop - start, X)
        _finish(Y + i * k, acc, k, alpha * scales[i], beta)
        start = stop


cdef inline floating _bsr_dot(const floating* v, Py_ssize_t stride,
                              const index_t* col, Py_ssize_t n_blocks,
                              Py_ssize_t c, const floating* x) noexcept nogil:
    """One row of a block row: sum over blocks b < n_blocks of the c values
    v[b * stride : b * stride + c] times x[col[b] * c : col[b] * c + c].
    Partial sums: four over the columns of a block when c >= 4, four over the
    blocks when c == 1, one per column when c is 2 or 3."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef const floating* w
    cdef const floating* xb
    cdef Py_ssize_t b = 0, cc
    if c >= 4:
        for b in range(n_blocks):
            w = v + b * stride
            xb = x + col[b] * c
            cc = 0
            while cc + 4 <= c:
                s0 += w[cc] * xb[cc]
                s1 += w[cc + 1] * xb[cc + 1]
                s2 += w[cc + 2] * xb[cc + 2]
                s3 += w[cc + 3] * xb[cc + 3]
                cc += 4
            while cc < c:
                s0 += w[cc] * xb[cc]
                cc += 1
    elif c == 1:
        while b + 4 <= n_blocks:
            s0 += v[b * stride] * x[col[b]]
            s1 += v[(b + 1) * stride] * x[col[b + 1]]
            s2 += v[(b + 2) * stride] * x[col[b + 2]]
            s3 += v[(b + 3) * stride] * x[col[b + 3]]
            b += 4
        while b < n_blocks:
            s0 += v[b * stride] * x[col[b]]
            b += 1
    elif c > 1:
        for b in range(n_blocks):
            w = v + b * stride
            xb = x + col[b] * c
            s0 += w[0] * xb[0]
            s1 += w[1] * xb[1]
            if c == 3:
                s2 += w[2] * xb[2]
    return (s0 + s1) + (s2 + s3)


cdef void _bsr_rows(const floating* data, const index_t* indices,
                    const index_t* indptr, Py_ssize_t r, Py_ssize_t c,
                    const floating* x, double alpha, double beta, floating* y,
                    floating* acc, Py_ssize_t b0, Py_ssize_t b1) noexcept nogil:
    """Block rows b0 <= I < b1 (rows I * r to I * r + r - 1) of
    y = alpha * A x + beta * y; acc holds r sums.  4 x 4 blocks have their
    own loop (four row sums, one pass over the blocks); other shapes sum each
    of the r rows in turn, from cache after the first."""
    cdef Py_ssize_t I, b, rr, start, n_blocks, rc = r * c
    cdef const floating* blk
    cdef const floating* xb
    cdef floating s0, s1, s2, s3
    for I in range(b0, b1):
        start = indptr[I]
        n_blocks = indptr[I + 1] - start
        if r == 4 and c == 4:
            s0 = s1 = s2 = s3 = 0
            for b in range(start, start + n_blocks):
                blk = data + b * 16
                xb = x + <Py_ssize_t>indices[b] * 4
                s0 += ((blk[0] * xb[0] + blk[1] * xb[1])
                       + (blk[2] * xb[2] + blk[3] * xb[3]))
                s1 += ((blk[4] * xb[0] + blk[5] * xb[1])
                       + (blk[6] * xb[2] + blk[7] * xb[3]))
                s2 += ((blk[8] * xb[0] + blk[9] * xb[1])
                       + (blk[10] * xb[2] + blk[11] * xb[3]))
                s3 += ((blk[12] * xb[0] + blk[13] * xb[1])
                       + (blk[14] * xb[2] + blk[15] * xb[3]))
            acc[0] = s0
            acc[1] = s1
            acc[2] = s2
            acc[3] = s3
        else:
            for rr in range(r):
                acc[rr] = _bsr_dot(data + start * rc + rr * c, rc, indices + start,
                                   n_blocks, c, x)
        _finish(y + I * r, acc, r, alpha, beta)


cdef void _bsr_rows_mat(const floating* data, const index_t* indices,
                        const index_t* indptr, Py_ssize_t r, Py_ssize_t c,
                        const floating* X, Py_ssize_t k, double alpha,
                        double beta, floating* Y, floating* acc, Py_ssize_t b0,
                        Py_ssize_t b1) noexcept nogil:
    """Block rows b0 <= I < b1 of Y = alpha * A X + beta * Y; acc holds
    r * k (the block row's r rows of Y, accumulated four columns of a block
    per pass)."""
    cdef Py_ssize_t I, b, rr, cc, rc = r * c
    cdef const floating* blk
    cdef const floating* xb
    cdef floating* out
    for I in range(b0, b1):
        memset(acc, 0, r * k * sizeof(floating))
        for b in range(indptr[I], indptr[I + 1]):
            blk = data + b * rc
            xb = X + indices[b] * c * k
            for rr in range(r):
                out = acc + rr * k
                cc = 0
                while cc + 4 <= c:
                    _axpy4(out, k, blk[rr * c + cc], xb + cc * k,
                           blk[rr * c + cc + 1], xb + (cc + 1) * k,
                           blk[rr * c + cc + 2], xb + (cc + 2) * k,
                           blk[rr * c + cc + 3], xb + (cc + 3) * k)
                    cc += 4
                while cc < c:
                    _axpy(out, k, blk[rr * c + cc], xb + cc * k)
                    cc += 1
        _finish(Y + I * r * k, acc, r * k, alpha, beta)


# ---------------------------------------------------------------- implementations
# One fused function per kernel, with the typed pointers that select the
# specialisation; the remaining arrays come from the buffers b (in argument
# order), already checked by the def that dispatches here.

cdef void _csr_matvec(const floating* data, const index_t* indices,
                      const Py_buffer* b, double alpha, double beta,
                      int n_threads, const _Epilogue* e) noexcept nogil:
    cdef const index_t* indptr = <const index_t*>b[2].buf
    cdef const floating* x = <const floating*>b[3].buf
    cdef floating* y = <floating*>b[4].buf
    cdef Py_ssize_t m = b[2].shape[0] - 1, r0 = 0, r1 = 0
    cdef int nt = 1
    if n_threads > 1 and m > 1:
        with parallel(num_threads=n_threads):
            nt = _team_size()
            r0 = _first_row(indptr, m, threadid(), nt)
            r1 = _first_row(indptr, m, threadid() + 1, nt)
            _csr_rows(data, indices, indptr, x, alpha, beta, y, r0, r1)
            _epilogue(e, y, 1, r0, r1)
    else:
        _csr_rows(data, indices, indptr, x, alpha, beta, y, 0, m)
        _epilogue(e, y, 1, 0, m)


cdef void _csr_matvec_t(const floating* data, const index_t* indices,
                        const Py_buffer* b, double alpha, double beta) noexcept nogil:
    cdef const index_t* indptr = <const index_t*>b[2].buf
    cdef const floating* x = <const floating*>b[3].buf
    cdef floating* y = <floating*>b[4].buf
    cdef Py_ssize_t m = b[2].shape[0] - 1, i, p
    cdef floating xi
    _scale(y, b[4].shape[0], beta)
    for i in range(m):
        xi = <floating>(alpha * x[i])
        for p in range(indptr[i], indptr[i + 1]):
            y[indices[p]] += data[p] * xi


cdef void _csr_matmat(const floating* data, const index_t* indices,
                      const Py_buffer* b, double alpha, double beta,
                      int n_threads, char* scratch, Py_ssize_t stride,
                      const _Epilogue* e) noexcept nogil:
    cdef const index_t* indptr = <const index_t*>b[2].buf
    cdef const floating* X = <const floating*>b[3].buf
    cdef floating* Y = <floating*>b[4].buf
    cdef Py_ssize_t m = b[2].shape[0] - 1, k = b[4].shape[1], r0 = 0, r1 = 0
    cdef int nt = 1
    if k == 1:
        # A column: the matvec row loops (X and Y are contiguous vectors).
        _csr_matvec(data, indices, b, alpha, beta, n_threads, e)
    elif n_threads > 1 and m > 1:
        with parallel(num_threads=n_threads):
            nt = _team_size()
            r0 = _first_row(indptr, m, threadid(), nt)
            r1 = _first_row(indptr, m, threadid() + 1, nt)
            _csr_rows_mat(data, indices, indptr, X, k, alpha, beta, Y,
                          <floating*>(_aligned(scratch) + threadid() * stride), r0, r1)
            _epilogue(e, Y, k, r0, r1)
    else:
        _csr_rows_mat(data, indices, indptr, X, k, alpha, beta, Y,
                      <floating*>_aligned(scratch), 0, m)
        _epilogue(e, Y, k, 0, m)


cdef void _bsr_matvec(const floating* data, const index_t* indices,
                      const Py_buffer* b, double alpha, double beta,
                      int n_threads, char* scratch, Py_ssize_t stride,
                      const _Epilogue* e) noexcept nogil:
    cdef const index_t* indptr = <const index_t*>b[2].buf
    cdef const floating* x = <const floating*>b[3].buf
    cdef floating* y = <floating*>b[4].buf
    cdef Py_ssize_t n_brows = b[2].shape[0] - 1, r = b[0].shape[1], c = b[0].shape[2]
    cdef Py_ssize_t b0 = 0, b1 = 0
    cdef int nt = 1
    if n_threads > 1 and n_brows > 1:
        with parallel(num_threads=n_threads):
            nt = _team_size()
            b0 = _first_row(indptr, n_brows, threadid(), nt)
            b1 = _first_row(indptr, n_brows, threadid() + 1, nt)
            _bsr_rows(data, indices, indptr, r, c, x, alpha, beta, y,
                      <floating*>(_aligned(scratch) + threadid() * stride), b0, b1)
            _epilogue(e, y, 1, b0 * r, b1 * r)
    else:
        _bsr_rows(data, indices, indptr, r, c, x, alpha, beta, y,
                  <floating*>_aligned(scratch), 0, n_brows)
        _epilogue(e, y, 1, 0, n_brows * r)


cdef void _bsr_matvec_t(const floating* data, const index_t* indices,
                        const Py_buffer* b, double alpha, double beta) noexcept nogil:
    cdef const index_t* indptr = <const index_t*>b[2].buf
    cdef const floating* x = <const floating*>b[3].buf
    cdef floating* y = <floating*>b[4].buf
    cdef Py_ssize_t n_brows = b[2].shape[0] - 1, r = b[0].shape[1], c = b[0].shape[2]
    cdef Py_ssize_t I, p, rr, cc, rc = r * c
    cdef const floating* blk
    cdef floating* yb
    cdef floating xi
    _scale(y, b[4].shape[0], beta)
    for I in range(n_brows):
        for p in range(indptr[I], indptr[I + 1]):
            blk = data + p * rc
            yb = y + indices[p] * c
            for rr in range(r):
                xi = <floating>(alpha * x[I * r + rr])
                for cc in range(c):
                    yb[cc] += blk[rr * c + cc] * xi


cdef void _bsr_matmat(const floating* data, const index_t* indices,
                      const Py_buffer* b, double alpha, double beta,
                      int n_threads, char* scratch, Py_ssize_t stride,
                      const _Epilogue* e) noexcept nogil:
    cdef const index_t* indptr = <const index_t*>b[2].buf
    cdef const floating* X = <const floating*>b[3].buf
    cdef floating* Y = <floating*>b[4].buf
    cdef Py_ssize_t n_brows = b[2].shape[0] - 1, r = b[0].shape[1], c = b[0].shape[2]
    cdef Py_ssize_t k = b[4].shape[1], b0 = 0, b1 = 0
    cdef int nt = 1
    if n_threads > 1 and n_brows > 1:
        with parallel(num_threads=n_threads):
            nt = _team_size()
            b0 = _first_row(indptr, n_brows, threadid(), nt)
            b1 = _first_row(indptr, n_brows, threadid() + 1, nt)
            _bsr_rows_mat(data, indices, indptr, r, c, X, k, alpha, beta, Y,
                          <floating*>(_aligned(scratch) + threadid() * stride), b0, b1)
            _epilogue(e, Y, k, b0 * r, b1 * r)
    else:
        _bsr_rows_mat(data, indices, indptr, r, c, X, k, alpha, beta, Y,
                      <floating*>_aligned(scratch), 0, n_brows)
        _epilogue(e, Y, k, 0, n_brows * r)


cdef void _qcsr_matvec(const qindex_t* indices, const qptr_t* indptr,
                       const Py_buffer* b, double alpha, double beta,
                       int n_threads, const _Epilogue* e) noexcept nogil:
    cdef const signed char* values = <const signed char*>b[0].buf
    cdef const float* scales = <const float*>b[3].buf
    cdef const float* x = <const float*>b[4].buf
    cdef float* y = <float*>b[5].buf
    cdef Py_ssize_t m = b[2].shape[0] - 1, r0 = 0, r1 = 0
    cdef int nt = 1
    if n_threads > 1 and m > 1:
        with parallel(num_threads=n_threads):
            nt = _team_size()
            r0 = _first_row(indptr, m, threadid(), nt)
            r1 = _first_row(indptr, m, threadid() + 1, nt)
            _qcsr_rows(values, indices, indptr, scales, x, alpha, beta, y, r0, r1)
            _epilogue(e, y, 1, r0, r1)
    else:
        _qcsr_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)
        _epilogue(e, y, 1, 0, m)


cdef void _qcsr_matvec_t(const qindex_t* indices, const qptr_t* indptr,
                         const Py_buffer* b, double alpha, double beta) noexcept nogil:
    cdef const signed char* values = <const signed char*>b[0].buf
    cdef const float* scales = <const float*>b[3].buf
    cdef const float* x = <const float*>b[4].buf
    cdef float* y = <float*>b[5].buf
    cdef Py_ssize_t m = b[2].shape[0] - 1, i, p
    cdef float xi
    _scale(y, b[5].shape[0], beta)
    for i in range(m):
        xi = <float>(alpha * (<double>scales[i] * x[i]))
        for p in range(indptr[i], indptr[i + 1]):
            y[indices[p]] += <float>values[p] * xi


cdef void _qcsr_matmat(const qindex_t* indices, const qptr_t* indptr,
                       const Py_buffer* b, double alpha, double beta,
                       int n_threads, char* scratch, Py_ssize_t stride,
                       const _Epilogue* e) noexcept nogil:
    cdef const signed char* values = <const signed char*>b[0].buf
    cdef const float* scales = <const float*>b[3].buf
    cdef const float* X = <const float*>b[4].buf
    cdef float* Y = <float*>b[5].buf
    cdef Py_ssize_t m = b[2].shape[0] - 1, k = b[5].shape[1], r0 = 0, r1 = 0
    cdef int nt = 1
    if k == 1:
        _qcsr_matvec(indices, indptr, b, alpha, beta, n_threads, e)
    elif n_threads > 1 and m > 1:
        with parallel(num_threads=n_threads):
            nt = _team_size()
            r0 = _first_row(indptr, m, threadid(), nt)
            r1 = _first_row(indptr, m, threadid() + 1, nt)
            _qcsr_rows_mat(values, indices, indptr, scales, X, k, alpha, beta, Y,
                           <float*>(_aligned(scratch) + threadid() * stride), r0, r1)
            _epilogue(e, Y, k, r0, r1)
    else:
        _qcsr_rows_mat(values, indices, indptr, scales, X, k, alpha, beta, Y,
                       <float*>_aligned(scratch), 0, m)
        _epilogue(e, Y, k, 0, m)


# ---------------------------------------------------------------- kernels

def csr_matvec(data, indices, indptr, x, double alpha, double beta, y, int n_threads):
    """y = alpha * A @ x + beta * y for A in CSR (m x n).

    y_i = alpha * sum_{p in row i} data[p] * x[indices[p]] + beta * y_i,
    each row summed in the values' dtype with eight partial sums.
    O(nnz + m); moves nnz * (sv + si) + (m + 1) * si + m * sv bytes (plus x,
    n * sv, from cache when it fits).  Rows split over n_threads threads.
    """
    cdef _Arrays a
    cdef const Py_buffer* b = a.view
    cdef int kind
    a.n = 0
    try:
        _take(&a, data, 1, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, x, 1, False, b"x")
        _take(&a, y, 1, True, b"y")
        kind = _float_kind(&a, "csr_matvec")
        with nogil:
            if kind == _F32_I32:
                _csr_matvec(<const float*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, &_NO_EPILOGUE)
            elif kind == _F32_I64:
                _csr_matvec(<const float*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, &_NO_EPILOGUE)
            elif kind == _F64_I32:
                _csr_matvec(<const double*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, &_NO_EPILOGUE)
            else:
                _csr_matvec(<const double*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, &_NO_EPILOGUE)
    finally:
        _release(&a)


def csr_matvec_t(data, indices, indptr, x, double alpha, double beta, y):
    """y = alpha * A.T @ x + beta * y without forming the transpose (x has m
    entries, y has n): y is scaled by beta (zeroed, unread, when beta == 0),
    then row i scatters data[p] * (alpha * x_i) into y[indices[p]].  Serial.
    O(nnz + m + n); moves nnz * (sv + si) + (m + 1) * si + m * sv bytes plus
    y read and written (from cache when it fits).
    """
    cdef _Arrays a
    cdef const Py_buffer* b = a.view
    cdef int kind
    a.n = 0
    try:
        _take(&a, data, 1, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, x, 1, False, b"x")
        _take(&a, y, 1, True, b"y")
        kind = _float_kind(&a, "csr_matvec_t")
        with nogil:
            if kind == _F32_I32:
                _csr_matvec_t(<const float*>b[0].buf, <const int32_t*>b[1].buf, b,
                              alpha, beta)
            elif kind == _F32_I64:
                _csr_matvec_t(<const float*>b[0].buf, <const int64_t*>b[1].buf, b,
                              alpha, beta)
            elif kind == _F64_I32:
                _csr_matvec_t(<const double*>b[0].buf, <const int32_t*>b[1].buf, b,
                              alpha, beta)
            else:
                _csr_matvec_t(<const double*>b[0].buf, <const int64_t*>b[1].buf, b,
                              alpha, beta)
    finally:
        _release(&a)


cdef int _csr_matmat_run(_Arrays* a, str kernel, double alpha, double beta,
                         int n_threads, const _Epilogue* e) except -1:
    """csr_matmat, or csr_layer with its epilogue e, on the buffers taken
    in a (the kernel's arrays in argument order, a layer's bias last)."""
    cdef const Py_buffer* b = a.view
    cdef int kind
    cdef char* scratch = NULL
    cdef Py_ssize_t stride = 0
    n_threads = max(n_threads, 1)
    try:
        kind = _float_kind(a, kernel)
        if b[4].shape[0] == 0 or b[4].shape[1] == 0:
            return 0
        if b[4].shape[1] > 1:
            scratch = _scratch(n_threads, b[4].shape[1] * b[4].itemsize, &stride)
        with nogil:
            if kind == _F32_I32:
                _csr_matmat(<const float*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
            elif kind == _F32_I64:
                _csr_matmat(<const float*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
            elif kind == _F64_I32:
                _csr_matmat(<const double*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
            else:
                _csr_matmat(<const double*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
    finally:
        free(scratch)
    return 0


def csr_matmat(data, indices, indptr, X, double alpha, double beta, Y, int n_threads):
    """Y = alpha * A @ X + beta * Y for a feature-major batch X (n, k),
    Y (m, k).

    Row i accumulates data[p] * X[indices[p], :] over its entries, four at a
    time, into a k-long scratch row (contiguous, vectorised), then writes
    Y[i, :] once; k == 1 runs the matvec loops.  O(nnz * k + m * k); moves
    nnz * (sv + si) + (m + 1) * si + m * k * sv bytes plus X (n * k * sv,
    from cache when it fits): each loaded entry serves k multiply-adds.
    Rows split over n_threads threads.
    """
    cdef _Arrays a
    a.n = 0
    try:
        _take(&a, data, 1, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, X, 2, False, b"X")
        _take(&a, Y, 2, True, b"Y")
        _csr_matmat_run(&a, "csr_matmat", alpha, beta, n_threads, &_NO_EPILOGUE)
    finally:
        _release(&a)


def csr_layer(data, indices, indptr, bias, X, int activation, Y, int n_threads):
    """Y = activation(A @ X + bias[:, None]) for A in CSR (m x n), a
    feature-major batch X (n, k) and Y (m, k): one layer of a network.

    csr_matmat with alpha = 1, beta = 0, then each thread adds the bias to
    the rows it has just written and applies the activation (0 identity,
    1 relu, 2 tanh, 3 sigmoid; kernels._reference.sparse.ACTIVATIONS) while
    they are in cache: Y is written once, with no pass of its own.
    O(nnz * k + m * k); moves the bytes of csr_matmat plus m * sv of bias.
    """
    cdef _Arrays a
    cdef _Epilogue e
    a.n = 0
    try:
        _take(&a, data, 1, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, X, 2, False, b"X")
        _take(&a, Y, 2, True, b"Y")
        _take(&a, bias, 1, False, b"bias")
        e.bias = a.view[5].buf
        e.activation = activation
        _csr_matmat_run(&a, "csr_layer", 1.0, 0.0, n_threads, &e)
    finally:
        _release(&a)



def bsr_matvec(data, indices, indptr, x, double alpha, double beta, y, int n_threads):
    """y = alpha * A @ x + beta * y for A in BSR with (r, c) blocks (data of
    shape (n_blocks, r, c), block-column indices, block-row indptr).

    Each block row sums its blocks into r row sums (4 x 4 blocks in one
    pass; other shapes one row at a time, four partial sums over the c
    columns or over the blocks), then writes its r entries of y.
    O(n_blocks * r * c + m); moves n_blocks * (r * c * sv + si)
    + (m / r + 1) * si + m * sv bytes (plus x).  Block rows split over
    n_threads threads.
    """
    cdef _Arrays a
    cdef const Py_buffer* b = a.view
    cdef int kind
    cdef char* scratch = NULL
    cdef Py_ssize_t stride = 0
    a.n = 0
    n_threads = max(n_threads, 1)
    try:
        _take(&a, data, 3, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, x, 1, False, b"x")
        _take(&a, y, 1, True, b"y")
        kind = _float_kind(&a, "bsr_matvec")
        if b[0].shape[1] == 0:
            return
        scratch = _scratch(n_threads, b[0].shape[1] * b[0].itemsize, &stride)
        with nogil:
            if kind == _F32_I32:
                _bsr_matvec(<const float*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, &_NO_EPILOGUE)
            elif kind == _F32_I64:
                _bsr_matvec(<const float*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, &_NO_EPILOGUE)
            elif kind == _F64_I32:
                _bsr_matvec(<const double*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, &_NO_EPILOGUE)
            else:
                _bsr_matvec(<const double*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, &_NO_EPILOGUE)
    finally:
        free(scratch)
        _release(&a)


def bsr_matvec_t(data, indices, indptr, x, double alpha, double beta, y):
    """y = alpha * A.T @ x + beta * y for A in BSR (x has m entries, y has n):
    y scaled by beta (zeroed, unread, when beta == 0), then each block adds
    its transpose times alpha * x into its c entries of y.  Serial.
    O(n_blocks * r * c + m + n); moves the bytes of bsr_matvec plus y read
    and written.
    """
    cdef _Arrays a
    cdef const Py_buffer* b = a.view
    cdef int kind
    a.n = 0
    try:
        _take(&a, data, 3, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, x, 1, False, b"x")
        _take(&a, y, 1, True, b"y")
        kind = _float_kind(&a, "bsr_matvec_t")
        with nogil:
            if kind == _F32_I32:
                _bsr_matvec_t(<const float*>b[0].buf, <const int32_t*>b[1].buf, b,
                              alpha, beta)
            elif kind == _F32_I64:
                _bsr_matvec_t(<const float*>b[0].buf, <const int64_t*>b[1].buf, b,
                              alpha, beta)
            elif kind == _F64_I32:
                _bsr_matvec_t(<const double*>b[0].buf, <const int32_t*>b[1].buf, b,
                              alpha, beta)
            else:
                _bsr_matvec_t(<const double*>b[0].buf, <const int64_t*>b[1].buf, b,
                              alpha, beta)
    finally:
        _release(&a)


cdef int _bsr_matmat_run(_Arrays* a, str kernel, double alpha, double beta,
                         int n_threads, const _Epilogue* e) except -1:
    """bsr_matmat, or bsr_layer with its epilogue e, on the buffers taken
    in a (the kernel's arrays in argument order, a layer's bias last)."""
    cdef const Py_buffer* b = a.view
    cdef int kind
    cdef char* scratch = NULL
    cdef Py_ssize_t stride = 0
    n_threads = max(n_threads, 1)
    try:
        kind = _float_kind(a, kernel)
        if b[0].shape[1] == 0 or b[4].shape[1] == 0:
            return 0
        scratch = _scratch(n_threads, b[0].shape[1] * b[4].shape[1] * b[4].itemsize,
                           &stride)
        with nogil:
            if kind == _F32_I32:
                _bsr_matmat(<const float*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
            elif kind == _F32_I64:
                _bsr_matmat(<const float*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
            elif kind == _F64_I32:
                _bsr_matmat(<const double*>b[0].buf, <const int32_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
            else:
                _bsr_matmat(<const double*>b[0].buf, <const int64_t*>b[1].buf, b,
                            alpha, beta, n_threads, scratch, stride, e)
    finally:
        free(scratch)
    return 0


def bsr_matmat(data, indices, indptr, X, double alpha, double beta, Y, int n_threads):
    """Y = alpha * A @ X + beta * Y for A in BSR, feature-major X (n, k) and
    Y (m, k): each block row accumulates r scratch rows of length k
    (contiguous, vectorised), then writes its r rows of Y once.
    O(n_blocks * r * c * k + m * k); moves n_blocks * (r * c * sv + si)
    + (m / r + 1) * si + m * k * sv bytes plus X.  Block rows split over
    n_threads threads.
    """
    cdef _Arrays a
    a.n = 0
    try:
        _take(&a, data, 3, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, X, 2, False, b"X")
        _take(&a, Y, 2, True, b"Y")
        _bsr_matmat_run(&a, "bsr_matmat", alpha, beta, n_threads, &_NO_EPILOGUE)
    finally:
        _release(&a)


def bsr_layer(data, indices, indptr, bias, X, int activation, Y, int n_threads):
    """Y = activation(A @ X + bias[:, None]) for A in BSR, feature-major X
    (n, k) and Y (m, k): bsr_matmat with alpha = 1, beta = 0, the bias and
    activation (codes as csr_layer) applied by each thread to the block rows
    it has just written.  O(n_blocks * r * c * k + m * k); moves the bytes of
    bsr_matmat plus m * sv of bias.
    """
    cdef _Arrays a
    cdef _Epilogue e
    a.n = 0
    try:
        _take(&a, data, 3, False, b"data")
        _take(&a, indices, 1, False, b"indices")
        _take(&a, indptr, 1, False, b"indptr")
        _take(&a, X, 2, False, b"X")
        _take(&a, Y, 2, True, b"Y")
        _take(&a, bias, 1, False, b"bias")
        e.bias = a.view[5].buf
        e.activation = activation
        _bsr_matmat_run(&a, "bsr_layer", 1.0, 0.0, n_threads, &e)
    finally:
        _release(&a)



cdef int _take_quantised(_Arrays* a, values, indices, indptr, scales, x, y,
                         int ndim) except -1:
    _take(a, values, 1, False, b"values")
    _take(a, indices, 1, False, b"indices")
    _take(a, indptr, 1, False, b"indptr")
    _take(a, scales, 1, False, b"scales")
    _take(a, x, ndim, False, b"x" if ndim == 1 else b"X")
    _take(a, y, ndim, True, b"y" if ndim == 1 else b"Y")
    return 0


def qcsr_matvec(values, indices, indptr, scales, x, double alpha, double beta, y,
                int n_threads):
    """y = alpha * diag(scales) @ Q @ x + beta * y for a quantised CSR matrix
    (int8 values Q, one float32 scale per row, float32 x and y).

    Row i sums float(Q[p]) * x[indices[p]] in float32 with eight partial
    sums, then is multiplied by scales[i] once.  O(nnz + m); moves
    nnz * (1 + si) + (m + 1) * spi + m * 4 (scales) + m * 4 (y) bytes (plus
    x).  Rows split over n_threads threads.
    """
    cdef _Arrays a
    cdef const Py_buffer* b = a.view
    cdef int kind
    a.n = 0
    try:
        _take_quantised(&a, values, indices, indptr, scales, x, y, 1)
        kind = _quantised_kind(&a, "qcsr_matvec")
        with nogil:
            if kind == _U8_I32:
                _qcsr_matvec(<const uint8_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                             alpha, beta, n_threads, &_NO_EPILOGUE)
            elif kind == _U8_I64:
                _qcsr_matvec(<const uint8_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                             alpha, beta, n_threads, &_NO_EPILOGUE)
            elif kind == _U16_I32:
                _qcsr_matvec(<const uint16_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                             alpha, beta, n_threads, &_NO_EPILOGUE)
            elif kind == _U16_I64:
                _qcsr_matvec(<const uint16_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                             alpha, beta, n_threads, &_NO_EPILOGUE)
            elif kind == _I32_I32:
                _qcsr_matvec(<const int32_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                             alpha, beta, n_threads, &_NO_EPILOGUE)
            else:
                _qcsr_matvec(<const int32_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                             alpha, beta, n_threads, &_NO_EPILOGUE)
    finally:
        _release(&a)


def qcsr_matvec_t(values, indices, indptr, scales, x, double alpha, double beta, y):
    """y = alpha * Q.T @ diag(scales) @ x + beta * y (x has m entries, y has
    n): y scaled by beta (zeroed, unread, when beta == 0), then row i
    scatters float(Q[p]) * (alpha * scales[i] * x[i]) into y[indices[p]].
    Serial.  O(nnz + m + n); moves the bytes of qcsr_matvec plus y read and
    written.
    """
    cdef _Arrays a
    cdef const Py_buffer* b = a.view
    cdef int kind
    a.n = 0
    try:
        _take_quantised(&a, values, indices, indptr, scales, x, y, 1)
        kind = _quantised_kind(&a, "qcsr_matvec_t")
        with nogil:
            if kind == _U8_I32:
                _qcsr_matvec_t(<const uint8_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                               alpha, beta)
            elif kind == _U8_I64:
                _qcsr_matvec_t(<const uint8_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                               alpha, beta)
            elif kind == _U16_I32:
                _qcsr_matvec_t(<const uint16_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                               alpha, beta)
            elif kind == _U16_I64:
                _qcsr_matvec_t(<const uint16_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                               alpha, beta)
            elif kind == _I32_I32:
                _qcsr_matvec_t(<const int32_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                               alpha, beta)
            else:
                _qcsr_matvec_t(<const int32_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                               alpha, beta)
    finally:
        _release(&a)


cdef int _qcsr_matmat_run(_Arrays* a, str kernel, double alpha, double beta,
                          int n_threads, const _Epilogue* e) except -1:
    """qcsr_matmat, or qcsr_layer with its epilogue e, on the buffers taken
    in a (the kernel's arrays in argument order, a layer's bias last)."""
    cdef const Py_buffer* b = a.view
    cdef int kind
    cdef char* scratch = NULL
    cdef Py_ssize_t stride = 0
    n_threads = max(n_threads, 1)
    try:
        kind = _quantised_kind(a, kernel)
        if b[5].shape[0] == 0 or b[5].shape[1] == 0:
            return 0
        if b[5].shape[1] > 1:
            scratch = _scratch(n_threads, b[5].shape[1] * b[5].itemsize, &stride)
        with nogil:
            if kind == _U8_I32:
                _qcsr_matmat(<const uint8_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                             alpha, beta, n_threads, scratch, stride, e)
            elif kind == _U8_I64:
                _qcsr_matmat(<const uint8_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                             alpha, beta, n_threads, scratch, stride, e)
            elif kind == _U16_I32:
                _qcsr_matmat(<const uint16_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                             alpha, beta, n_threads, scratch, stride, e)
            elif kind == _U16_I64:
                _qcsr_matmat(<const uint16_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                             alpha, beta, n_threads, scratch, stride, e)
            elif kind == _I32_I32:
                _qcsr_matmat(<const int32_t*>b[1].buf, <const int32_t*>b[2].buf, b,
                             alpha, beta, n_threads, scratch, stride, e)
            else:
                _qcsr_matmat(<const int32_t*>b[1].buf, <const int64_t*>b[2].buf, b,
                             alpha, beta, n_threads, scratch, stride, e)
    finally:
        free(scratch)
    return 0


def qcsr_matmat(values, indices, indptr, scales, X, double alpha, double beta, Y,
                int n_threads):
    """Y = alpha * diag(scales) @ Q @ X + beta * Y, feature-major X (n, k) and
    Y (m, k), float32: row i accumulates float(Q[p]) * X[indices[p], :] into
    a k-long float32 scratch row, then writes Y[i, :] with its scale once;
    k == 1 runs the matvec loops.  O(nnz * k + m * k); moves
    nnz * (1 + si) + (m + 1) * spi + m * 4 + m * k * 4 bytes plus X.  Rows
    split over n_threads threads.
    """
    cdef _Arrays a
    a.n = 0
    try:
        _take_quantised(&a, values, indices, indptr, scales, X, Y, 2)
        _qcsr_matmat_run(&a, "qcsr_matmat", alpha, beta, n_threads, &_NO_EPILOGUE)
    finally:
        _release(&a)


def qcsr_layer(values, indices, indptr, scales, bias, X, int activation, Y,
               int n_threads):
    """Y = activation(diag(scales) @ Q @ X + bias[:, None]) for a quantised
    CSR matrix, feature-major X (n, k) and Y (m, k), float32 (bias too):
    qcsr_matmat with alpha = 1, beta = 0, the bias and activation (codes as
    csr_layer) applied by each thread to the rows it has just written.
    O(nnz * k + m * k); moves the bytes of qcsr_matmat plus m * 4 of bias.
    """
    cdef _Arrays a
    cdef _Epilogue e
    a.n = 0
    try:
        _take_quantised(&a, values, indices, indptr, scales, X, Y, 2)
        _take(&a, bias, 1, False, b"bias")
        e.bias = a.view[6].buf
        e.activation = activation
        _qcsr_matmat_run(&a, "qcsr_layer", 1.0, 0.0, n_threads, &e)
    finally:
        _release(&a)


# ---------------------------------------------------------------- networks
# One sample through a whole chain of layers in one call: what
# kernels.nn.SparseMLP runs for a 1-D input on this backend.

cdef enum:
    _FORMAT_CSR, _FORMAT_BSR, _FORMAT_QUANTISED

cdef enum:
    # Per-call scratch up to this size lives on the C stack (no malloc);
    # wider networks take it from malloc.
    _PLAN_STACK_DOUBLES = 1024
    # Calls of at least this much work (stored entries + rows, summed over
    # the layers) release the GIL: below it, releasing and taking it back
    # (~0.1 us) would be a noticeable part of the call.
    _PLAN_NOGIL_WORK = 4096

_FORMAT_CODES = {"csr": _FORMAT_CSR, "bsr": _FORMAT_BSR, "int8": _FORMAT_QUANTISED}


cdef struct _PlanLayer:
    # One layer of a plan: the typed pointers of its arrays (held by the
    # plan's buffers), its dtype combination (_F32_I32... for float formats,
    # _U8_I32... for quantised ones), bias and activation.
    int format
    int kind
    bint f64
    const void* data
    const void* indices
    const void* indptr
    const float* scales
    _Epilogue epilogue
    Py_ssize_t m  # output features
    Py_ssize_t n  # input features
    Py_ssize_t rows  # rows of indptr: m, or m / r block rows
    Py_ssize_t r
    Py_ssize_t c


cdef void _plan_layer(const _PlanLayer* L, const void* x, void* y, void* acc,
                      double alpha, double beta) noexcept nogil:
    """y = activation(alpha * W x + beta * y + bias) for one layer: the row
    loops and the epilogue that csr_layer, bsr_layer and qcsr_layer run for
    a batch of one on one thread (there alpha = 1, beta = 0; without a bias
    the plain matvec kernels' loops), so the results are the same bits.
    acc holds the r row sums of a BSR block row."""
    cdef int kind = L.kind
    if L.m == 0:
        return
    if L.format == _FORMAT_CSR:
        if kind == _F32_I32:
            _csr_rows(<const float*>L.data, <const int32_t*>L.indices,
                      <const int32_t*>L.indptr, <const float*>x, alpha, beta,
                      <float*>y, 0, L.m)
        elif kind == _F32_I64:
            _csr_rows(<const float*>L.data, <const int64_t*>L.indices,
                      <const int64_t*>L.indptr, <const float*>x, alpha, beta,
                      <float*>y, 0, L.m)
        elif kind == _F64_I32:
            _csr_rows(<const double*>L.data, <const int32_t*>L.indices,
                      <const int32_t*>L.indptr, <const double*>x, alpha, beta,
                      <double*>y, 0, L.m)
        else:
            _csr_rows(<const double*>L.data, <const int64_t*>L.indices,
                      <const int64_t*>L.indptr, <const double*>x, alpha, beta,
                      <double*>y, 0, L.m)
    elif L.format == _FORMAT_BSR:
        if kind == _F32_I32:
            _bsr_rows_mat(<const float*>L.data, <const int32_t*>L.indices,
                          <const int32_t*>L.indptr, L.r, L.c, <const float*>x, 1,
                          alpha, beta, <float*>y, <float*>acc, 0, L.rows)
        elif kind == _F32_I64:
            _bsr_rows_mat(<const float*>L.data, <const int64_t*>L.indices,
                          <const int64_t*>L.indptr, L.r, L.c, <const float*>x, 1,
                          alpha, beta, <float*>y, <float*>acc, 0, L.rows)
        elif kind == _F64_I32:
            _bsr_rows_mat(<const double*>L.data, <const int32_t*>L.indices,
                          <const int32_t*>L.indptr, L.r, L.c, <const double*>x, 1,
                          alpha, beta, <double*>y, <double*>acc, 0, L.rows)
        else:
            _bsr_rows_mat(<const double*>L.data, <const int64_t*>L.indices,
                          <const int64_t*>L.indptr, L.r, L.c, <const double*>x, 1,
                          alpha, beta, <double*>y, <double*>acc, 0, L.rows)
    else:
        if kind == _U8_I32:
            _qcsr_rows(<const signed char*>L.data, <const uint8_t*>L.indices,
                       <const int32_t*>L.indptr, L.scales, <const float*>x, alpha,
                       beta, <float*>y, 0, L.m)
        elif kind == _U8_I64:
            _qcsr_rows(<const signed char*>L.data, <const uint8_t*>L.indices,
                       <const int64_t*>L.indptr, L.scales, <const float*>x, alpha,
                       beta, <float*>y, 0, L.m)
        elif kind == _U16_I32:
            _qcsr_rows(<const signed char*>L.data, <const uint16_t*>L.indices,
                       <const int32_t*>L.indptr, L.scales, <const float*>x, alpha,
                       beta, <float*>y, 0, L.m)
        elif kind == _U16_I64:
            _qcsr_rows(<const signed char*>L.data, <const uint16_t*>L.indices,
                       <const int64_t*>L.indptr, L.scales, <const float*>x, alpha,
                       beta, <float*>y, 0, L.m)
        elif kind == _I32_I32:
            _qcsr_rows(<const signed char*>L.data, <const int32_t*>L.indices,
                       <const int32_t*>L.indptr, L.scales, <const float*>x, alpha,
                       beta, <float*>y, 0, L.m)
        else:
            _qcsr_rows(<const signed char*>L.data, <const int32_t*>L.indices,
                       <const int64_t*>L.indptr, L.scales, <const float*>x, alpha,
                       beta, <float*>y, 0, L.m)
    if L.f64:
        _epilogue(&L.epilogue, <double*>y, 1, 0, L.m)
    else:
        _epilogue(&L.epilogue, <float*>y, 1, 0, L.m)


cdef const void* _plan_run(const _PlanLayer* layers, int n_layers, const void* x,
                           char* h0, char* h1, char* acc) noexcept nogil:
    """The layers in turn from x, alternating between the scratch vectors
    h1 and h0 (layer 0 writes h1, so x may be a copy in h0); returns the
    last layer's output (h0 or h1)."""
    cdef const void* current = x
    cdef char* target
    cdef int l
    for l in range(n_layers):
        target = h1 if l % 2 == 0 else h0
        _plan_layer(&layers[l], current, target, acc, 1.0, 0.0)
        current = target
    return current


cdef int _plan_add(_Arrays* a, _PlanLayer* L, int l, fmt, shape, tuple arrays,
                   activation, str owner) except -1:
    """Take layer l's buffers into a (empty) and fill in L from them.  A
    bias of None (identity activation only) leaves the epilogue out: the
    plain product."""
    cdef const Py_buffer* b = a.view
    cdef int code = _FORMAT_CODES.get(fmt, -1) if isinstance(fmt, str) else -1
    cdef int expected = 5 if code == _FORMAT_QUANTISED else 4
    if code < 0:
        raise ValueError(f"layer {l}: format must be 'csr', 'bsr' or 'int8', "
                         f"got {fmt!r}")
    if len(arrays) != expected:
        raise ValueError(f"layer {l}: {fmt} takes {expected} arrays, got "
                         f"{len(arrays)}")
    L.format = code
    L.m, L.n = shape
    L.epilogue.activation = activation
    if not _IDENTITY <= L.epilogue.activation <= _SIGMOID:
        raise ValueError(f"layer {l}: unknown activation code {activation!r}")
    bias = arrays[expected - 1]
    if bias is None and L.epilogue.activation != _IDENTITY:
        raise ValueError(f"layer {l}: an activation needs a bias array")
    L.epilogue.bias = NULL
    if code == _FORMAT_QUANTISED:
        _take(a, arrays[0], 1, False, b"values")
        _take(a, arrays[1], 1, False, b"indices")
        _take(a, arrays[2], 1, False, b"indptr")
        _take(a, arrays[3], 1, False, b"scales")
        if bias is not None:
            _take(a, bias, 1, False, b"bias")
            L.epilogue.bias = b[4].buf
        L.kind = _quantised_kind(a, owner)
        L.f64 = False
        L.scales = <const float*>b[3].buf
        L.r = L.c = 1
        if b[3].shape[0] != L.m:
            raise ValueError(f"layer {l}: scales must have {L.m} entries, got "
                             f"{b[3].shape[0]}")
    else:
        _take(a, arrays[0], 3 if code == _FORMAT_BSR else 1, False, b"data")
        _take(a, arrays[1], 1, False, b"indices")
        _take(a, arrays[2], 1, False, b"indptr")
        if bias is not None:
            _take(a, bias, 1, False, b"bias")
            L.epilogue.bias = b[3].buf
        L.kind = _float_kind(a, owner)
        L.f64 = L.kind == _F64_I32 or L.kind == _F64_I64
        L.scales = NULL
        L.r = b[0].shape[1] if code == _FORMAT_BSR else 1
        L.c = b[0].shape[2] if code == _FORMAT_BSR else 1
    L.data = b[0].buf
    L.indices = b[1].buf
    L.indptr = b[2].buf
    L.rows = b[2].shape[0] - 1
    if (L.m < 0 or L.n < 0 or L.rows < 0 or L.r < 1 or L.c < 1
            or L.rows * L.r != L.m or L.n % L.c != 0):
        raise ValueError(f"layer {l}: indptr of {b[2].shape[0]} entries and "
                         f"blocks of {L.r} x {L.c} do not fit shape "
                         f"({L.m}, {L.n})")
    if bias is not None and b[expected - 1].shape[0] != L.m:
        raise ValueError(f"layer {l}: bias must have {L.m} entries, got "
                         f"{b[expected - 1].shape[0]}")
    return 0


cdef class MLPPlan:
    """A chain of sparse layers compiled for one sample at a time: the
    backend-specific part of ``kernels.nn.SparseMLP`` on 1-D input.

    ``MLPPlan(layers)``: ``layers`` is a sequence of (format, (m, n),
    arrays, activation) per layer, where format is "csr", "bsr" or "int8",
    (m, n) the weight's shape, ``arrays`` the arguments that layer's kernel
    takes before X (csr_layer's data, indices, indptr, bias; bsr_layer's
    the same with (n_blocks, r, c) data; qcsr_layer's values, indices,
    indptr, scales, bias) and activation a code of csr_layer.  The dtypes
    are those the layer kernels accept (TypeError otherwise), every layer
    computes in one dtype and each layer's n is the previous m
    (ValueError otherwise).  The structure is trusted, as by the kernels:
    the caller validated it (the matrix classes do, at construction).

    The plan holds a buffer of every array for its whole life: the arrays
    stay alive and cannot be resized, and a call reads their current
    values (modifying values in place is seen, as by the kernels; modifying
    indices or indptr is as unsafe as for every kernel).

    A call (``forward``, ``classify``) takes a 1-D buffer of float32 or
    float64 (any stride), converts it once when its dtype or stride is not
    the model's contiguous dtype (a C cast, as np.copyto), and runs every
    layer in one C loop: per layer, the row loops of the layer kernel for a
    batch of one and its bias-and-activation epilogue, on one thread, so
    the output is bit-identical to the layer-by-layer path.  Work
    O(sum of stored entries + rows over the layers); moves each layer's
    bytes once (values, indices, indptr, scales, bias) and the activations
    from two scratch vectors of the widest layer, per call on the C stack
    (malloc beyond 8 kB): calls from several threads share nothing but the
    read-only weights.  The GIL is released from 4096 stored entries +
    rows of work.
    """

    cdef _PlanLayer* _layers
    cdef _Arrays* _buffers  # one set of held buffers per layer
    cdef int _n_layers
    cdef bint _f64
    cdef bint _release_gil
    cdef Py_ssize_t _n_in
    cdef Py_ssize_t _m_out
    cdef Py_ssize_t _vector_bytes
    cdef Py_ssize_t _scratch_bytes
    cdef object _dtype
    cdef object _empty

    def __cinit__(self, layers):
        cdef Py_ssize_t width, max_r = 1, work = 0, itemsize
        cdef _PlanLayer* L
        cdef int l
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must hold at least one layer")
        self._layers = <_PlanLayer*>calloc(len(layers), sizeof(_PlanLayer))
        self._buffers = <_Arrays*>calloc(len(layers), sizeof(_Arrays))
        if self._layers == NULL or self._buffers == NULL:
            raise MemoryError()
        self._n_layers = len(layers)  # each _Arrays.n is 0: nothing to release yet
        for l in range(self._n_layers):
            fmt, shape, arrays, activation = layers[l]
            _plan_add(&self._buffers[l], &self._layers[l], l, fmt, shape,
                      tuple(arrays), activation, "MLPPlan")
            L = &self._layers[l]
            if L.f64 != self._layers[0].f64:
                raise ValueError(
                    f"layers must compute in one dtype: layer 0 is "
                    f"{'float64' if self._layers[0].f64 else 'float32'} and "
                    f"layer {l} {'float64' if L.f64 else 'float32'}")
            if l > 0 and L.n != self._layers[l - 1].m:
                raise ValueError(
                    f"layers do not chain: layer {l - 1} has "
                    f"{self._layers[l - 1].m} outputs but layer {l} has {L.n} "
                    "inputs")
            max_r = max(max_r, L.r)
            work += self._buffers[l].view[0].shape[0] * L.r * L.c + L.m
        self._f64 = self._layers[0].f64
        self._n_in = self._layers[0].n
        self._m_out = self._layers[self._n_layers - 1].m
        width = self._n_in
        for l in range(self._n_layers):
            width = max(width, self._layers[l].m)
        itemsize = 8 if self._f64 else 4
        self._vector_bytes = (width * itemsize + _ALIGN - 1) // _ALIGN * _ALIGN
        self._scratch_bytes = 2 * self._vector_bytes + max_r * itemsize + _ALIGN
        self._release_gil = work >= _PLAN_NOGIL_WORK
        import numpy
        self._dtype = numpy.dtype(numpy.float64 if self._f64 else numpy.float32)
        self._empty = numpy.empty

    def __dealloc__(self):
        cdef int l
        if self._buffers != NULL:
            for l in range(self._n_layers):
                _release(&self._buffers[l])
        free(self._buffers)
        free(self._layers)

    @property
    def in_features(self):
        return self._n_in

    @property
    def out_features(self):
        return self._m_out

    @property
    def dtype(self):
        """float32 or float64: what the layers compute in and return."""
        return self._dtype

    cdef const void* _run(self, x, char* scratch) except? NULL:
        """The last layer's output (in scratch, aligned, of at least
        _scratch_bytes) for x, or NULL when x is not a 1-D float32 or float64
        buffer of in_features entries."""
        cdef Py_buffer view
        cdef _Dtype dtype
        cdef char* h0 = _aligned(scratch)
        cdef char* h1 = h0 + self._vector_bytes
        cdef char* acc = h1 + self._vector_bytes
        cdef const _PlanLayer* layers = self._layers
        cdef int n_layers = self._n_layers
        cdef const void* source
        cdef const void* result = NULL
        cdef const char* p
        cdef Py_ssize_t i, n = self._n_in, stride
        try:
            PyObject_GetBuffer(x, &view, PyBUF_STRIDES | PyBUF_FORMAT)
        except (BufferError, TypeError, ValueError):
            return NULL
        try:
            dtype = _dtype_of(&view)
            if (view.ndim != 1 or view.shape[0] != n
                    or (dtype != _FLOAT32 and dtype != _FLOAT64)):
                return NULL
            stride = view.strides[0]
            source = view.buf
            if (dtype == _FLOAT64) != self._f64 or stride != view.itemsize:
                # one conversion (or gather) of the input into h0
                p = <const char*>view.buf
                for i in range(n):
                    if self._f64:
                        (<double*>h0)[i] = (
                            (<const double*>(p + i * stride))[0] if dtype == _FLOAT64
                            else <double>(<const float*>(p + i * stride))[0])
                    else:
                        (<float*>h0)[i] = (
                            <float>(<const double*>(p + i * stride))[0]
                            if dtype == _FLOAT64
                            else (<const float*>(p + i * stride))[0])
                source = h0
            if self._release_gil:
                with nogil:
                    result = _plan_run(layers, n_layers, source, h0, h1, acc)
            else:
                result = _plan_run(layers, n_layers, source, h0, h1, acc)
        finally:
            PyBuffer_Release(&view)
        return result

    cdef object _forward(self, x, bint subtract_max):
        """forward, or forward_minus_max with subtract_max."""
        cdef double stack[_PLAN_STACK_DOUBLES]
        cdef char* heap = NULL
        cdef char* scratch = <char*>stack
        cdef const void* result
        cdef Py_buffer view
        cdef Py_ssize_t i, m = self._m_out
        cdef float top32
        cdef double top64
        if self._scratch_bytes > <Py_ssize_t>sizeof(stack):
            scratch = heap = <char*>malloc(self._scratch_bytes)
            if heap == NULL:
                raise MemoryError()
        try:
            result = self._run(x, scratch)
            if result == NULL:
                return None
            out = self._empty(m, self._dtype)
            # a new array is C-contiguous: no shape, strides or format needed
            PyObject_GetBuffer(out, &view, PyBUF_WRITABLE)
            memcpy(view.buf, result, view.len)
            if subtract_max and m > 0:
                # the maximum is exact whatever the order; NaN if any is NaN
                if self._f64:
                    top64 = (<double*>view.buf)[0]
                    for i in range(1, m):
                        if not (top64 >= (<double*>view.buf)[i]) and not isnan(top64):
                            top64 = (<double*>view.buf)[i]
                    for i in range(m):
                        (<double*>view.buf)[i] = (<double*>view.buf)[i] - top64
                else:
                    top32 = (<float*>view.buf)[0]
                    for i in range(1, m):
                        if not (top32 >= (<float*>view.buf)[i]) and not isnan(top32):
                            top32 = (<float*>view.buf)[i]
                    for i in range(m):
                        (<float*>view.buf)[i] = (<float*>view.buf)[i] - top32
            PyBuffer_Release(&view)
            return out
        finally:
            free(heap)

    def forward(self, x):
        """A new array of the last layer's out_features outputs, in the
        plan's dtype, for the vector x; None (nothing run) when x is not a
        1-D float32 or float64 buffer of in_features entries (the caller's
        general path converts or rejects it)."""
        return self._forward(x, False)

    def forward_minus_max(self, x):
        """forward's outputs z minus their maximum, z - max(z), in the
        plan's dtype: the first step of a softmax that cannot overflow, with
        NumPy's results (the maximum is NaN when an output is; the
        subtraction rounds as NumPy's), but no floating-point warnings (a
        difference that overflows is -inf, as there).  None as forward."""
        return self._forward(x, True)

    def classify(self, x, double cut):
        """The class index of the vector x as an int: for several outputs,
        the index of the largest (the first one, or the first NaN, as
        np.argmax); for one output, 1 if it is > cut, else 0.  -1 (nothing
        run) when x is not a 1-D float32 or float64 buffer of in_features
        entries, or the network has no outputs."""
        cdef double stack[_PLAN_STACK_DOUBLES]
        cdef char* heap = NULL
        cdef char* scratch = <char*>stack
        cdef const void* result
        cdef Py_ssize_t i, best = 0
        cdef double v, top
        if self._m_out == 0:
            return -1
        if self._scratch_bytes > <Py_ssize_t>sizeof(stack):
            scratch = heap = <char*>malloc(self._scratch_bytes)
            if heap == NULL:
                raise MemoryError()
        try:
            result = self._run(x, scratch)
            if result == NULL:
                return -1
            # float32 outputs widened to double: exact, same order and NaNs
            top = ((<const double*>result)[0] if self._f64
                   else (<const float*>result)[0])
            if self._m_out == 1:
                return 1 if top > cut else 0
            if isnan(top):
                return 0
            for i in range(1, self._m_out):
                v = ((<const double*>result)[i] if self._f64
                     else (<const float*>result)[i])
                if isnan(v):
                    return i
                if v > top:
                    top, best = v, i
            return best
        finally:
            free(heap)


cdef class MatvecPlan:
    """One CSR or quantised matrix bound for y = alpha * A x + beta * y on
    one thread: the backend-specific part of ``kernels.spmv``'s path for
    its own matrices, where the kernel call's argument handling (a buffer
    acquisition and dtype check per array) and the Python checks of x and
    y would cost as much as the product of a small matrix.

    ``MatvecPlan(format, (m, n), arrays)``: format "csr" or "int8",
    ``arrays`` the arguments csr_matvec (data, indices, indptr) or
    qcsr_matvec (values, indices, indptr, scales) takes before x, dtypes
    as there (TypeError otherwise).  The structure is trusted, as by the
    kernels: the caller validated it (the matrix classes do, at
    construction).  Like ``MLPPlan``, the plan holds a buffer of every
    array for its whole life (they stay alive and cannot be resized) and a
    call reads their current values.

    ``matvec(x, out, alpha, beta)`` runs the row loops of csr_matvec /
    qcsr_matvec on one thread (the same bits) and returns y: ``out``, or a
    new array when ``out`` is None.  It returns None, having run nothing,
    unless x is a C-contiguous 1-D buffer of n entries of the matrix's
    dtype, ``out`` is None (with beta == 0) or a writable C-contiguous 1-D
    buffer of m entries of that dtype, and x and out do not overlap: the
    caller's general path then converts or rejects the arguments.  The GIL
    is released from 4096 stored entries + rows of work.
    """

    cdef _PlanLayer _layer
    cdef _Arrays _buffers
    cdef _Dtype _vector_dtype
    cdef bint _release_gil
    cdef object _dtype
    cdef object _empty

    def __cinit__(self, fmt, shape, arrays):
        self._buffers.n = 0
        if fmt != "csr" and fmt != "int8":
            raise ValueError(f"format must be 'csr' or 'int8', got {fmt!r}")
        _plan_add(&self._buffers, &self._layer, 0, fmt, shape,
                  (*arrays, None), _IDENTITY, "MatvecPlan")
        self._vector_dtype = _FLOAT64 if self._layer.f64 else _FLOAT32
        self._release_gil = (self._buffers.view[0].shape[0] + self._layer.m
                             >= _PLAN_NOGIL_WORK)
        import numpy
        self._dtype = numpy.dtype(numpy.float64 if self._layer.f64 else numpy.float32)
        self._empty = numpy.empty

    def __dealloc__(self):
        _release(&self._buffers)

    @property
    def shape(self):
        return (self._layer.m, self._layer.n)

    @property
    def dtype(self):
        """float32 or float64: the dtype of x and y."""
        return self._dtype

    def matvec(self, x, out, double alpha, double beta):
        """y = alpha * A x + beta * out (out not read when beta == 0), or
        None when the arguments are not the simple case (see the class)."""
        cdef Py_buffer xv, yv
        cdef const _PlanLayer* L = &self._layer
        cdef const char* x0
        cdef const char* y0
        try:
            PyObject_GetBuffer(x, &xv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        except (BufferError, TypeError, ValueError):
            return None
        try:
            if (xv.ndim != 1 or xv.shape[0] != L.n
                    or _dtype_of(&xv) != self._vector_dtype):
                return None
            if out is None:
                if beta != 0:
                    return None
                y = self._empty(L.m, self._dtype)
            else:
                y = out
            try:
                PyObject_GetBuffer(y, &yv,
                                   PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE)
            except (BufferError, TypeError, ValueError):
                return None
            try:
                if (yv.ndim != 1 or yv.shape[0] != L.m
                        or _dtype_of(&yv) != self._vector_dtype):
                    return None
                x0 = <const char*>xv.buf
                y0 = <const char*>yv.buf
                if x0 < y0 + yv.len and y0 < x0 + xv.len:
                    return None  # x and y overlap
                if self._release_gil:
                    with nogil:
                        _plan_layer(L, xv.buf, yv.buf, NULL, alpha, beta)
                else:
                    _plan_layer(L, xv.buf, yv.buf, NULL, alpha, beta)
            finally:
                PyBuffer_Release(&yv)
        finally:
            PyBuffer_Release(&xv)
        return y
