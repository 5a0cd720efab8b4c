"""Proximal operators and projections (ALGORITHMS.md section 4).

Every function here validates its inputs, allocates the output when ``out``
is None, and calls one kernel of the chosen backend.  Common behaviour:

* ``x`` may have any shape (1-D vectors and 2-D weight matrices are the
  usual cases); float32 and float64 are preserved, integer and other real
  dtypes are converted (see ``kernels._checks``).
* ``out=None`` allocates the result; ``out=x`` works in place; any other
  ``out`` must be a writable array of the result's shape and dtype.
* Thresholds are real, non-negative and not NaN (``inf`` is allowed and
  zeroes every finite entry it applies to; a threshold too large for
  float32 becomes ``inf``).  A bad argument is a ValueError or
  TypeError that names it.
* NaN in ``x`` propagates through the elementwise operators; the operators
  that rank or sum magnitudes (``keep_top_k``, ``project_l1_ball``) require
  a finite ``x``.
* ``backend`` is "cython", "numba" or "numpy"; None uses the current
  default (``kernels.get_backend()``).
"""

import math

import numpy as np

from kernels import _checks
from kernels._backend import kernels_for

_FLOAT64_MAX = float(np.finfo(np.float64).max)

__all__ = [
    "prox_l1",
    "prox_elastic_net",
    "prox_group_l1",
    "prox_sparse_group_l1",
    "prox_l0",
    "keep_top_k",
    "project_l1_ball",
    "project_box",
    "cumulative_l1",
]


def _soft_threshold(x, threshold, scale, out, backend, name="threshold"):
    x = _checks.as_float_array(x)
    buffer = _checks.output_buffer(out, x)
    kernels = kernels_for("prox", backend)
    dtype = x.dtype.type
    if _checks.is_scalar(threshold):
        t = _checks.scalar(threshold, name, minimum=0.0)
        kernels.soft_threshold(
            x.reshape(-1), _checks.cast(t, dtype), dtype(scale), buffer.reshape(-1)
        )
    else:
        t = _checks.per_coordinate(threshold, name, x.shape, x.dtype, minimum=0)
        kernels.soft_threshold_each(
            x.reshape(-1), t.reshape(-1), dtype(scale), buffer.reshape(-1)
        )
    return _checks.deliver(out, buffer)


def prox_l1(x, threshold, out=None, backend=None):
    """Soft thresholding: the prox of ``threshold * ||x||_1``.

    ``out = sign(x) * max(|x| - threshold, 0)``, where ``threshold`` is a
    scalar or an array broadcastable to ``x.shape`` (one threshold per
    coordinate).  O(n); streams x once.
    """
    return _soft_threshold(x, threshold, 1.0, out, backend)


def prox_elastic_net(x, l1, l2, out=None, backend=None):
    """The prox of ``l1 * ||x||_1 + (l2 / 2) * ||x||^2``: soft threshold by
    ``l1`` (scalar or per coordinate), then divide by ``1 + l2``."""
    l2 = _checks.scalar(l2, "l2", minimum=0.0, allow_inf=False)
    return _soft_threshold(x, l1, 1.0 / (1.0 + l2), out, backend, name="l1")


def _group_layout(groups, shape):
    """Parse ``groups`` into ("cols", None) or ("ptr", int64 group pointer)."""
    size = int(np.prod(shape))
    if isinstance(groups, str):
        if len(shape) != 2:
            raise ValueError(
                f'groups="{groups}" needs a 2-D x, got x with shape {shape}'
            )
        if groups == "rows":
            return "ptr", np.arange(shape[0] + 1, dtype=np.int64) * shape[1]
        if groups == "cols":
            return "cols", None
        raise ValueError(
            f'groups must be "rows", "cols", an int or sizes, got {groups!r}'
        )
    return "ptr", _checks.group_pointer(groups, size, "x.size")


def _group_shrink(x, l1, threshold, groups, weights, out, backend):
    x = _checks.as_float_array(x)
    threshold = _checks.scalar(threshold, "threshold", minimum=0.0)
    layout, pointer = _group_layout(groups, x.shape)
    n_groups = x.shape[1] if layout == "cols" else pointer.size - 1
    if weights is None:
        thresholds = np.full(n_groups, threshold, dtype=x.dtype)
    else:
        weights = _checks.as_float_array(weights, "weights", dtype=np.float64)
        if weights.shape != (n_groups,):
            raise ValueError(
                f"weights must have one entry per group, shape ({n_groups},), "
                f"got shape {weights.shape}"
            )
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and non-negative")
        # a group of weight 0 is not penalised, even for threshold=inf
        # (inf * 0 would be NaN and turn the whole group into NaN)
        thresholds = np.multiply(
            threshold, weights, out=np.zeros_like(weights), where=weights > 0
        ).astype(x.dtype)
    buffer = _checks.output_buffer(out, x)
    kernels = kernels_for("prox", backend)
    l1 = _checks.cast(l1, x.dtype.type)
    if layout == "cols":
        kernels.group_shrink_cols(x, l1, thresholds, buffer)
    else:
        kernels.group_shrink(x.reshape(-1), l1, pointer, thresholds, buffer.reshape(-1))
    return _checks.deliver(out, buffer)


