"""Proximal operators (kernels.prox) against the NumPy expressions a user
would write instead: the cases of ``kernels.benchmarks.prox``, for every
implementation x dtype x size.  All stream their input once: bytes moved =
read x + write out (cumulative_l1: read and write w and received).

Reported: ``time_kernel``, ``peakmem_kernel``, ``track_gbps``,
``track_percent_of_copy`` (of ``np.copyto`` of the same array) and
``track_speedup_over_numpy_expression``.
"""

from kernels.benchmarks import EXPRESSION, prox

from .common import (
    DTYPES,
    IMPLEMENTATIONS,
    SIZES,
    BandwidthBenchmark,
    parse_shape,
    speedup_over_peer,
)

GROUP_SHAPES = ("1x1024", "100x1024", "4096x1024", "10000x1024")


class _ProxBenchmark(BandwidthBenchmark):
    """One factory of ``kernels.benchmarks.prox`` (``make``) on a vector of
    ``size`` elements."""

    params = (IMPLEMENTATIONS, DTYPES, SIZES)
    param_names = ("implementation", "dtype", "size")

    def case(self, implementation, dtype, size):
        return self.make(size, dtype), implementation

    track_speedup_over_numpy_expression = speedup_over_peer(
        EXPRESSION, "x faster than numpy-expression"
    )


class _GroupBenchmark(_ProxBenchmark):
    """Group soft thresholding of a (rows, 1024) weight matrix; the
    threshold is about a typical group norm, so about half the groups
    become zero."""

    params = (IMPLEMENTATIONS, DTYPES, GROUP_SHAPES)
    param_names = ("implementation", "dtype", "shape")

    options = {}

    def case(self, implementation, dtype, shape):
        case = prox.prox_group_l1(parse_shape(shape), dtype, **self.options)
        return case, implementation


class ProxL1(_ProxBenchmark):
    """Soft thresholding, the prox of 0.5 * ||x||_1."""

    make = staticmethod(prox.prox_l1)


class ProxElasticNet(_ProxBenchmark):
    """The prox of 0.5 * ||x||_1 + 0.1 / 2 * ||x||^2."""

    make = staticmethod(prox.prox_elastic_net)


class ProxL0(_ProxBenchmark):
    """Hard thresholding, the prox of 0.5 * ||x||_0."""

    make = staticmethod(prox.prox_l0)


class ProjectBox(_ProxBenchmark):
    """The projection onto [-1, 1]^n."""

    make = staticmethod(prox.project_box)


class KeepTopK(_ProxBenchmark):
    """The 10% entries of largest magnitude."""

    make = staticmethod(prox.keep_top_k)


class ProjectL1Ball(_ProxBenchmark):
    """Projection onto the l1 ball whose radius is a tenth of ||x||_1."""

    make = staticmethod(prox.project_l1_ball)


class CumulativeL1(_ProxBenchmark):
    """The cumulative l1 penalty, in place; the running total alternates
    between 0.1 and 0.2, so that every non-zero weight moves on every
    call."""

    make = staticmethod(prox.cumulative_l1)


class ProxGroupL1Rows(_GroupBenchmark):
    """One group per row."""

    options = {"groups": "rows"}


class ProxGroupL1RowsInPlace(_GroupBenchmark):
    """One group per row, in place (out=x) with threshold 1e-3, as a
    training loop applies it: the rows stay alive over thousands of
    calls."""

    options = {"groups": "rows", "threshold": 1e-3, "in_place": True}


class ProxGroupL1Cols(_GroupBenchmark):
    """One group per column."""

    options = {"groups": "cols"}
