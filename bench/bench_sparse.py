"""Sparse products (kernels.sparse) against scipy.sparse and dense NumPy.

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
the on-disk cache of the large matrices.

What is reported:

* ``time_``: one product; ``peakmem_``: the benchmark process's peak
  memory, setup (matrix construction) included.
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

from typing import NamedTuple

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

import kernels

from .common import (
    AVAILABLE,
    DTYPES,
    MAX_MULTIPLY_ADDS,
    check_limits,
    copy_gbps_of_bytes,
    dense_from_bsr,
    dense_from_csr,
    median_seconds,
    parse_shape,
    random_sparse_arrays,
    single_thread_blas,
    skip,
)

try:
    import scipy.sparse as scipy_sparse
except ImportError:  # scipy is an optional peer: its rows are skipped
    scipy_sparse = None

BACKENDS = ("cython", "numba", "numpy")
FORMATS = ("csr", "bsr", "int8")
OURS = tuple(f"{backend}-{fmt}" for backend in BACKENDS for fmt in FORMATS)
IMPLEMENTATIONS = (*OURS, "scipy-csr", "scipy-bsr", "dense")
DENSITIES = (0.5, 0.1, 0.05, 0.01)
SHAPES = ("300x784", "100x300", "4096x4096", "20000x20000")
BLOCKSIZE = (4, 4)
BATCH = 64

# Setup checks the product against a float64 dense one when the matrix has
# at most this many entries (m * n): cheap, and it catches a wrong layout
# or a wrong matrix before its figures are reported.
CHECK_MAX_ENTRIES = 10**6


class SparseWorkload(NamedTuple):
    """``run()`` computes the product once (into a preallocated output where
    the implementation takes one) and returns it; ``bytes_moved`` is its
    traffic in the cost model; ``structure`` is "csr" or "bsr" (which
    random matrix it runs on)."""

    run: object
    bytes_moved: int
    structure: str


def _split(implementation):
    """'cython-csr' -> ('cython', 'csr'); 'dense' -> ('dense', '')."""
    backend, _, fmt = implementation.partition("-")
    return backend, fmt


def _check_product(result, matrix, x, dtype, fmt):
    """The product against float64 dense math: within rounding of |A| |x|,
    plus, for int8, the quantisation error bound (half a step of the row's
    scale, max|row| / 254, per stored entry, times |x_j|)."""
    x = x.astype(np.float64)
    error = np.abs(np.asarray(result, dtype=np.float64) - matrix @ x)
    rounding = 1e-4 if dtype == np.float32 else 1e-10
    bound = rounding * (np.abs(matrix) @ np.abs(x)) + 1e-30
    if fmt == "int8":
        step = np.abs(matrix).max(axis=1) / 254
        bound += (step[:, None] if x.ndim == 2 else step) * ((matrix != 0) @ np.abs(x))
    if not np.all(error <= bound):
        worst = np.max(error / bound)
        raise AssertionError(f"wrong product: error {worst:.3g} x the bound")


def sparse_workload(
    implementation, density, shape, dtype, batch, threads=1, structure=None
):
    """The product of ``implementation`` on the random matrix of
    ``density``, ``shape`` (a string "m x n") and ``dtype``, times a vector
    (batch 1) or a feature-major batch.  ``structure`` forces the random
    matrix ("csr" or "bsr") of a dense or scipy baseline; by default it
    follows the format.  Skips (NotImplementedError) what cannot or should
    not run here."""
    backend, fmt = _split(implementation)
    m, n = parse_shape(shape)
    dtype = np.dtype(dtype)
    if structure is None:
        structure = "bsr" if fmt == "bsr" else "csr"
    expected_nnz = int(density * m * n)
    if backend == "dense":
        dense_bytes = m * n * dtype.itemsize
        check_limits(dense_bytes=dense_bytes)
        if m * n * batch > MAX_MULTIPLY_ADDS:
            skip(f"dense: {m * n * batch:.3g} multiply-adds per call")
    else:
        check_limits(nnz=expected_nnz, batch=batch, reference=backend == "numpy")
    if fmt == "int8" and dtype != np.float32:
        skip("QuantizedCSR computes in float32 only")
    if backend == "scipy" and scipy_sparse is None:
        skip("scipy is not installed")
    if backend in BACKENDS and backend not in AVAILABLE:
        skip(f"backend {backend!r} is not available here")

    blocksize = BLOCKSIZE if structure == "bsr" else None
    arrays = random_sparse_arrays((m, n), density, blocksize)
    data = arrays["data"].astype(dtype)
    indices, indptr = arrays["indices"], arrays["indptr"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n if batch == 1 else (n, batch), dtype=dtype)
    y = np.empty(m if batch == 1 else (m, batch), dtype=dtype)
    to_dense = dense_from_bsr if structure == "bsr" else dense_from_csr

    if backend == "dense":
        W = to_dense(data, indices, indptr, (m, n), dtype)
        del data

        def run():
            return np.matmul(W, x, out=y)

        matrix_bytes = W.nbytes
    elif backend == "scipy":
        make = scipy_sparse.bsr_array if structure == "bsr" else scipy_sparse.csr_array
        S = make((data, indices, indptr), shape=(m, n), copy=False)

        def run():
            return S @ x

        matrix_bytes = data.nbytes + indices.nbytes + indptr.nbytes
    else:
        if fmt == "bsr":
            A = kernels.BSRMatrix(data, indices, indptr, (m, n))
        else:
            A = kernels.CSRMatrix(data, indices, indptr, (m, n))
            if fmt == "int8":
                A = kernels.QuantizedCSR.from_csr(A)
        if batch == 1:

            def run():
                return kernels.spmv(A, x, out=y, threads=threads, backend=backend)

        else:

            def run():
                return kernels.spmm(
                    A, x, out=y, threads=threads, layout="features", backend=backend
                )

        matrix_bytes = A.nbytes
    if m * n <= CHECK_MAX_ENTRIES:
        reference = to_dense(arrays["data"], indices, indptr, (m, n), np.float64)
        _check_product(run(), reference, x, dtype, fmt)
    return SparseWorkload(run, matrix_bytes + x.nbytes + y.nbytes, structure)


def _baseline_seconds(implementation, density, shape, dtype, batch, structure):
    """Median seconds of a baseline on the same matrix; a baseline that
    cannot run here skips the ratio."""
    try:
        baseline = sparse_workload(
            implementation, density, shape, dtype, batch, structure=structure
        )
    except NotImplementedError as exc:
        raise SkipNotImplemented(f"no {implementation} baseline: {exc}") from None
    baseline.run()
    return median_seconds(baseline.run)


class _SparseProduct:
    """Time, memory, bandwidth and speed-ups of one product, for every
    implementation x density x shape x dtype, at the batch size ``batch``."""

    params = (IMPLEMENTATIONS, DENSITIES, SHAPES, DTYPES)
    param_names = ("implementation", "density", "shape", "dtype")
    batch = 1
    # The 20000x20000 matrices take seconds to draw (then to load from the
    # disk cache), and their speed-up baselines as long again.
    timeout = 600

    def setup(self, implementation, density, shape, dtype):
        single_thread_blas()
        self.workload = sparse_workload(
            implementation, density, shape, dtype, self.batch
        )
        # Warm-up: JIT compilation (or loading it from Numba's cache) and the
        # first touch of every page happen here, never in a timed region.
        self.workload.run()

    def time_product(self, implementation, density, shape, dtype):
        self.workload.run()

    def peakmem_product(self, implementation, density, shape, dtype):
        self.workload.run()

    def track_gbps(self, implementation, density, shape, dtype):
        return self.workload.bytes_moved / median_seconds(self.workload.run) / 1e9

    track_gbps.unit = "GB/s"

    def track_percent_of_copy(self, implementation, density, shape, dtype):
        copy = copy_gbps_of_bytes(self.workload.bytes_moved)
        kernel = self.workload.bytes_moved / median_seconds(self.workload.run) / 1e9
        return 100.0 * kernel / copy

    track_percent_of_copy.unit = "% of np.copyto GB/s"

    def track_speedup_over_dense(self, implementation, density, shape, dtype):
        if implementation == "dense":
            raise SkipNotImplemented("the dense baseline's speed-up over itself is 1")
        baseline = _baseline_seconds(
            "dense", density, shape, dtype, self.batch, self.workload.structure
        )
        return baseline / median_seconds(self.workload.run)

    track_speedup_over_dense.unit = "x faster than dense np.matmul"

    def track_speedup_over_scipy(self, implementation, density, shape, dtype):
        if implementation.startswith("scipy"):
            raise SkipNotImplemented("the scipy baseline's speed-up over itself is 1")
        structure = self.workload.structure
        baseline = _baseline_seconds(
            f"scipy-{structure}", density, shape, dtype, self.batch, structure
        )
        return baseline / median_seconds(self.workload.run)

    track_speedup_over_scipy.unit = "x faster than scipy.sparse, same format"


class SpMV(_SparseProduct):
    """y = A @ x, one thread."""

    batch = 1


class SpMM(_SparseProduct):
    """Y = A @ X for a feature-major batch of 64 vectors, one thread."""

    batch = BATCH


class SpMVThreaded:
    """THREADED: our CSR SpMV, float32, density 1%, on ``threads`` threads
    (``threads=`` of ``kernels.spmv``); 300x784 is there for the smoke run
    (below the kernels' parallel threshold it stays on one thread).
    ``track_speedup_over_one_thread``: the same backend's time on one
    thread / its time on ``threads``."""

    params = (("cython-csr", "numba-csr"), (1, 2), ("300x784", "20000x20000"))
    param_names = ("implementation", "threads", "shape")
    timeout = 600
    density = 0.01
    dtype = "float32"

    def setup(self, implementation, threads, shape):
        self.workload = sparse_workload(
            implementation, self.density, shape, self.dtype, 1, threads=threads
        )
        self.workload.run()

    def time_product(self, implementation, threads, shape):
        self.workload.run()

    def track_gbps(self, implementation, threads, shape):
        return self.workload.bytes_moved / median_seconds(self.workload.run) / 1e9

    track_gbps.unit = "GB/s"

    def track_percent_of_copy(self, implementation, threads, shape):
        copy = copy_gbps_of_bytes(self.workload.bytes_moved)
        kernel = self.workload.bytes_moved / median_seconds(self.workload.run) / 1e9
        return 100.0 * kernel / copy

    track_percent_of_copy.unit = "% of single-thread np.copyto GB/s"

    def track_speedup_over_one_thread(self, implementation, threads, shape):
        if threads == 1:
            raise SkipNotImplemented("one thread's speed-up over itself is 1")
        one = sparse_workload(implementation, self.density, shape, self.dtype, 1)
        one.run()
        return median_seconds(one.run) / median_seconds(self.workload.run)

    track_speedup_over_one_thread.unit = "x faster than 1 thread"
