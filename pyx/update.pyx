# cython: embedsignature=False
# Every def here is fused; see pyx/prox.pyx for why signatures are not embedded.
"""Fused gradient-update kernels, compiled: the "cython" backend of
kernels.update.

Same names, arguments and semantics as ``kernels._reference.update`` (the
specification, with the input contract and the penalty codes).  Values are
float32 or float64 (fused type ``floating``); scalars are taken as C
doubles and rounded once to the dtype of ``w``, so float32 data are computed
in float32 as NumPy does.  One pass, without the GIL, no temporaries: each
z = w - step * v lives in a register on its way through the prox.

The loops are C, generated for float and double by a macro in the block
below, because GCC can build a C function for two instruction sets and
choose at load time (``target_clones``), which Cython cannot ask for: with
1e6 float32 parameters the four input arrays fit in a 32 MB L3 cache, and
the SSE2 loop was limited by instructions (67% of np.copyto's bandwidth on
the development machine, an AMD EPYC) where the AVX2 one is not.
"""

from cython cimport floating

include "_codes.pxi"


cdef extern from *:
    r"""
    #include <stddef.h>
    #include "shrink.h"

    /* On x86-64 Linux (glibc: ifuncs) GCC builds each loop function twice,
       for AVX2 and for the portable baseline (SSE2), and the dynamic loader
       picks one for the CPU it runs on: the loops are limited by
       instructions, not memory, on data that fit in cache, and AVX2 does
       twice the work per instruction.  Elsewhere (ARM, clang, musl) the
       loops are built once for the target the compiler was given. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)       \
        && defined(__GLIBC__)
    #define KERNELS_UPDATE_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define KERNELS_UPDATE_CLONES
    #endif

    /* The per-element prox of each penalty code (pyx/shrink.h: soft and
       hard threshold, the clipped l1 step with its record q), chosen once
       per call, so that each loop is elementwise and vectorises. */
    #define KERNELS_UPDATE_PROX_LOOPS(T, Z)                                   \
        switch (penalty) {                                                    \
        case KERNELS_PROX_SOFT_THRESHOLD:                                     \
            for (i = 0; i < n; i++)                                           \
                out[i] = kernels_soft_##T((Z), t) * scale;                    \
            break;                                                            \
        case KERNELS_PROX_HARD_THRESHOLD:                                     \
            for (i = 0; i < n; i++)                                           \
                out[i] = kernels_hard_##T((Z), t);                            \
            break;                                                            \
        case KERNELS_PROX_CUMULATIVE_L1:                                      \
            for (i = 0; i < n; i++) {                                         \
                T z = (Z), qi = q[i], v = kernels_clipped_l1_##T(z, u, qi);   \
                q[i] = qi + (v - z);                                          \
                out[i] = v;                                                   \
            }                                                                 \
            break;                                                            \
        default:                                                              \
            for (i = 0; i < n; i++) out[i] = (Z);                             \
        }

    /* out = prox(w - step * g) and out = prox(w - (a g + b s + c mu)) for
       one value type.  In place (out == w) the loops read w through out, so
       that GCC sees one array: its run-time overlap test of two pointers
       sent out == w to the scalar loop in the four-array step. */
    #define KERNELS_UPDATE_DEFINE(T)                                          \
        static KERNELS_UPDATE_CLONES void kernels_sgd_step_##T(               \
            const T* w, const T* g, T step, int penalty, T t, T scale, T* q,  \
            T u, T* out, ptrdiff_t n)                                         \
        {                                                                     \
            ptrdiff_t i;                                                      \
            if (out == w)                                                     \
                KERNELS_UPDATE_PROX_LOOPS(T, out[i] - step * g[i])            \
            else                                                              \
                KERNELS_UPDATE_PROX_LOOPS(T, w[i] - step * g[i])              \
        }                                                                     \
        static KERNELS_UPDATE_CLONES void kernels_mixed_step_##T(             \
            const T* w, const T* g, const T* s, const T* mu, T a, T b, T c,   \
            int penalty, T t, T scale, T* q, T u, T* out, ptrdiff_t n)        \
        {                                                                     \
            ptrdiff_t i;                                                      \
            if (out == w)                                                     \
                KERNELS_UPDATE_PROX_LOOPS(T,                                  \
                    out[i] - (a * g[i] + b * s[i] + c * mu[i]))               \
            else                                                              \
                KERNELS_UPDATE_PROX_LOOPS(T,                                  \
                    w[i] - (a * g[i] + b * s[i] + c * mu[i]))                 \
        }

    KERNELS_UPDATE_DEFINE(float)
    KERNELS_UPDATE_DEFINE(double)
    """
    void kernels_sgd_step_float(const float* w, const float* g, float step,
                                int penalty, float t, float scale, float* q,
                                float u, float* out, Py_ssize_t n) nogil
    void kernels_sgd_step_double(const double* w, const double* g, double step,
                                 int penalty, double t, double scale, double* q,
                                 double u, double* out, Py_ssize_t n) nogil
    void kernels_mixed_step_float(const float* w, const float* g, const float* s,
                                  const float* mu, float a, float b, float c,
                                  int penalty, float t, float scale, float* q,
                                  float u, float* out, Py_ssize_t n) nogil
    void kernels_mixed_step_double(const double* w, const double* g,
                                   const double* s, const double* mu, double a,
                                   double b, double c, int penalty, double t,
                                   double scale, double* q, double u, double* out,
                                   Py_ssize_t n) nogil


