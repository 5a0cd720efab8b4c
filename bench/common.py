"""What the asv benchmarks share: the cases' runner, and the rules of the
smoke run and of the parameter grids.

The cases themselves (inputs, our call, the peers, bytes moved, result
checks) and the timing loops are defined once, in the installed package:
``kernels.benchmarks`` (public API, the same cases that ``python -m kernels
bench`` prints); the files of bench/ only choose the parameter grids and
name the benchmarks.  They use the public API of ``kernels`` only: asv
runs these files, as they are in the working tree, against builds of other
commits.

Every benchmark takes the implementation as a parameter: each backend of
ours ("cython", "numba", "numpy") and the case's peers (the NumPy
expression a user would write, "numpy-expression"; scipy.sparse, dense
NumPy, onnxruntime), so one run shows them side by side.  The sparse
suites (bench_sparse, bench_mlp) name ours "<backend>-<format>".
"""

import abc
import os
import pathlib

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

import kernels
from kernels.benchmarks import BACKENDS, EXPRESSION, timing

IMPLEMENTATIONS = (*BACKENDS, EXPRESSION)
DTYPES = ("float32", "float64")
SIZES = (1_000, 100_000, 10_000_000)

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


def median_seconds(call):
    """``timing.median_seconds`` of ``call`` (warmed up already); one call
    in the smoke run."""
    if SMOKE:
        return timing.seconds_per_call(call)
    return timing.median_seconds(call)


def skip(reason):
    """Skip the current parameter combination, the asv way."""
    raise NotImplementedError(reason)


class CaseBenchmark(abc.ABC):
    """Time and peak memory of a case of ``kernels.benchmarks`` for one
    implementation.  A subclass sets ``params`` and ``param_names`` and
    defines ``case(*params)``, which returns the case and the name of the
    implementation in it (a backend or a peer); it adds speed-ups with
    ``speedup_over_peer`` and the bandwidth figures with
    ``BandwidthBenchmark``.  BLAS is pinned to one thread (threadpoolctl)
    for every implementation."""

    @abc.abstractmethod
    def case(self, *params):
        """(Case, implementation) of a parameter combination; raises
        NotImplementedError for one that is skipped."""

    def setup(self, *params):
        timing.single_thread_blas()
        self.kernel, self.implementation = self.case(*params)
        self.inputs = self.kernel.setup()
        self.run = self.kernel.bind(self.implementation, self.inputs)
        # JIT compilation (or loading it from the cache) and the first touch
        # of every page happen here, never in a timed region; the result is
        # checked where the case has a check.
        self.kernel.warm_up(self.run, self.inputs)

    def time_kernel(self, *params):
        self.run()

    def peakmem_kernel(self, *params):
        self.run()

    def speedup_over(self, implementation, case=None):
        """Median time of ``implementation`` of ``case`` (default: this
        benchmark's case), on fresh inputs, over this implementation's."""
        case = self.kernel if case is None else case
        if case is self.kernel and implementation == self.implementation:
            raise SkipNotImplemented(f"{implementation}'s speed-up over itself is 1")
        inputs = case.setup()
        try:
            baseline = case.bind(implementation, inputs)
        except NotImplementedError as exc:
            raise SkipNotImplemented(f"no {implementation} baseline: {exc}") from None
        case.warm_up(baseline, inputs)
        return median_seconds(baseline) / median_seconds(self.run)


def speedup_over_peer(peer, unit):
    """A ``track_`` method of a ``CaseBenchmark``: the speed-up over the
    case's implementation ``peer``, in ``unit``."""

    def track_speedup(self, *params):
        return self.speedup_over(peer)

    track_speedup.unit = unit
    return track_speedup


class BandwidthBenchmark(CaseBenchmark):
    """A ``CaseBenchmark`` with GB/s (the bytes the implementation's call
    must move in the cost model, ALGORITHMS.md section 6, over its time)
    and that as a percentage of ``np.copyto``'s GB/s, measured alongside on
    the case's array (or through a working set of the same bytes)."""

    def track_gbps(self, *params):
        seconds = median_seconds(self.run)
        return self.kernel.bytes_of(self.implementation) / seconds / 1e9

    track_gbps.unit = "GB/s"

    def track_percent_of_copy(self, *params):
        copy = timing.copy_gbps(self.kernel.copy_source(self.inputs), median_seconds)
        return 100.0 * self.track_gbps(*params) / copy

    track_percent_of_copy.unit = "% of np.copyto GB/s"


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


def split_implementation(implementation):
    """'cython-csr' -> ('cython', 'csr'); 'dense' -> ('dense', '')."""
    backend, _, fmt = implementation.partition("-")
    return backend, fmt


def matrix_cache():
    """Where the large random matrices are stored after their first
    construction (``kernels.benchmarks.sparse.random_sparse``'s
    ``cache_dir``): asv runs every benchmark method and parameter
    combination in its own process, and the 20000x20000 matrices take
    seconds to draw and a fraction of one to load.  KERNELS_BENCH_CACHE,
    default $XDG_CACHE_HOME/embedded-kernels-bench or ~/.cache/..."""
    root = os.environ.get("KERNELS_BENCH_CACHE")
    if root:
        return pathlib.Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "embedded-kernels-bench"
