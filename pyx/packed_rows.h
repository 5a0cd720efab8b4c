/* Row loops of the deployment matrices (kernels.packed.PackedMatrix).

   The specification is kernels/_reference/packed.py: layouts (dense, CSR
   with absolute column indices, delta with 4- or 8-bit gaps and filler
   entries, bitmask), value codecs (float32, float16, int8, int4, int2 with
   one float32 scale per row) and the input contract.  Every function here
   trusts its arguments: kernels.packed validated them.  All sums are in
   float32, one accumulator per row except where noted; alpha, beta and the
   row scale are applied once per row, in double for y (as the sparse
   kernels do).  Single-threaded.

   kpk_matrix: the matrix, as the meta array and the buffers of
   packed_matvec describe it:
     layout, codec  the codes of kernels._codes (LAYOUT_*, VALUES_*);
     index          CSR: bytes per column index (1, 2, 4); delta: bits per
                    gap (4, 8); else 0;
     m, n           the shape;
     values         count stored values (float, uint16 half bits, or bytes);
     structure      CSR column indices (count entries of `index` bytes),
                    delta gaps (count fields of `index` bits), bitmask bytes
                    (m * ceil(n / 8)); dense: unused;
     indptr         m + 1 int32 row offsets (CSR, delta); else unused;
     scales         m float32 row scales (integer codecs); else NULL.

   kpk_matvec(A, x, alpha, beta, y):  y[i] = alpha * row_i . x + beta * y[i]
     for 0 <= i < m (x: n floats; y: m floats, not read when beta == 0).
     O(count + m); reads count * value bits / 8 + the structure + 4 (m + 1)
     bytes, x, and writes y.
   kpk_matmat(A, X, k, acc, alpha, beta, Y):  Y = alpha * A X + beta * Y for
     feature-major X (n x k) and Y (m x k), row-major; acc: k floats of
     scratch.  O(count * k + m * k).
   kpk_epilogue(Y, m, k, bias, activation):  Y[i, :] = act(Y[i, :] + bias[i])
     (relu max(v, 0) keeping NaN, tanh, sigmoid 0.5 tanh(v / 2) + 0.5). */

#ifndef KERNELS_PACKED_ROWS_H
#define KERNELS_PACKED_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_codes.h"

typedef struct {
    int64_t layout, codec, index, m, n, count;
    const void *values;
    const void *structure;
    const int32_t *indptr;
    const float *scales;
} kpk_matrix;


