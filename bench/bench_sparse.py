"""Sparse products (kernels.sparse) against scipy.sparse and dense NumPy:
the cases of ``kernels.benchmarks.sparse``.

``SpMV``: y = A @ x.  ``SpMM``: Y = A @ X for a batch of 64 vectors, in
the feature-major layout, X of shape (n, 64) and Y (m, 64)
(``layout="features"``): the layout of our kernel, of scipy's ``A @ X`` and
of ``np.matmul(W, X)``, so that no implementation pays a transposing copy
(the batch-major layout, with its copies, is timed in bench_mlp).

Parameters:

* implementation: ours as "<backend>-<format>", format "csr"
  (``CSRMatrix``), "bsr" (``BSRMatrix`` of 4x4 blocks) or "int8"
  (``QuantizedCSR``: int8 values, one float32 scale per row, uint16
  column indices for these shapes; float32 only, so its float64
  combinations are skipped); "scipy-csr" and "scipy-bsr" (scipy.sparse
  ``csr_array`` / ``bsr_array`` at the same dtype and on the same
  arrays); "dense" (``np.matmul`` into a preallocated output, BLAS).
* density, shape (m x n) and dtype.

The matrices: every entry is stored with probability ``density``,
independently (int8 rows quantise the float32 matrix).  The BSR rows
(ours and scipy-bsr) use a matrix of 4x4 blocks instead, every block
stored with probability ``density``: the same number of stored values in
expectation, and no fill-in (a BSR of an unstructured matrix at density 1%
would store 15 times its non-zeros).  Values are standard normal.  See
bench/common.py for the rules that skip the combinations too large to
run (20000x20000 at density 0.5, the dense 20000x20000 float64, products
of more than 2e9 multiply-adds, the numpy reference beyond 1e7) and for
the on-disk cache of the large matrices.  Setup checks every product on
at most 1e6 entries against a float64 dense one.

What is reported:

* ``time_kernel``: one product; ``peakmem_kernel``: the benchmark
  process's peak memory, setup (matrix construction) included.
* ``track_gbps``: bytes the product must move in the cost model
  (ALGORITHMS.md section 6) / time: the matrix's arrays (values, indices,
  row pointers; scales for int8; the m * n values for dense), x and y.
  ``track_percent_of_copy``: that over ``np.copyto``'s GB/s through a
  working set of the same size, measured alongside.
* ``track_speedup_over_dense`` and ``track_speedup_over_scipy``: time of
  the baseline on the same matrix / time of this implementation; the
  scipy baseline is in the same format (scipy-bsr for bsr rows,
  scipy-csr for the others).

Everything runs on one thread: ``threads=1`` for ours, BLAS pinned to one
thread (threadpoolctl) for dense and scipy.  ``SpMVThreaded`` holds the
threaded rows, labelled by their ``threads`` parameter.
"""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from kernels.benchmarks import BACKENDS, sparse

from .common import (
    AVAILABLE,
    DTYPES,
    MAX_MULTIPLY_ADDS,
    BandwidthBenchmark,
    check_limits,
    matrix_cache,
    parse_shape,
    skip,
    speedup_over_peer,
    split_implementation,
)

OURS = tuple(f"{backend}-{fmt}" for backend in BACKENDS for fmt in sparse.FORMATS)
IMPLEMENTATIONS = (*OURS, "scipy-csr", "scipy-bsr", "dense")
DENSITIES = (0.5, 0.1, 0.05, 0.01)
SHAPES = ("300x784", "100x300", "4096x4096", "20000x20000")
BATCH = 64


def product_case(implementation, density, shape, dtype, batch, threads=1):
    """(the case, the implementation in it) of ``implementation`` on the
    random matrix of ``density``, ``shape`` (a string "m x n") and
    ``dtype``, times a vector (batch 1) or a feature-major batch: ours
    "<backend>-<format>", "scipy-<format>" (the scipy peer of that
    format's case) or "dense" (the dense peer of the CSR case).  Skips
    (NotImplementedError) what cannot or should not run here."""
    backend, fmt = split_implementation(implementation)
    m, n = parse_shape(shape)
    dtype = np.dtype(dtype)
    if backend == "dense":
        check_limits(dense_bytes=m * n * dtype.itemsize)
        if m * n * batch > MAX_MULTIPLY_ADDS:
            skip(f"dense: {m * n * batch:.3g} multiply-adds per call")
    else:
        check_limits(
            nnz=int(density * m * n), batch=batch, reference=backend == "numpy"
        )
    if fmt == "int8" and dtype != np.float32:
        skip("QuantizedCSR computes in float32 only")
    if backend in BACKENDS and backend not in AVAILABLE:
        skip(f"backend {backend!r} is not available here")
    case = sparse.product(
        fmt or "csr", (m, n), density, dtype, batch, threads, matrix_cache()
    )
    return case, backend


class _SparseProduct(BandwidthBenchmark):
    """Time, memory, bandwidth and speed-ups of one product, for every
    implementation x density x shape x dtype, at the batch size ``batch``."""

    params = (IMPLEMENTATIONS, DENSITIES, SHAPES, DTYPES)
    param_names = ("implementation", "density", "shape", "dtype")
    batch = 1
    # The 20000x20000 matrices take seconds to draw (then to load from the
    # disk cache), and their speed-up baselines as long again.
    timeout = 600

    def case(self, implementation, density, shape, dtype):
        return product_case(implementation, density, shape, dtype, self.batch)

    track_speedup_over_dense = speedup_over_peer(
        "dense", "x faster than dense np.matmul"
    )
    track_speedup_over_scipy = speedup_over_peer(
        "scipy", "x faster than scipy.sparse, same format"
    )


class SpMV(_SparseProduct):
    """y = A @ x, one thread."""

    batch = 1


class SpMM(_SparseProduct):
    """Y = A @ X for a feature-major batch of 64 vectors, one thread."""

    batch = BATCH


class SpMVThreaded(BandwidthBenchmark):
    """THREADED: our CSR SpMV, float32, density 1%, on ``threads`` threads
    (``threads=`` of ``kernels.spmv``); 300x784 is there for the smoke run
    (below the kernels' parallel threshold it stays on one thread).
    ``track_speedup_over_one_thread``: the same backend's time on one
    thread / its time on ``threads``; ``track_percent_of_copy`` is of a
    single-thread ``np.copyto``."""

    params = (("cython-csr", "numba-csr"), (1, 2), ("300x784", "20000x20000"))
    param_names = ("implementation", "threads", "shape")
    timeout = 600
    density = 0.01
    dtype = "float32"

    def case(self, implementation, threads, shape):
        return product_case(implementation, self.density, shape, self.dtype, 1, threads)

    def track_speedup_over_one_thread(self, implementation, threads, shape):
        if threads == 1:
            raise SkipNotImplemented("one thread's speed-up over itself is 1")
        one_thread, backend = self.case(implementation, 1, shape)
        return self.speedup_over(backend, one_thread)

    track_speedup_over_one_thread.unit = "x faster than 1 thread"
