"""Proximal operators (kernels.prox) against the NumPy expressions a user
would write instead.  All stream their input once: bytes moved = read x +
write out (cumulative_l1: read and write w and received)."""

import numpy as np

import kernels

from .common import (
    BASELINE,
    DTYPES,
    IMPLEMENTATIONS,
    KernelBenchmark,
    Workload,
    random_array,
)

THRESHOLD = 0.5


def soft_threshold_expression(x, threshold, out):
    np.multiply(np.sign(x), np.maximum(np.abs(x) - threshold, 0), out=out)


def group_rows_expression(x, threshold, out):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.multiply(x, np.maximum(1 - threshold / norms, 0), out=out)


def cumulative_l1_expression(w, received, total):
    z = w.copy()
    w[...] = np.where(
        z > 0,
        np.maximum(z - (total + received), 0),
        np.where(z < 0, np.minimum(z + (total - received), 0), z),
    )
    received += w - z


def l1_ball_expression(x, radius, out):
    """Duchi et al. (2008): sort the magnitudes, find the threshold."""
    u = np.sort(np.abs(x), axis=None)[::-1]
    excess = np.cumsum(u) - radius
    rho = np.flatnonzero(u * np.arange(1, u.size + 1) > excess)[-1]
    soft_threshold_expression(x, excess[rho] / (rho + 1), out)


class ProxL1(KernelBenchmark):
    """Soft thresholding, the prox of threshold * ||x||_1."""

    def make(self, implementation, dtype, size):
        x = random_array(size, dtype)
        out = np.empty_like(x)
        if implementation == BASELINE:
            return Workload(
                lambda: soft_threshold_expression(x, THRESHOLD, out), 2 * x.nbytes, x
            )
        return Workload(
            lambda: kernels.prox_l1(x, THRESHOLD, out=out, backend=implementation),
            2 * x.nbytes,
            x,
        )


class ProxGroupL1Rows(KernelBenchmark):
    """Group soft thresholding of a (rows, 1024) weight matrix, one group
    per row; the threshold is about a typical row norm, so about half the
    rows become zero."""

    params = (
        IMPLEMENTATIONS,
        DTYPES,
        ("1x1024", "100x1024", "4096x1024", "10000x1024"),
    )
    param_names = ("implementation", "dtype", "shape")

    def make(self, implementation, dtype, shape):
        x = random_array(tuple(int(n) for n in shape.split("x")), dtype)
        out = np.empty_like(x)
        threshold = float(np.sqrt(x.shape[1]))
        if implementation == BASELINE:
            return Workload(
                lambda: group_rows_expression(x, threshold, out), 2 * x.nbytes, x
            )
        return Workload(
            lambda: kernels.prox_group_l1(
                x, threshold, "rows", out=out, backend=implementation
            ),
            2 * x.nbytes,
            x,
        )


class CumulativeL1(KernelBenchmark):
    """The cumulative l1 penalty, in place.  The warm-up call in setup
    applies the penalty; the timed calls then find every weight at its fixed
    point (no new penalty), which does the same work per element."""

    def make(self, implementation, dtype, size):
        w = random_array(size, dtype)
        received = np.zeros_like(w)
        total = 0.1
        if implementation == BASELINE:
            return Workload(
                lambda: cumulative_l1_expression(w, received, total), 4 * w.nbytes, w
            )
        return Workload(
            lambda: kernels.cumulative_l1(w, received, total, backend=implementation),
            4 * w.nbytes,
            w,
        )


class ProjectL1Ball(KernelBenchmark):
    """Projection onto the l1 ball whose radius is a tenth of ||x||_1."""

    def make(self, implementation, dtype, size):
        x = random_array(size, dtype)
        out = np.empty_like(x)
        radius = 0.1 * float(np.abs(x).sum(dtype=np.float64))
        if implementation == BASELINE:
            return Workload(lambda: l1_ball_expression(x, radius, out), 2 * x.nbytes, x)
        return Workload(
            lambda: kernels.project_l1_ball(x, radius, out=out, backend=implementation),
            2 * x.nbytes,
            x,
        )