def sgd_step(const floating[::1] w not None, const floating[::1] g not None,
             double step, int penalty, double threshold, double scale,
             floating[::1] received not None, double total,
             floating[::1] out not None):
    """out = prox(w - step * g): a proximal SGD step, in one pass.

    prox by ``penalty``: none, soft threshold (l1, elastic net with
    ``scale``), hard threshold (l0), or the cumulative l1 penalty with
    ``received`` and ``total`` (see kernels._reference.update).
    O(n); moves 3 * n * itemsize bytes (read w and g, write out), plus
    2 * n * itemsize (read and write received) for the cumulative penalty.
    """
    cdef Py_ssize_t n = w.shape[0]
    cdef floating* op
    cdef floating* qp = NULL
    cdef const floating* wp
    if n == 0:
        return
    wp = &w[0]
    op = &out[0]
    if penalty == PROX_CUMULATIVE_L1:
        qp = &received[0]
    with nogil:
        if floating is float:
            kernels_sgd_step_float(wp, &g[0], step, penalty, threshold, scale, qp,
                                   total, op, n)
        else:
            kernels_sgd_step_double(wp, &g[0], step, penalty, threshold, scale, qp,
                                    total, op, n)


def mixed_step(const floating[::1] w not None, const floating[::1] g not None,
               const floating[::1] s not None, const floating[::1] mu not None,
               double a, double b, double c, int penalty, double threshold,
               double scale, floating[::1] received not None, double total,
               floating[::1] out not None):
    """out = prox(w - (a * g + b * s + c * mu)), in one pass: a proximal
    step along a combination of the mini-batch gradient g, the snapshot
    gradient s and the snapshot mean mu (a, b, c include the step size).

    prox by ``penalty`` as in sgd_step.  O(n); moves 5 * n * itemsize bytes
    (read w, g, s and mu, write out), plus 2 * n * itemsize (read and write
    received) for the cumulative penalty.
    """
    cdef Py_ssize_t n = w.shape[0]
    cdef floating* op
    cdef floating* qp = NULL
    cdef const floating* wp
    if n == 0:
        return
    wp = &w[0]
    op = &out[0]
    if penalty == PROX_CUMULATIVE_L1:
        qp = &received[0]
    with nogil:
        if floating is float:
            kernels_mixed_step_float(wp, &g[0], &s[0], &mu[0], a, b, c, penalty,
                                     threshold, scale, qp, total, op, n)
        else:
            kernels_mixed_step_double(wp, &g[0], &s[0], &mu[0], a, b, c, penalty,
                                      threshold, scale, qp, total, op, n)
