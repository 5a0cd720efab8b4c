# The row loops of the deployment matrices, pyx/packed_rows.h, for Cython:
# kernels._cy.packed (the kernels) and kernels._cy.sparse (the one-sample
# plan) call the same functions, so a plan gives the kernels' bits.

from libc.stdint cimport int32_t, int64_t


cdef extern from "packed_rows.h" nogil:
    ctypedef struct kpk_matrix:
        int64_t layout, codec, index, m, n, count
        const void* values
        const void* structure
        const int32_t* indptr
        const float* scales
    void kpk_init_tables() noexcept
    void kpk_matvec(const kpk_matrix* A, const float* x, double alpha, double beta,
                    float* y) noexcept
    void kpk_matmat(const kpk_matrix* A, const float* X, int64_t k, float* acc,
                    double alpha, double beta, float* Y) noexcept
    void kpk_epilogue(float* Y, int64_t m, int64_t k, const float* bias,
                      int activation) noexcept
