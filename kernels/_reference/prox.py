"""Proximal-operator kernels: the NumPy reference and the "numpy" backend.

This module is the specification the compiled backends (``kernels._numba.prox``
and the Cython module ``kernels._cy.prox``) must match, name for name and
argument for argument.  A kernel trusts its inputs; ``kernels.prox`` validates
them first.  The contract every kernel here relies on:

* ``x`` and ``out`` are C-contiguous arrays of one floating dtype (float32 or
  float64), 1-D unless the name ends in ``_cols`` (then 2-D), of equal shape;
  ``out`` may be the same array as ``x`` (in-place operation).
* Scalar arguments (``threshold``, ``scale``, ``cutoff``, ...) are finite or
  +inf, non-negative where that makes sense, and already of ``x``'s dtype.
* Per-coordinate arrays (``threshold`` in ``soft_threshold_each``, ``lower``
  and ``upper`` in ``clip_each``) are C-contiguous, of ``x``'s shape and dtype.
* ``group_ptr`` is an int64 array of length ``n_groups + 1``, starting at 0,
  non-decreasing, ending at ``x.size``; ``thresholds`` has one entry per group,
  in ``x``'s dtype.

Cost model (ALGORITHMS.md section 6): every kernel here streams ``x`` once
and writes ``out`` once, so it moves ``2 * x.nbytes`` bytes (plus the
per-coordinate arrays it reads) and is memory bound on every CPU we target.
Group norms are accumulated in float64 whatever the dtype of ``x``.
"""

import numpy as np


def soft_threshold(x, threshold, scale, out):
    """out = scale * sign(x) * max(|x| - threshold, 0), scalar threshold.

    With ``scale == 1`` this is the prox of ``threshold * ||.||_1``; with
    ``scale = 1 / (1 + l2)`` it is the elastic-net prox.  ``-0.0`` and values
    inside the threshold become ``+-0.0`` (the sign of ``x`` is kept).
    O(n) time; moves 2 * n * itemsize bytes.
    """
    np.multiply(np.copysign(np.maximum(np.abs(x) - threshold, 0), x), scale, out=out)


def soft_threshold_each(x, threshold, scale, out):
    """As ``soft_threshold`` with one threshold per coordinate.

    O(n) time; moves 3 * n * itemsize bytes.
    """
    np.multiply(np.copysign(np.maximum(np.abs(x) - threshold, 0), x), scale, out=out)


def hard_threshold(x, cutoff, out):
    """out = x where |x| > cutoff, else 0 (the prox of the l0 penalty when
    cutoff = sqrt(2 * t)).  O(n) time; moves 2 * n * itemsize bytes."""
    np.multiply(x, np.abs(x) > cutoff, out=out)


def keep_largest(x, cutoff, n_ties, out):
    """Keep the entries with |x| > cutoff and the first ``n_ties`` entries
    (in index order) with |x| == cutoff; zero every other entry.

    ``keep_top_k`` finds ``cutoff`` (the k-th largest magnitude) and
    ``n_ties`` so that exactly k entries survive.  O(n) time.
    """
    magnitude = np.abs(x)
    keep = magnitude > cutoff
    ties = np.flatnonzero(magnitude == cutoff)[:n_ties]
    keep[ties] = True
    np.multiply(x, keep, out=out)


def _group_scale(norms, thresholds):
    """max(0, 1 - threshold / norm) per group, 0 for a zero norm."""
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = 1.0 - thresholds / norms
    factor[~(norms > 0)] = 0.0
    return np.maximum(factor, 0.0)


