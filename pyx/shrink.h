/* Elementwise shrinkage: the one home of the soft threshold, the hard
 * threshold and the clipped (cumulative) l1 step of the compiled modules.
 *
 * pyx/prox.pyx (the prox kernels), pyx/update.pyx (the prox of a fused
 * update step) and pyx/solvers.pyx use these, through pyx/shrink.pxd from
 * Cython and directly from the C loops of the headers.  Each function is a
 * few operations on one value, static inline so that it disappears into
 * the caller's loop; they are written as selects of values that cannot
 * trap, so that GCC vectorises those loops without -ffast-math and NaN and
 * -0.0 come out as in NumPy (kernels._reference.prox is the
 * specification).  _float and _double versions compute in their type.
 */
#ifndef KERNELS_SHRINK_H
#define KERNELS_SHRINK_H

#include <math.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* soft(v, t) = sign(v) * max(|v| - t, 0), as copysign(max(|v| - t, 0), v):
 * NaN stays NaN; -0.0, and a negative v inside the threshold, give -0.0.
 * The prox of t * |.|; t >= 0. */
static inline float kernels_soft_float(float v, float t)
{
    float m = fabsf(v) - t;
    if (m < 0)
        m = 0;
    return copysignf(m, v);
}

static inline double kernels_soft_double(double v, double t)
{
    double m = fabs(v) - t;
    if (m < 0)
        m = 0;
    return copysign(m, v);
}

/* hard(v, c) = v * (|v| > c), as the reference computes it: v, or v * 0
 * (+-0.0 with the sign of v, NaN for inf and NaN).  As selects: GCC turns
 * the product into a branch, and will not compute v * 0 ahead of a branch
 * (-ftrapping-math), so neither form of the product vectorises. */
static inline float kernels_hard_float(float v, float c)
{
    float a = fabsf(v), dropped = copysignf(0.0f, v);
    if (!(a < (float)INFINITY))
        dropped = (float)NAN;
    if (a > c)
        dropped = v;
    return dropped;
}

static inline double kernels_hard_double(double v, double c)
{
    double a = fabs(v), dropped = copysign(0.0, v);
    if (!(a < (double)INFINITY))
        dropped = (double)NAN;
    if (a > c)
        dropped = v;
    return dropped;
}

/* The cumulative l1 penalty of Tsuruoka, Tsujii and Ananiadou (2009) on one
 * weight z, with u the total penalty so far and q what this weight has
 * received: z > 0: max(0, z - (u + q)); z < 0: min(0, z + (u - q)); else z.
 * The caller then records q + (result - z).  Both candidates are computed
 * and one is selected. */
static inline float kernels_clipped_l1_float(float z, float u, float q)
{
    float pos = z - (u + q), neg = z + (u - q), v = z;
    if (pos < 0)
        pos = 0;
    if (neg > 0)
        neg = 0;
    if (z > 0)
        v = pos;
    if (z < 0)
        v = neg;
    return v;
}

static inline double kernels_clipped_l1_double(double z, double u, double q)
{
    double pos = z - (u + q), neg = z + (u - q), v = z;
    if (pos < 0)
        pos = 0;
    if (neg > 0)
        neg = 0;
    if (z > 0)
        v = pos;
    if (z < 0)
        v = neg;
    return v;
}

/* The soft threshold of the solvers (pyx/solvers.pyx), double only: the
 * part of z above t plus the part below -t, max(z - t, 0) + min(z + t, 0),
 * each "a if a > 0 else 0".  It equals kernels_soft_double(z, t) except
 * where that gives -0.0 (this gives +0.0) and for NaN (this gives 0): the
 * form kernels._numba.solvers._soft computes, so that the two backends'
 * iterates agree bit for bit.  On SSE2, maxsd/minsd compute exactly that
 * without a branch (GCC compiles the plain C to branches, mispredicted when
 * the signs of the coordinates are a coin toss); elsewhere the plain C. */
static inline double kernels_soft_solver(double z, double t)
{
#if defined(__SSE2__)
    __m128d zero = _mm_setzero_pd();
    return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(z - t), zero))
        + _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(z + t), zero));
#else
    double above = z - t, below = z + t;
    return (above > 0.0 ? above : 0.0) + (below < 0.0 ? below : 0.0);
#endif
}

#endif /* KERNELS_SHRINK_H */
