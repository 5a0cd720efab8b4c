# The elementwise shrinkage of pyx/shrink.h for Cython: the one soft
# threshold, hard threshold and clipped l1 step of the compiled modules,
# static inline C (see the header for their definitions and edge cases).
# Fused wrappers pick the _float or _double function at compile time.

from cython cimport floating


cdef extern from "shrink.h" nogil:
    float kernels_soft_float(float v, float t) noexcept
    double kernels_soft_double(double v, double t) noexcept
    float kernels_hard_float(float v, float c) noexcept
    double kernels_hard_double(double v, double c) noexcept
    float kernels_clipped_l1_float(float z, float u, float q) noexcept
    double kernels_clipped_l1_double(double z, double u, double q) noexcept
    double kernels_soft_solver(double z, double t) noexcept


cdef inline floating soft(floating v, floating t) noexcept nogil:
    """sign(v) * max(|v| - t, 0); NaN stays NaN, -0.0 stays -0.0."""
    if floating is float:
        return kernels_soft_float(v, t)
    else:
        return kernels_soft_double(v, t)


cdef inline floating hard(floating v, floating c) noexcept nogil:
    """v * (|v| > c) as the reference computes it (+-0.0, NaN for inf)."""
    if floating is float:
        return kernels_hard_float(v, c)
    else:
        return kernels_hard_double(v, c)


cdef inline floating clipped_l1(floating z, floating u, floating q) noexcept nogil:
    """Tsuruoka et al.'s clipped l1 step of one weight (record q)."""
    if floating is float:
        return kernels_clipped_l1_float(z, u, q)
    else:
        return kernels_clipped_l1_double(z, u, q)
