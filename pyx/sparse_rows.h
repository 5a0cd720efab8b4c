/* The C row loops of the compiled sparse kernels (pyx/sparse.pyx.tp).
 *
 * Each loop is a macro that defines one static C function for one dtype
 * combination; the template instantiates it for every combination of its
 * FLOAT_KINDS and QUANTISED_KINDS lists, so that the combinations are
 * generated, not written out (as scipy's sparsetools generates the types of
 * its csr.h).  Every function runs a range of rows [r0, r1) of one matrix,
 * so that the caller can split the rows between threads; none allocates,
 * none takes the GIL, and all trust their input as the kernels do (the
 * contract of kernels._reference.sparse, validated in Python):
 *
 *   indptr[0 .. m] is non-decreasing with indptr[0] the first entry of
 *   data and indices; every indices[p] is a valid column of x / row of X;
 *   the arrays do not overlap the output.
 *
 * Notation below: m rows, n columns, nnz = indptr[m] - indptr[0] stored
 * entries; VT the type of the stored values, IT of the column indices, PT
 * of indptr, ST the type the sums are computed in (the values' dtype,
 * float for int8 values).
 */
#ifndef KERNELS_SPARSE_ROWS_H
#define KERNELS_SPARSE_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
/* The number of threads of the current OpenMP team (1 outside one). */
static int kernels_sparse_team_size(void) { return omp_get_num_threads(); }
#else
static int kernels_sparse_team_size(void) { return 1; }
#endif

/* The row loops are written with their partial sums explicit.  GCC's
 * auto-vectoriser would regroup them into ordered (fold-left) reductions,
 * one scalar add after another: slower than the plain loop. */
#if defined(__GNUC__) && !defined(__clang__)
#define KERNELS_SPARSE_NOVEC __attribute__((optimize("no-tree-vectorize")))
#else
#define KERNELS_SPARSE_NOVEC
#endif

/* y_i = alpha * row + beta * y_i in double, rounded once to ST; y_i is not
 * read when beta == 0 (so it may hold anything, NaN included). */
#define KERNELS_SPARSE_STORE(Y, ROW, ALPHA, BETA, ST)                         \
    ((Y) = (ST)((BETA) == 0 ? (ALPHA) * (ROW)                                 \
                            : (ALPHA) * (ROW) + (BETA) * (double)(Y)))

/* ---------------------------------------------------------------- matvec
 *
 * void NAME(const VT *data, const IT *indices, const PT *indptr,
 *           const float *scales, const ST *x, double alpha, double beta,
 *           ST *y, ptrdiff_t r0, ptrdiff_t r1)
 *
 * Rows r0 <= i < r1 of y = alpha * diag(scales) A x + beta * y.
 *
 *   data[nnz], indices[nnz]  the stored values and their columns
 *   indptr[m + 1]            row i is entries indptr[i] <= p < indptr[i + 1]
 *   scales[m]                one factor per row (quantised matrices), or
 *                            NULL for none
 *   x[n]                     the vector
 *   y[m]                     written at rows r0 <= i < r1 (read only when
 *                            beta != 0)
 *   0 <= r0 <= r1 <= m
 *
 * Row i sums data[p] * x[indices[p]] in ST with eight partial sums over
 * blocks of eight entries (s_k takes the entries p = k (mod 8)), so that
 * eight multiply-adds are in flight instead of one add waiting on the
 * previous; a last block of four goes to s_0..s_3, then s_k += s_(k+4), the
 * 0-3 leftover entries go to s_0, and the row total is (s_0 + s_1) + (s_2 +
 * s_3), widened to double; the scale, alpha and beta are applied once per
 * row, in double.  Every variant below computes exactly these sums in this
 * order: the results do not depend on the variant (or the thread split).
 *
 * Complexity: O(nnz_rows + (r1 - r0)) time for the nnz_rows entries of the
 * rows; reads nnz_rows * (sizeof(VT) + sizeof(IT)) bytes of the matrix,
 * (r1 - r0 + 1) * sizeof(PT) of indptr, the scales, and x at the columns
 * used; writes (r1 - r0) * sizeof(ST).
 */

/* Scalar: eight accumulators of type ST. */
#define KERNELS_SPARSE_ROWS_SCALAR(NAME, VT, IT, PT, ST)                      \
static KERNELS_SPARSE_NOVEC void NAME(                                        \
    const VT *data, const IT *indices, const PT *indptr, const float *scales, \
    const ST *x, double alpha, double beta, ST *y, ptrdiff_t r0, ptrdiff_t r1)\
{                                                                             \
    const VT *v = data + indptr[r0];                                          \
    const IT *col = indices + indptr[r0];                                     \
    ptrdiff_t i;                                                              \
    for (i = r0; i < r1; ++i) {                                               \
        const VT *end = data + indptr[i + 1];                                 \
        const VT *end8 = v + ((end - v) & ~(ptrdiff_t)7);                     \
        ST s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;    \
        double row;                                                           \
        for (; v < end8; v += 8, col += 8) {                                  \
            s0 += (ST)v[0] * x[col[0]];                                       \
            s1 += (ST)v[1] * x[col[1]];                                       \
            s2 += (ST)v[2] * x[col[2]];                                       \
            s3 += (ST)v[3] * x[col[3]];                                       \
            s4 += (ST)v[4] * x[col[4]];                                       \
            s5 += (ST)v[5] * x[col[5]];                                       \
            s6 += (ST)v[6] * x[col[6]];                                       \
            s7 += (ST)v[7] * x[col[7]];                                       \
        }                                                                     \
        if (end - v >= 4) {                                                   \
            s0 += (ST)v[0] * x[col[0]];                                       \
            s1 += (ST)v[1] * x[col[1]];                                       \
            s2 += (ST)v[2] * x[col[2]];                                       \
            s3 += (ST)v[3] * x[col[3]];                                       \
            v += 4;                                                           \
            col += 4;                                                         \
        }                                                                     \
        s0 += s4;                                                             \
        s1 += s5;                                                             \
        s2 += s6;                                                             \
        s3 += s7;                                                             \
        for (; v < end; ++v, ++col)                                           \
            s0 += (ST)v[0] * x[col[0]];                                       \
        row = (double)((s0 + s1) + (s2 + s3));                                \
        if (scales)                                                           \
            row *= scales[i];                                                 \
        KERNELS_SPARSE_STORE(y[i], row, alpha, beta, ST);                     \
    }                                                                         \
}

