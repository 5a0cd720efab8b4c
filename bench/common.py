"""Helpers shared by the asv benchmarks: implementations, inputs, timing.

Every benchmark takes the implementation as a parameter: each backend of
ours ("cython", "numba", "numpy") and the plain NumPy expression a user
would write ("numpy-expression"), so one run shows them side by side.

This module uses only NumPy and the public API of ``kernels``, never the
package's private modules (not even ``kernels._bench``, which holds the
same kind of timing loop for ``python -m kernels bench``): asv runs these
files, as they are in the working tree, against builds of older commits
(``asv continuous``, ``asv run ALL``), so they must not depend on internals
that change from commit to commit.
"""

import abc
import statistics
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
    ``min_samples`` timed samples, more while ``budget`` seconds last."""
    first = _seconds_per_call(call, 1)
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
