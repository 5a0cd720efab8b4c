"""Helpers shared by the asv benchmarks: implementations, inputs, timing.

Every benchmark takes the implementation as a parameter: each backend of
ours ("cython", "numba", "numpy") and the plain NumPy expression a user
would write ("numpy-expression"), so one run shows them side by side.  The
sparse suites (bench_sparse, bench_mlp) name ours "<backend>-<format>" and
add the peers (scipy.sparse, dense NumPy, onnxruntime); their random
matrices, the rules that skip oversized combinations and the on-disk
matrix cache are at the end of this module.

This module uses only NumPy and the public API of ``kernels``, never the
package's private modules (not even ``kernels._bench``, which holds the
same kind of timing loop for ``python -m kernels bench``): asv runs these
files, as they are in the working tree, against builds of older commits
(``asv continuous``, ``asv run ALL``), so they must not depend on internals
that change from commit to commit.
"""

import abc
import functools
import os
import pathlib
import shutil
import statistics
import tempfile
import time
from typing import NamedTuple

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

import kernels

BASELINE = "numpy-expression"
IMPLEMENTATIONS = ("cython", "numba", "numpy", BASELINE)
DTYPES = ("float32", "float64")
SIZES = (1_000, 100_000, 10_000_000)

# A timed sample loops over the call until it lasts this long, so that the
# clock's resolution and overhead do not matter for microsecond calls.
SAMPLE_SECONDS = 1e-3

# scripts/asv-smoke sets KERNELS_BENCH_SMOKE=1: the smoke run checks that
# every benchmark runs, not its figures, so a track_ figure then times a
# single call instead of sampling for a tenth of a second.
SMOKE = os.environ.get("KERNELS_BENCH_SMOKE") == "1"


def _preload_backends():
    """Import every backend now, and run Numba's dispatcher once: asv imports
    this module once in its server process and forks one process per
    benchmark, which then starts with both done instead of paying about a
    second in each setup.  (Compiling for a benchmark's dtype, or loading it
    from Numba's cache, still happens in that benchmark's setup.)"""
    available = kernels.available_backends()
    if "numba" in available:
        kernels.prox_l1(np.zeros(1), 0.0, backend="numba")
    return available


AVAILABLE = _preload_backends()


def require_implementation(implementation):
    """Skip, the asv way (NotImplementedError in setup), a backend that is
    not built here; the NumPy expression is always there."""
    if implementation != BASELINE and implementation not in AVAILABLE:
        raise NotImplementedError(f"backend {implementation!r} is not available here")


def single_thread_blas():
    """Limit BLAS to one thread (threadpoolctl, when installed) so that a
    NumPy expression that reaches BLAS is compared single thread to single
    thread.  The limit lasts for the rest of the process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


def random_array(shape, dtype, seed=0):
    """Standard normal values of ``dtype``, reproducible."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.dtype(dtype))


def _seconds_per_call(call, number):
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def median_seconds(call, *, budget=0.1, min_samples=3, max_samples=25):
    """Median seconds per call of ``call()`` (already warmed up): at least
    ``min_samples`` timed samples, more while ``budget`` seconds last
    (one call in the smoke run, see SMOKE)."""
    first = _seconds_per_call(call, 1)
    if SMOKE:
        return first
    number = max(1, int(SAMPLE_SECONDS / max(first, 1e-9)))
    samples = [first] if number == 1 else []
    deadline = time.perf_counter() + budget
    while len(samples) < max_samples and (
        len(samples) < min_samples or time.perf_counter() < deadline
    ):
        samples.append(_seconds_per_call(call, number))
    return statistics.median(samples)


def copy_gbps(array):
    """GB/s of ``np.copyto`` of ``array`` into a preallocated array: the
    machine's streaming bandwidth for exactly this working set."""
    target = np.empty_like(array)
    np.copyto(target, array)
    return 2 * array.nbytes / median_seconds(lambda: np.copyto(target, array)) / 1e9


class Workload(NamedTuple):
    """What a benchmark times: ``run()`` calls the kernel once on inputs
    prepared beforehand (``out`` preallocated); ``bytes_moved`` is its
    traffic in the cost model (ALGORITHMS.md section 6); ``array`` is the
    input whose copy bandwidth it is compared with."""

    run: object
    bytes_moved: int
    array: np.ndarray