def prox_group_l1(x, threshold, groups, weights=None, out=None, backend=None):
    """Group soft thresholding: the prox of
    ``threshold * sum_g weights[g] * ||x_g||_2``.

    ``x_g <- x_g * max(0, 1 - threshold * weights[g] / ||x_g||)``: a group
    whose norm is below its threshold becomes exactly zero.  ``groups`` is

    * an int: equal contiguous groups of that size over ``x`` in C order,
    * a 1-D array of group sizes (contiguous groups in C order, summing to
      ``x.size``; empty groups are allowed),
    * for a 2-D ``x`` (out_features, in_features) as a layer stores its
      weight: ``"rows"`` (a row is one neuron's incoming weights) or
      ``"cols"`` (a column is one input's outgoing weights).

    ``weights`` (optional, non-negative) scales each group's threshold; a
    common choice is sqrt(group size).  Norms are accumulated in float64.
    """
    return _group_shrink(x, 0.0, threshold, groups, weights, out, backend)


def prox_sparse_group_l1(
    x, l1, threshold, groups, weights=None, out=None, backend=None
):
    """The prox of the sparse group lasso
    ``l1 * ||x||_1 + threshold * sum_g weights[g] * ||x_g||_2``:
    soft threshold by ``l1``, then group-shrink as ``prox_group_l1``."""
    l1 = _checks.scalar(l1, "l1", minimum=0.0)
    return _group_shrink(x, l1, threshold, groups, weights, out, backend)


def prox_l0(x, threshold, out=None, backend=None):
    """Hard thresholding: the prox of ``threshold * ||x||_0``.

    Keeps ``x_i`` where ``|x_i| > sqrt(2 * threshold)`` and zeroes the rest.
    """
    x = _checks.as_float_array(x)
    threshold = _checks.scalar(threshold, "threshold", minimum=0.0)
    buffer = _checks.output_buffer(out, x)
    cutoff = _checks.cast(np.sqrt(2.0 * threshold), x.dtype.type)
    kernels_for("prox", backend).hard_threshold(
        x.reshape(-1), cutoff, buffer.reshape(-1)
    )
    return _checks.deliver(out, buffer)


def keep_top_k(x, k, out=None, backend=None):
    """Keep the ``k`` entries of largest magnitude (over all of ``x``) and
    zero the rest; among equal magnitudes the earlier entries (C order) win,
    so exactly ``k`` entries are kept.  ``0 <= k <= x.size``; ``x`` must be
    finite.  The k-th largest magnitude is found with ``np.partition`` in
    every backend (O(n) expected, one temporary of x's size).
    """
    x = _checks.as_float_array(x)
    k = _checks.integer(k, "k", minimum=0, maximum=x.size)
    _checks.require_finite(x, "x")
    buffer = _checks.output_buffer(out, x)
    flat = x.reshape(-1)
    if k == 0:
        cutoff, n_ties = np.inf, 0
    else:
        # after the partition, the k entries from position size - k on are
        # the k largest magnitudes, the first of them the smallest
        magnitude = np.abs(flat)
        magnitude.partition(flat.size - k)
        cutoff = magnitude[flat.size - k]
        n_ties = k - int(np.count_nonzero(magnitude[flat.size - k + 1 :] > cutoff))
    kernels_for("prox", backend).keep_largest(
        flat, x.dtype.type(cutoff), n_ties, buffer.reshape(-1)
    )
    return _checks.deliver(out, buffer)


