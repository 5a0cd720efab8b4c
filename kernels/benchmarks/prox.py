"""Benchmark cases of the proximal operators (``kernels.prox``), each
against the NumPy expression a user would write instead (the peer
``"numpy-expression"``).

Every factory takes the input's ``shape`` (an int for a vector) and
``dtype``; the input is standard normal (``random_array``, seed 0).  All
of these kernels stream their input once: bytes moved = read x + write out
(``cumulative_l1``: read and write both w and received).
"""

import itertools
import math
import types

import numpy as np

import kernels
from kernels.benchmarks.case import EXPRESSION, Case, expression, random_array

__all__ = [
    "cumulative_l1",
    "keep_top_k",
    "project_box",
    "project_l1_ball",
    "prox_elastic_net",
    "prox_group_l1",
    "prox_l0",
    "prox_l1",
]


def _shape(shape):
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _streaming(kernel, shape, dtype, numpy_expression, ours, out="out", **values):
    """A case whose kernel reads ``x`` once and writes ``out`` once (``out``
    is "x" for a kernel applied in place).  ``values`` are the kernel's
    scalars, a callable one computed from ``x``."""
    shape = _shape(shape)

    def setup():
        x = random_array(shape, dtype)
        scalars = {k: v(x) if callable(v) else v for k, v in values.items()}
        inputs = types.SimpleNamespace(x=x, **scalars)
        inputs.out = x if out == "x" else np.empty_like(x)
        return inputs

    return Case(
        kernel=kernel,
        shape=shape,
        dtype=np.dtype(dtype).name,
        setup=setup,
        ours=ours,
        peers={EXPRESSION: expression(numpy_expression)},
        bytes_moved=2 * math.prod(shape) * np.dtype(dtype).itemsize,
    )


def soft_threshold_expression(x, threshold, out):
    """sign(x) * max(|x| - threshold, 0), into ``out``."""
    return np.multiply(np.sign(x), np.maximum(np.abs(x) - threshold, 0), out=out)


def prox_l1(shape, dtype, threshold=0.5):
    """Soft thresholding, the prox of ``threshold * ||x||_1``."""
    return _streaming(
        "prox_l1",
        shape,
        dtype,
        lambda a: soft_threshold_expression(a.x, a.t, a.out),
        lambda a, b: kernels.prox_l1(a.x, a.t, out=a.out, backend=b),
        t=threshold,
    )


def prox_elastic_net(shape, dtype, l1=0.5, l2=0.1):
    """The prox of ``l1 * ||x||_1 + l2 / 2 * ||x||^2``."""
    return _streaming(
        "prox_elastic_net",
        shape,
        dtype,
        lambda a: np.divide(
            np.sign(a.x) * np.maximum(np.abs(a.x) - a.l1, 0), 1 + a.l2, out=a.out
        ),
        lambda a, b: kernels.prox_elastic_net(a.x, a.l1, a.l2, out=a.out, backend=b),
        l1=l1,
        l2=l2,
    )


def prox_l0(shape, dtype, threshold=0.5):
    """Hard thresholding, the prox of ``threshold * ||x||_0``."""
    return _streaming(
        "prox_l0",
        shape,
        dtype,
        lambda a: np.multiply(a.x, np.abs(a.x) > np.sqrt(2 * a.t), out=a.out),
        lambda a, b: kernels.prox_l0(a.x, a.t, out=a.out, backend=b),
        t=threshold,
    )


def project_box(shape, dtype, lower=-1.0, upper=1.0):
    """The projection onto the box [lower, upper]^n."""
    return _streaming(
        "project_box",
        shape,
        dtype,
        lambda a: np.clip(a.x, a.lower, a.upper, out=a.out),
        lambda a, b: kernels.project_box(a.x, a.lower, a.upper, out=a.out, backend=b),
        lower=lower,
        upper=upper,
    )


def _group_expression(x, threshold, axis, out):
    norms = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.multiply(x, np.maximum(1 - threshold / norms, 0), out=out)