class KernelBenchmark(abc.ABC):
    """Time, peak memory and bandwidth of one kernel, for every
    implementation x dtype x size.  A subclass defines ``make``; it may
    override ``params`` (the last parameter is its own kind of size)."""

    params = (IMPLEMENTATIONS, DTYPES, SIZES)
    param_names = ("implementation", "dtype", "size")

    @abc.abstractmethod
    def make(self, implementation, dtype, size):
        """Prepare inputs and return a ``Workload`` for ``implementation``."""

    def setup(self, implementation, dtype, size):
        require_implementation(implementation)
        single_thread_blas()
        self.workload = self.make(implementation, np.dtype(dtype), size)
        # Warm-up: JIT compilation (or loading it from the cache) and the
        # first touch of every page happen here, never in a timed region.
        self.workload.run()

    def time_kernel(self, implementation, dtype, size):
        self.workload.run()

    def peakmem_kernel(self, implementation, dtype, size):
        self.workload.run()

    def track_gbps(self, implementation, dtype, size):
        return self.workload.bytes_moved / median_seconds(self.workload.run) / 1e9

    track_gbps.unit = "GB/s"

    def track_percent_of_copy(self, implementation, dtype, size):
        copy = copy_gbps(self.workload.array)
        kernel = self.workload.bytes_moved / median_seconds(self.workload.run) / 1e9
        return 100.0 * kernel / copy

    track_percent_of_copy.unit = "% of np.copyto GB/s"

    def track_speedup(self, implementation, dtype, size):
        if implementation == BASELINE:
            raise SkipNotImplemented("the baseline's speedup over itself is 1")
        baseline = self.make(BASELINE, np.dtype(dtype), size)
        baseline.run()
        return median_seconds(baseline.run) / median_seconds(self.workload.run)

    track_speedup.unit = "x faster than numpy-expression"


# Sparse matrices ---------------------------------------------------------
#
# Which combinations of the sparse suites run (a combination outside these
# limits raises NotImplementedError in setup, which asv shows as n/a), so
# that the full suite fits in 24 GB and in hours, not days:
#
# * nnz = density * m * n above MAX_NNZ: skipped (20000x20000 at density
#   0.5 would be 2e8 non-zeros, 2.4 GB in float64 CSR, plus its copies).
# * the dense matrix above MAX_DENSE_BYTES: its rows are skipped (20000 x
#   20000 float64 is 3.2 GB; float32, 1.6 GB, runs).
# * more than MAX_MULTIPLY_ADDS per call (nnz * batch for a sparse product,
#   m * n * batch for the dense one): skipped, a call would take seconds
#   (the dense 20000x20000 times a batch of 64 is 2.6e10).
# * the "numpy" reference backend above MAX_REFERENCE_PRODUCTS (nnz *
#   batch): skipped, it materialises every product a_ij * x_j in float64
#   and sums them with np.add.at (a second and 80 MB per 1e7).
MAX_NNZ = 5 * 10**7
MAX_DENSE_BYTES = 2 * 10**9
MAX_MULTIPLY_ADDS = 2 * 10**9
MAX_REFERENCE_PRODUCTS = 10**7

# Matrices with at least this many non-zeros are stored on disk after their
# first construction (in KERNELS_BENCH_CACHE, default
# $XDG_CACHE_HOME/embedded-kernels-bench or ~/.cache/...), because asv runs
# every benchmark method and parameter combination in its own process: the
# 20000x20000 matrices take seconds to draw and a fraction of one to load.
CACHE_MIN_NNZ = 10**6
# Part of the cache key: change it when the generator below changes.
_GENERATOR = "bernoulli-geometric-v1"


def skip(reason):
    """Skip the current parameter combination, the asv way."""
    raise NotImplementedError(reason)


def check_limits(*, nnz=None, batch=1, dense_bytes=None, reference=False):
    """Skip (NotImplementedError) a combination beyond the limits above."""
    if nnz is not None:
        if nnz > MAX_NNZ:
            skip(f"nnz {nnz:.3g} > MAX_NNZ {MAX_NNZ:.3g}")
        if nnz * batch > MAX_MULTIPLY_ADDS:
            skip(f"{nnz * batch:.3g} multiply-adds per call > {MAX_MULTIPLY_ADDS:.3g}")
        if reference and nnz * batch > MAX_REFERENCE_PRODUCTS:
            skip(
                f"numpy reference backend: nnz * batch {nnz * batch:.3g} > "
                f"{MAX_REFERENCE_PRODUCTS:.3g}"
            )
    if dense_bytes is not None and dense_bytes > MAX_DENSE_BYTES:
        skip(f"dense matrix of {dense_bytes / 1e9:.2g} GB > {MAX_DENSE_BYTES / 1e9} GB")


def parse_shape(shape):
    """'300x784' -> (300, 784)."""
    return tuple(int(n) for n in shape.split("x"))