#if defined(__GNUC__)
/* float32 sums (float or int8 values) with the eight partial sums as the
 * lanes of two 4-float vectors (GCC/Clang vector extensions: SSE2 on
 * x86-64, NEON on aarch64, plain scalar code elsewhere): per four entries,
 * one vector load of the values (four int8 values widened), four scalar
 * loads of x gathered into a vector, one multiply and one add, where the
 * scalar loop issues four of each.  Same sums in the same order as the
 * scalar loop. */
typedef float kernels_sparse_v4f __attribute__((vector_size(16)));

static inline kernels_sparse_v4f kernels_sparse_load4_f32(const float *v)
{
    kernels_sparse_v4f a;
    memcpy(&a, v, sizeof a);
    return a;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* Four int8 to float32: SSE2 has no sign-extending load; duplicate each
 * byte into the top byte of its 32-bit lane, shift it back arithmetically. */
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
    kernels_sparse_v4f a = {(float)v[0], (float)v[1], (float)v[2],
                            (float)v[3]};
    return a;
}
#endif

#define KERNELS_SPARSE_ROWS_V4F(NAME, VT, IT, PT, LOAD4)                      \
static KERNELS_SPARSE_NOVEC void NAME(                                        \
    const VT *data, const IT *indices, const PT *indptr, const float *scales, \
    const float *x, double alpha, double beta, float *y, ptrdiff_t r0,        \
    ptrdiff_t r1)                                                             \
{                                                                             \
    const VT *v = data + indptr[r0];                                          \
    const IT *col = indices + indptr[r0];                                     \
    ptrdiff_t i;                                                              \
    for (i = r0; i < r1; ++i) {                                               \
        const VT *end = data + indptr[i + 1];                                 \
        const VT *end8 = v + ((end - v) & ~(ptrdiff_t)7);                     \
        kernels_sparse_v4f acc = {0, 0, 0, 0}, acc2 = {0, 0, 0, 0};           \
        float s0;                                                             \
        double row;                                                           \
        for (; v < end8; v += 8, col += 8) {                                  \
            kernels_sparse_v4f xs = {x[col[0]], x[col[1]], x[col[2]],         \
                                     x[col[3]]};                              \
            kernels_sparse_v4f xs2 = {x[col[4]], x[col[5]], x[col[6]],        \
                                      x[col[7]]};                             \
            acc += LOAD4(v) * xs;                                             \
            acc2 += LOAD4(v + 4) * xs2;                                       \
        }                                                                     \
        if (end - v >= 4) {                                                   \
            kernels_sparse_v4f xs = {x[col[0]], x[col[1]], x[col[2]],         \
                                     x[col[3]]};                              \
            acc += LOAD4(v) * xs;                                             \
            v += 4;                                                           \
            col += 4;                                                         \
        }                                                                     \
        acc += acc2;                                                          \
        s0 = acc[0];                                                          \
        for (; v < end; ++v, ++col)                                           \
            s0 += (float)v[0] * x[col[0]];                                    \
        row = (double)((s0 + acc[1]) + (acc[2] + acc[3]));                    \
        if (scales)                                                           \
            row *= scales[i];                                                 \
        KERNELS_SPARSE_STORE(y[i], row, alpha, beta, float);                  \
    }                                                                         \
}

#define KERNELS_SPARSE_ROWS_float(NAME, IT, PT)                               \
    KERNELS_SPARSE_ROWS_V4F(NAME, float, IT, PT, kernels_sparse_load4_f32)
#define KERNELS_SPARSE_ROWS_int8(NAME, IT, PT)                                \
    KERNELS_SPARSE_ROWS_V4F(NAME, signed char, IT, PT, kernels_sparse_load4_i8)
#else
#define KERNELS_SPARSE_ROWS_float(NAME, IT, PT)                               \
    KERNELS_SPARSE_ROWS_SCALAR(NAME, float, IT, PT, float)
#define KERNELS_SPARSE_ROWS_int8(NAME, IT, PT)                                \
    KERNELS_SPARSE_ROWS_SCALAR(NAME, signed char, IT, PT, float)
#endif

/* KERNELS_SPARSE_ROWS_<value type>(NAME, IT, PT): the matvec rows of one
 * combination, float, double or int8 values (int8: float32 scales, x, y). */
#define KERNELS_SPARSE_ROWS_double(NAME, IT, PT)                              \
    KERNELS_SPARSE_ROWS_SCALAR(NAME, double, IT, PT, double)

#endif /* KERNELS_SPARSE_ROWS_H */