def group_shrink(x, l1, group_ptr, thresholds, out):
    """Sparse-group shrinkage over contiguous groups.

    For group g (entries group_ptr[g]:group_ptr[g+1]): y = soft threshold of
    x_g by ``l1`` (``l1 == 0`` leaves x_g unchanged), then
    out_g = y * max(0, 1 - thresholds[g] / ||y||_2)   (0 when ||y|| = 0).
    With ``l1 == 0`` this is the group-lasso prox.  Norms in float64.
    O(n) time; each group is read twice (from cache when it fits) and
    written once.
    """
    y = np.copysign(np.maximum(np.abs(x) - l1, 0), x)
    group_ptr = group_ptr.astype(np.intp, copy=False)  # for reduceat and repeat
    sizes = np.diff(group_ptr)
    nonempty = sizes > 0
    squares = np.square(y, dtype=np.float64)
    norms = np.zeros(sizes.size)
    norms[nonempty] = np.sqrt(np.add.reduceat(squares, group_ptr[:-1][nonempty]))
    factor = _group_scale(norms, thresholds.astype(np.float64))
    np.multiply(y, np.repeat(factor, sizes).astype(x.dtype), out=out)


def group_shrink_cols(x, l1, thresholds, out):
    """Sparse-group shrinkage where the groups are the columns of a 2-D
    C-contiguous ``x`` (m, n): removing a column removes one input of a
    layer.  ``thresholds`` has n entries.  Column norms in float64.
    O(m * n) time; reads x twice, row by row, and writes out once.
    """
    y = np.copysign(np.maximum(np.abs(x) - l1, 0), x)
    norms = np.sqrt(np.square(y, dtype=np.float64).sum(axis=0))
    factor = _group_scale(norms, thresholds.astype(np.float64))
    np.multiply(y, factor.astype(x.dtype), out=out)


def l1_ball_threshold(x, radius):
    """The threshold tau >= 0 with sum(max(|x| - tau, 0)) == radius, or 0.0
    when ||x||_1 <= radius already.  The projection of x on the l1 ball of
    the given radius is then ``soft_threshold(x, tau, 1, out)``.

    Sort-based (Duchi et al. 2008), O(n log n); the compiled backends may
    use Condat's O(n) expected algorithm.  Sums in float64.  Returns a
    Python float.
    """
    magnitude = np.abs(x).astype(np.float64)
    if magnitude.sum() <= radius:
        return 0.0
    u = np.sort(magnitude)[::-1]
    cumulative = np.cumsum(u) - radius
    ranks = np.arange(1, u.size + 1)
    # The largest entry always qualifies in exact arithmetic; rounding (a
    # radius below the spacing of u[0]) or radius 0 can hide it.
    candidates = np.flatnonzero(u * ranks > cumulative)
    rho = candidates[-1] if candidates.size else 0
    return float(max(cumulative[rho] / (rho + 1), 0.0))


def clip(x, lower, upper, out):
    """out = min(max(x, lower), upper), scalar bounds (lower <= upper).
    NaN in x stays NaN.  O(n) time; moves 2 * n * itemsize bytes."""
    np.clip(x, lower, upper, out=out)


def clip_each(x, lower, upper, out):
    """As ``clip`` with per-coordinate bounds.  Moves 4 * n * itemsize
    bytes."""
    np.clip(x, lower, upper, out=out)


def cumulative_l1(w, received, total):
    """The cumulative l1 penalty of Tsuruoka, Tsujii and Ananiadou (2009),
    applied in place after a gradient step (ALGORITHMS.md section 3).

    ``total`` is u, the penalty every weight could have received so far
    (the training loop adds step * C / n to it each step), a scalar of
    ``w``'s dtype; ``received`` is q, the signed penalty each weight has
    actually received, an array of ``w``'s shape and dtype.  With z = w:

        z > 0:  w <- max(0, z - (u + q))
        z < 0:  w <- min(0, z + (u - q))
        q <- q + (w - z)

    A weight is clipped at zero instead of crossing it, so weights become
    exactly zero and stay there until a gradient step moves them.
    O(n) time; reads and writes w and q once.
    """
    z = w.copy()
    positive = z > 0
    negative = z < 0
    w[positive] = np.maximum(0, z[positive] - (total + received[positive]))
    w[negative] = np.minimum(0, z[negative] + (total - received[negative]))
    received += w - z