def prox_group_l1(shape, dtype, groups="rows", threshold=None, in_place=False):
    """Group soft thresholding of a (rows, cols) matrix, one group per row
    (``groups="rows"``) or per column ("cols").  The default threshold,
    the square root of the group's size, is about a typical group norm:
    about half the groups vanish.  ``in_place``: ``out=x``, as a training
    loop applies it (W <- prox(W)); give it a small threshold, so that the
    groups stay alive over thousands of calls."""
    rows, cols = shape
    if threshold is None:
        threshold = math.sqrt(cols if groups == "rows" else rows)
    axis = 1 if groups == "rows" else 0
    return _streaming(
        f"prox_group_l1 {groups}" + (" in place" if in_place else ""),
        shape,
        dtype,
        lambda a: _group_expression(a.x, a.t, axis, a.out),
        lambda a, b: kernels.prox_group_l1(a.x, a.t, groups, out=a.out, backend=b),
        out="x" if in_place else "out",
        t=threshold,
    )


def _top_k_expression(x, k, out):
    keep = np.argpartition(np.abs(x), x.size - k)[x.size - k :]
    out.fill(0)
    out[keep] = x[keep]
    return out


def keep_top_k(shape, dtype, fraction=0.1):
    """The projection onto the vectors of at most ``k = fraction * n``
    non-zeros: the k entries of largest magnitude."""
    k = int(fraction * math.prod(_shape(shape)))
    return _streaming(
        f"keep_top_k {100 * fraction:g}%",
        shape,
        dtype,
        lambda a: _top_k_expression(a.x, a.k, a.out),
        lambda a, b: kernels.keep_top_k(a.x, a.k, out=a.out, backend=b),
        k=k,
    )


def _l1_ball_expression(x, radius, out):
    """Duchi et al. (2008): sort the magnitudes, find the threshold."""
    u = np.sort(np.abs(x), axis=None)[::-1]
    excess = np.cumsum(u) - radius
    rho = np.flatnonzero(u * np.arange(1, u.size + 1) > excess)[-1]
    return soft_threshold_expression(x, excess[rho] / (rho + 1), out)


def project_l1_ball(shape, dtype, fraction=0.1):
    """The projection onto the l1 ball whose radius is ``fraction`` of
    ``||x||_1``."""
    return _streaming(
        "project_l1_ball",
        shape,
        dtype,
        lambda a: _l1_ball_expression(a.x, a.radius, a.out),
        lambda a, b: kernels.project_l1_ball(a.x, a.radius, out=a.out, backend=b),
        radius=lambda x: fraction * float(np.abs(x).sum(dtype=np.float64)),
    )


def _cumulative_l1_expression(w, received, total):
    z = w.copy()
    w[...] = np.where(
        z > 0,
        np.maximum(z - (total + received), 0),
        np.where(z < 0, np.minimum(z + (total - received), 0), z),
    )
    received += w - z
    return w


def cumulative_l1(shape, dtype, totals=(0.1, 0.2)):
    """The cumulative l1 penalty, in place on w and received (reads and
    writes both).  The running total cycles through ``totals``, so that
    every non-zero weight moves on every call, as in training (with the
    total fixed, the calls after the first would change nothing, and a
    kernel could skip its writes)."""
    shape = _shape(shape)

    def setup():
        w = random_array(shape, dtype)
        return types.SimpleNamespace(
            w=w, received=np.zeros_like(w), totals=itertools.cycle(totals)
        )

    return Case(
        kernel="cumulative_l1",
        shape=shape,
        dtype=np.dtype(dtype).name,
        setup=setup,
        ours=lambda a, b: kernels.cumulative_l1(
            a.w, a.received, next(a.totals), backend=b
        ),
        peers={
            EXPRESSION: expression(
                lambda a: _cumulative_l1_expression(a.w, a.received, next(a.totals))
            )
        },
        bytes_moved=4 * math.prod(shape) * np.dtype(dtype).itemsize,
        copy_of="w",
    )
