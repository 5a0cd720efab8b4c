"""How the compiled kernels were built: whether OpenMP is in, and how many
threads it would use.  Compiles with and without ``-fopenmp``."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define KERNELS_OPENMP_ENABLED 1
    static int kernels_openmp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define KERNELS_OPENMP_ENABLED 0
    static int kernels_openmp_max_threads(void) { return 1; }
    #endif
    """
    const int KERNELS_OPENMP_ENABLED
    int kernels_openmp_max_threads() noexcept nogil


def openmp_enabled():
    """True when these extension modules were compiled with OpenMP."""
    return KERNELS_OPENMP_ENABLED != 0


def openmp_max_threads():
    """omp_get_max_threads() (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return kernels_openmp_max_threads()