def _bernoulli_positions(rng, count, p):
    """The sorted positions in range(count) of independent Bernoulli(p)
    draws, in O(number drawn): the gaps between successive successes are
    geometric."""
    if p >= 1:
        return np.arange(count, dtype=np.int64)
    expected = p * count
    chunk = int(expected + 8 * np.sqrt(expected) + 16)
    positions = np.cumsum(rng.geometric(p, size=chunk), dtype=np.int64) - 1
    while positions[-1] < count:  # (almost) never: 8 standard deviations
        more = positions[-1] + np.cumsum(rng.geometric(p, size=chunk), dtype=np.int64)
        positions = np.concatenate([positions, more])
    return positions[: np.searchsorted(positions, count)]


def _compressed(major, n_major, minor):
    """(indices, indptr) as int32 from sorted major / minor coordinates."""
    indptr = np.zeros(n_major + 1, dtype=np.int32)
    # bincount takes np.intp, which is int32 on 32-bit ARM
    counts = np.bincount(major.astype(np.intp), minlength=n_major)
    np.cumsum(counts, out=indptr[1:])
    return minor.astype(np.int32), indptr


def _draw_csr(shape, density, seed):
    m, n = shape
    rng = np.random.default_rng(seed)
    rows, cols = np.divmod(_bernoulli_positions(rng, m * n, density), n)
    indices, indptr = _compressed(rows, m, cols)
    return {
        "data": rng.standard_normal(indices.size),
        "indices": indices,
        "indptr": indptr,
    }


def _draw_bsr(shape, density, blocksize, seed):
    (m, n), (r, c) = shape, blocksize
    rng = np.random.default_rng(seed)
    positions = _bernoulli_positions(rng, (m // r) * (n // c), density)
    block_rows, block_cols = np.divmod(positions, n // c)
    indices, indptr = _compressed(block_rows, m // r, block_cols)
    return {
        "data": rng.standard_normal((indices.size, r, c)),
        "indices": indices,
        "indptr": indptr,
    }


def _cache_dir():
    root = os.environ.get("KERNELS_BENCH_CACHE")
    if root:
        return pathlib.Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "embedded-kernels-bench"


def _disk_cached(key, expected_nnz, build):
    """``build()`` (a dict of arrays), stored on disk under ``key`` when the
    matrix is large; a later process loads it instead of drawing it again.
    Written to a temporary directory renamed into place, so a reader never
    sees a partial entry; any error of the cache falls back to building."""
    if expected_nnz < CACHE_MIN_NNZ:
        return build()
    path = _cache_dir() / key
    try:
        if path.is_dir():
            return {f.stem: np.load(f) for f in path.glob("*.npy")}
    except (OSError, ValueError):
        pass
    arrays = build()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        os.replace(tmp, path)
    except OSError:  # no space, read-only, or another process won the race
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return arrays


@functools.lru_cache(maxsize=4)
def random_sparse_arrays(shape, density, blocksize=None, seed=0):
    """A random m x n sparse matrix: every entry (blocksize None, CSR arrays)
    or every (r, c) block (a BSR structure of dense blocks) is stored with
    probability ``density``, independently, with standard normal float64
    values; columns sorted within a row, indices and indptr int32.  A dict
    of "data", "indices", "indptr"; the same for the same arguments (memo
    in the process, and on disk for large matrices).  Shared: never
    modify them (cast "data" to the dtype a benchmark needs)."""
    m, n = shape
    name = "csr" if blocksize is None else "bsr{}x{}".format(*blocksize)
    key = f"{_GENERATOR}-{name}-{m}x{n}-{density!r}-seed{seed}"
    if blocksize is None:
        arrays = _disk_cached(
            key, density * m * n, lambda: _draw_csr(shape, density, seed)
        )
    else:
        arrays = _disk_cached(
            key, density * m * n, lambda: _draw_bsr(shape, density, blocksize, seed)
        )
    return arrays


def dense_from_csr(data, indices, indptr, shape, dtype):
    """The dense matrix of CSR arrays without repeated entries."""
    dense = np.zeros(shape, dtype=dtype)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    dense[rows, indices] = data
    return dense


def dense_from_bsr(data, indices, indptr, shape, dtype):
    """The dense matrix of BSR arrays without repeated blocks."""
    (m, n), (_, r, c) = shape, data.shape
    blocks = np.zeros((m // r, n // c, r, c), dtype=dtype)
    block_rows = np.repeat(np.arange(m // r), np.diff(indptr))
    blocks[block_rows, indices] = data
    return np.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).reshape(m, n)


def copy_gbps_of_bytes(nbytes):
    """GB/s of ``np.copyto`` between two arrays of nbytes / 2 bytes each:
    a copy that moves (reads + writes) as many bytes as a kernel of
    ``nbytes`` in the cost model, through a working set of the same size."""
    return copy_gbps(np.ones(max(1, nbytes // 16)))