/* The float32 value of the binary16 bit pattern h, exactly. */
static inline float kpk_half(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, mant = h & 1023;
    uint32_t bits;
    float f;
    if (e == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (e != 0) {
        bits = sign | ((e + 112) << 23) | (mant << 13);
    } else {
        f = (float)mant * 5.9604644775390625e-8f; /* 2**-24, exact */
        return sign ? -f : f;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Stored value p of each codec (integers: q, unscaled). */
#define KPK_GET_F32(V, P) (((const float *)(V))[P])
#define KPK_GET_F16(V, P) kpk_half(((const uint16_t *)(V))[P])
#define KPK_GET_I8(V, P) ((float)((const int8_t *)(V))[P])
#define KPK_GET_I4(V, P)                                                         \
    ((float)((int)((((const uint8_t *)(V))[(P) >> 1] >> (((P) & 1) << 2)) & 15)  \
             ^ 8) - 8.0f)
#define KPK_GET_I2(V, P)                                                         \
    ((float)((int)((((const uint8_t *)(V))[(P) >> 2] >> (((P) & 3) << 1)) & 3)   \
             ^ 2) - 2.0f)

static inline int64_t kpk_gap(const uint8_t *s, int64_t bits, int64_t p)
{
    return bits == 8 ? s[p] : (s[p >> 1] >> ((p & 1) << 2)) & 15;
}

static inline void kpk_store(float *y, double row, double alpha, double beta)
{
    *y = (float)(beta == 0 ? alpha * row : alpha * row + beta * (double)*y);
}

/* The set bits of each byte value: how many, and where. */
static unsigned char kpk_popcount[256], kpk_positions[256][8];

static void kpk_init_tables(void)
{
    int b, t;
    for (b = 0; b < 256; ++b) {
        kpk_popcount[b] = 0;
        for (t = 0; t < 8; ++t)
            if (b >> t & 1)
                kpk_positions[b][kpk_popcount[b]++] = (unsigned char)t;
    }
}

/* The bitmask row's bytes at mask[0 .. min(8, left)) as one little-endian
   word (bit t of the word is slot 8 * byte + bit), and the index of its
   lowest set bit (w != 0): the set bits are visited a word at a time, so
   that the loop costs O(stored + n / 64) with one unpredictable branch per
   word, not per byte. */
static inline uint64_t kpk_mask_word(const uint8_t *mask, int64_t left)
{
    uint64_t w = 0;
    int64_t b, count = left < 8 ? left : 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (count == 8) {
        memcpy(&w, mask, 8);
        return w;
    }
#endif
    for (b = 0; b < count; ++b)
        w |= (uint64_t)mask[b] << (8 * b);
    return w;
}

static inline int kpk_ctz64(uint64_t w)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(w);
#else
    int t = 0;
    while (!(w & 1)) {
        w >>= 1;
        ++t;
    }
    return t;
#endif
}

/* KPK_ROWS(SUFFIX, GET): kpk_matvec_SUFFIX and kpk_matmat_SUFFIX for the
   codec whose value getter is GET. */
#define KPK_ROWS(SUFFIX, GET)                                                    \
static void kpk_matvec_##SUFFIX(const kpk_matrix *A, const float *x,             \
                                double alpha, double beta, float *y)             \
{                                                                                \
    const void *v = A->values;                                                   \
    const int64_t m = A->m, n = A->n;                                            \
    int64_t i, j, p = 0;                                                         \
    for (i = 0; i < m; ++i) {                                                    \
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                    \
        double row;                                                              \
        if (A->layout == KERNELS_LAYOUT_DENSE) {                                            \
            for (j = 0; j + 3 < n; j += 4) {                                     \
                s0 += GET(v, p + j) * x[j];                                      \
                s1 += GET(v, p + j + 1) * x[j + 1];                              \
                s2 += GET(v, p + j + 2) * x[j + 2];                              \
                s3 += GET(v, p + j + 3) * x[j + 3];                              \
            }                                                                    \
            for (; j < n; ++j)                                                   \
                s0 += GET(v, p + j) * x[j];                                      \
            p += n;                                                              \
        } else if (A->layout == KERNELS_LAYOUT_CSR) {                                       \
            int64_t q = A->indptr[i], stop = A->indptr[i + 1];                   \
            if (A->index == 1) {                                                 \
                const uint8_t *c = (const uint8_t *)A->structure;                \
                for (; q + 3 < stop; q += 4) {                                   \
                    s0 += GET(v, q) * x[c[q]];                                   \
                    s1 += GET(v, q + 1) * x[c[q + 1]];                           \
                    s2 += GET(v, q + 2) * x[c[q + 2]];                           \
                    s3 += GET(v, q + 3) * x[c[q + 3]];                           \
                }                                                                \
                for (; q < stop; ++q)                                            \
                    s0 += GET(v, q) * x[c[q]];                                   \
            } else if (A->index == 2) {                                          \
                const uint16_t *c = (const uint16_t *)A->structure;              \
                for (; q + 3 < stop; q += 4) {                                   \
                    s0 += GET(v, q) * x[c[q]];                                   \
                    s1 += GET(v, q + 1) * x[c[q + 1]];                           \
                    s2 += GET(v, q + 2) * x[c[q + 2]];                           \
                    s3 += GET(v, q + 3) * x[c[q + 3]];                           \
                }                                                                \
                for (; q < stop; ++q)                                            \
                    s0 += GET(v, q) * x[c[q]];                                   \
            } else {                                                             \
                const int32_t *c = (const int32_t *)A->structure;                \
                for (; q + 3 < stop; q += 4) {                                   \
                    s0 += GET(v, q) * x[c[q]];                                   \
                    s1 += GET(v, q + 1) * x[c[q + 1]];                           \
                    s2 += GET(v, q + 2) * x[c[q + 2]];                           \
                    s3 += GET(v, q + 3) * x[c[q + 3]];                           \
                }                                                                \
                for (; q < stop; ++q)                                            \
                    s0 += GET(v, q) * x[c[q]];                                   \
            }                                                                    \
        } else if (A->layout == KERNELS_LAYOUT_DELTA) {                                     \
            const uint8_t *g = (const uint8_t *)A->structure;                    \
            int64_t q = A->indptr[i], stop = A->indptr[i + 1], col = -1;         \
            for (; q + 1 < stop; q += 2) {                                       \
                col += 1 + kpk_gap(g, A->index, q);                              \
                s0 += GET(v, q) * x[col];                                        \
                col += 1 + kpk_gap(g, A->index, q + 1);                          \
                s1 += GET(v, q + 1) * x[col];                                    \
            }                                                                    \
            if (q < stop) {                                                      \
                col += 1 + kpk_gap(g, A->index, q);                              \
                s0 += GET(v, q) * x[col];                                        \
            }                                                                    \
        } else {                                                                 \
            const int64_t width = (n + 7) >> 3;                                  \
            const uint8_t *mask = (const uint8_t *)A->structure + i * width;     \
            int64_t k;                                                           \
            for (k = 0; k < width; k += 8) {                                     \
                uint64_t w = kpk_mask_word(mask + k, width - k);                 \
                const float *xk = x + 8 * k;                                     \
                while (w) {                                                      \
                    s0 += GET(v, p) * xk[kpk_ctz64(w)];                          \
                    ++p;                                                         \
                    w &= w - 1;                                                  \
                    if (!w)                                                      \
                        break;                                                   \
                    s1 += GET(v, p) * xk[kpk_ctz64(w)];                          \
                    ++p;                                                         \
                    w &= w - 1;                                                  \
                }                                                                \
            }                                                                    \
        }                                                                        \
        row = (double)((s0 + s1) + (s2 + s3));                                   \
        if (A->scales)                                                           \
            row *= A->scales[i];                                                 \
        kpk_store(&y[i], row, alpha, beta);                                      \
    }                                                                            \
}                                                                                \
                                                                                 \
static void kpk_matmat_##SUFFIX(const kpk_matrix *A, const float *X,             \
                                int64_t k, float *acc, double alpha,             \
                                double beta, float *Y)                           \
{                                                                                \
    const void *v = A->values;                                                   \
    const int64_t m = A->m, n = A->n;                                            \
    int64_t i, j, c, p = 0;                                                      \
    for (i = 0; i < m; ++i) {                                                    \
        double a = A->scales ? alpha * A->scales[i] : alpha;                     \
        float *out = Y + i * k;                                                  \
        memset(acc, 0, (size_t)k * sizeof *acc);                                 \
        if (A->layout == KERNELS_LAYOUT_DENSE) {                                            \
            for (j = 0; j < n; ++j) {                                            \
                const float w = GET(v, p + j), *xj = X + j * k;                  \
                for (c = 0; c < k; ++c)                                          \
                    acc[c] += w * xj[c];                                         \
            }                                                                    \
            p += n;                                                              \
        } else if (A->layout == KERNELS_LAYOUT_CSR || A->layout == KERNELS_LAYOUT_DELTA) {             \
            int64_t q = A->indptr[i], stop = A->indptr[i + 1], col = -1;         \
            for (; q < stop; ++q) {                                              \
                const float w = GET(v, q);                                       \
                const float *xj;                                                 \
                if (A->layout == KERNELS_LAYOUT_DELTA)                                      \
                    col += 1 + kpk_gap((const uint8_t *)A->structure,            \
                                       A->index, q);                             \
                else if (A->index == 1)                                          \
                    col = ((const uint8_t *)A->structure)[q];                    \
                else if (A->index == 2)                                          \
                    col = ((const uint16_t *)A->structure)[q];                   \
                else                                                             \
                    col = ((const int32_t *)A->structure)[q];                    \
                xj = X + col * k;                                                \
                for (c = 0; c < k; ++c)                                          \
                    acc[c] += w * xj[c];                                         \
            }                                                                    \
        } else {                                                                 \
            const int64_t width = (n + 7) >> 3;                                  \
            const uint8_t *mask = (const uint8_t *)A->structure + i * width;     \
            int64_t byte;                                                        \
            for (byte = 0; byte < width; ++byte) {                               \
                const unsigned b = mask[byte];                                   \
                unsigned t;                                                      \
                for (t = 0; t < kpk_popcount[b]; ++t, ++p) {                     \
                    const float w = GET(v, p);                                   \
                    const float *xj = X + (8 * byte + kpk_positions[b][t]) * k;  \
                    for (c = 0; c < k; ++c)                                      \
                        acc[c] += w * xj[c];                                     \
                }                                                                \
            }                                                                    \
        }                                                                        \
        for (c = 0; c < k; ++c)                                                  \
            kpk_store(&out[c], (double)acc[c], a, beta);                         \
    }                                                                            \
}