def project_l1_ball(x, radius, out=None, backend=None):
    """Euclidean projection onto ``{z : ||z||_1 <= radius}`` (over all of
    ``x``).  Inside the ball ``x`` is returned unchanged (copied to ``out``);
    outside it is soft-thresholded by the tau that puts it on the sphere.
    ``x`` must be finite.  O(n) expected in the compiled backends.

    Accurate to a few units of rounding of ``radius`` in x's dtype on every
    finite input, whatever the magnitudes (float32 entries of 1e38 and
    radius 1; float64 entries whose l1 norm overflows): when ``max|x| >
    radius`` the kernels project v = sign(x) * max((|x| - max|x|) + radius,
    0), whose projection is x's (soft thresholding by less than the
    projection's own threshold commutes with it) and whose entries are at
    most ``radius``, so that the threshold is not lost in the rounding of
    |x| - tau; that costs one temporary of x's size.  A vector whose l1 norm
    could overflow float64 is projected scaled by a power of two.
    """
    x = _checks.as_float_array(x)
    radius = _checks.scalar(radius, "radius", minimum=0.0)
    _checks.require_finite(x, "x")
    buffer = _checks.output_buffer(out, x)
    kernels = kernels_for("prox", backend)
    flat = x.reshape(-1)
    dtype = x.dtype.type
    largest = max(float(flat.max()), -float(flat.min())) if flat.size else 0.0
    if largest > radius:  # then ||x||_1 >= max|x| > radius: outside the ball
        shifted = np.abs(flat)
        shifted -= dtype(largest)  # exact for the entries within radius of it
        shifted += _checks.cast(radius, dtype)
        np.maximum(shifted, 0, out=shifted)
        flat = np.copysign(shifted, flat, out=shifted)
        largest = radius
    scale = 1.0
    if largest * flat.size > _FLOAT64_MAX / 4:  # ||x||_1 might overflow float64
        # log2(largest * size) without overflowing the product
        bits = math.log2(largest) + math.log2(flat.size) - math.log2(_FLOAT64_MAX)
        scale = 2.0 ** math.ceil(bits + 2)
        flat = flat / dtype(scale)
        radius /= scale
    tau = kernels.l1_ball_threshold(flat, radius)
    kernels.soft_threshold(flat, dtype(tau), dtype(scale), buffer.reshape(-1))
    return _checks.deliver(out, buffer)


def project_box(x, lower, upper, out=None, backend=None):
    """Euclidean projection onto the box ``lower <= z <= upper``: clipping.

    ``lower`` and ``upper`` are scalars or arrays broadcastable to
    ``x.shape`` (``-inf`` / ``inf`` leave a side open; ``lower=0`` and
    ``upper=inf`` is the non-negativity projection); ``lower <= upper``
    everywhere.
    """
    x = _checks.as_float_array(x)
    buffer = _checks.output_buffer(out, x)
    kernels = kernels_for("prox", backend)
    dtype = x.dtype.type
    if _checks.is_scalar(lower) and _checks.is_scalar(upper):
        lo = _checks.scalar(lower, "lower")
        hi = _checks.scalar(upper, "upper")
        if lo > hi:
            raise ValueError(f"lower must be <= upper, got lower={lo} > upper={hi}")
        kernels.clip(
            x.reshape(-1),
            _checks.cast(lo, dtype),
            _checks.cast(hi, dtype),
            buffer.reshape(-1),
        )
    else:
        lo = _checks.per_coordinate(lower, "lower", x.shape, x.dtype)
        hi = _checks.per_coordinate(upper, "upper", x.shape, x.dtype)
        if (lo > hi).any():
            raise ValueError("lower must be <= upper everywhere")
        kernels.clip_each(
            x.reshape(-1), lo.reshape(-1), hi.reshape(-1), buffer.reshape(-1)
        )
    return _checks.deliver(out, buffer)


def cumulative_l1(w, received, total, backend=None):
    """Apply the cumulative l1 penalty (Tsuruoka et al. 2009) to ``w`` in
    place, right after a gradient step, and update ``received``.

    A training loop keeps ``total``, the penalty any weight could have
    received so far, and calls this once per step::

        received = np.zeros_like(w)
        total = 0.0
        for step in ...:
            w -= eta * grad                 # the gradient step
            total += eta * C / n            # C: l1 strength, n: samples
            cumulative_l1(w, received, total)

    Each weight is pulled toward zero by the penalty it has not yet
    received and clipped at zero instead of crossing it (ALGORITHMS.md
    section 3), which makes weights exactly sparse.  ``w`` and ``received``
    are C-contiguous, writable arrays of one shape and dtype (float32 or
    float64); ``total`` is a finite number >= 0.  Returns ``w``.
    """
    w = _checks.inplace_array(w, "w")
    received = _checks.inplace_array(received, "received")
    if received.shape != w.shape or received.dtype != w.dtype:
        raise ValueError(
            f"received must have w's shape {w.shape} and dtype {w.dtype}, got "
            f"shape {received.shape} and dtype {received.dtype}"
        )
    if np.may_share_memory(w, received):
        raise ValueError("received must not share memory with w")
    total = _checks.scalar(total, "total", minimum=0.0, allow_inf=False)
    kernels_for("prox", backend).cumulative_l1(
        w.reshape(-1), received.reshape(-1), _checks.cast(total, w.dtype.type)
    )
    return w