KPK_ROWS(f32, KPK_GET_F32)
KPK_ROWS(f16, KPK_GET_F16)
KPK_ROWS(i8, KPK_GET_I8)
KPK_ROWS(i4, KPK_GET_I4)
KPK_ROWS(i2, KPK_GET_I2)

static void kpk_matvec(const kpk_matrix *A, const float *x, double alpha,
                       double beta, float *y)
{
    switch (A->codec) {
    case KERNELS_VALUES_FLOAT32: kpk_matvec_f32(A, x, alpha, beta, y); break;
    case KERNELS_VALUES_FLOAT16: kpk_matvec_f16(A, x, alpha, beta, y); break;
    case KERNELS_VALUES_INT8: kpk_matvec_i8(A, x, alpha, beta, y); break;
    case KERNELS_VALUES_INT4: kpk_matvec_i4(A, x, alpha, beta, y); break;
    default: kpk_matvec_i2(A, x, alpha, beta, y); break;
    }
}

static void kpk_matmat(const kpk_matrix *A, const float *X, int64_t k,
                       float *acc, double alpha, double beta, float *Y)
{
    switch (A->codec) {
    case KERNELS_VALUES_FLOAT32: kpk_matmat_f32(A, X, k, acc, alpha, beta, Y); break;
    case KERNELS_VALUES_FLOAT16: kpk_matmat_f16(A, X, k, acc, alpha, beta, Y); break;
    case KERNELS_VALUES_INT8: kpk_matmat_i8(A, X, k, acc, alpha, beta, Y); break;
    case KERNELS_VALUES_INT4: kpk_matmat_i4(A, X, k, acc, alpha, beta, Y); break;
    default: kpk_matmat_i2(A, X, k, acc, alpha, beta, Y); break;
    }
}

static void kpk_epilogue(float *Y, int64_t m, int64_t k, const float *bias,
                         int activation)
{
    int64_t i, c;
    for (i = 0; i < m; ++i) {
        float *row = Y + i * k, b = bias[i];
        for (c = 0; c < k; ++c) {
            float v = row[c] + b;
            if (activation == KERNELS_ACTIVATION_RELU)
                v = v < 0 ? 0.0f : v;
            else if (activation == KERNELS_ACTIVATION_TANH)
                v = tanhf(v);
            else if (activation == KERNELS_ACTIVATION_SIGMOID)
                v = 0.5f * tanhf(0.5f * v) + 0.5f;
            row[c] = v;
        }
    }
}

#endif
