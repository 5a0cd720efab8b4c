"""Fused gradient-update kernels, compiled with Numba.

Same names, arguments and semantics as ``kernels._reference.update`` (the
specification, with the input contract; the penalty codes are the
``PROX_*`` codes of ``kernels._codes``), for float32
and float64, computed in the dtype of ``w``.  One pass over the arrays, no
temporaries: each element of z = w - step * v is formed in a register and
goes straight through the prox.

The penalty is chosen once per call, outside the loops, so that every loop
is a plain elementwise loop that LLVM vectorises.  In place (``out`` is
``w``) the loops are the same inlined code called with ``out`` as ``w``
too: LLVM then sees one array, not two that might overlap, and vectorises
without the overlap test that would send ``out is w`` to the scalar loop
(see ``kernels._numba.prox``).
"""

from kernels._codes import PROX_CUMULATIVE_L1, PROX_HARD_THRESHOLD, PROX_SOFT_THRESHOLD
from kernels._numba._jit import kernel
from kernels._numba.prox import _same_buffer, _soft


@kernel(inline="always")
def _hard(z, cutoff):
    """z * (|z| > cutoff), as kernels._reference.prox.hard_threshold."""
    return z * type(z)(abs(z) > cutoff)


@kernel(inline="always")
def _cumulative(z, q, total):
    """Tsuruoka et al.'s clipped penalty of z, as kernels.cumulative_l1."""
    zero = type(total)(0)
    if z > zero:
        shrunk = z - (total + q)
        return zero if shrunk < zero else shrunk
    if z < zero:
        shrunk = z + (total - q)
        return zero if shrunk > zero else shrunk
    return z


@kernel(inline="always")
def _sgd_loops(w, g, step, penalty, threshold, scale, received, total, out):
    if penalty == PROX_SOFT_THRESHOLD:
        for i in range(w.size):
            out[i] = _soft(w[i] - step * g[i], threshold) * scale
    elif penalty == PROX_HARD_THRESHOLD:
        for i in range(w.size):
            out[i] = _hard(w[i] - step * g[i], threshold)
    elif penalty == PROX_CUMULATIVE_L1:
        for i in range(w.size):
            z = w[i] - step * g[i]
            v = _cumulative(z, received[i], total)
            received[i] += v - z
            out[i] = v
    else:
        for i in range(w.size):
            out[i] = w[i] - step * g[i]


@kernel(inline="always")
def _mixed_loops(w, g, s, mu, a, b, c, penalty, threshold, scale, received, total, out):
    if penalty == PROX_SOFT_THRESHOLD:
        for i in range(w.size):
            z = w[i] - (a * g[i] + b * s[i] + c * mu[i])
            out[i] = _soft(z, threshold) * scale
    elif penalty == PROX_HARD_THRESHOLD:
        for i in range(w.size):
            out[i] = _hard(w[i] - (a * g[i] + b * s[i] + c * mu[i]), threshold)
    elif penalty == PROX_CUMULATIVE_L1:
        for i in range(w.size):
            z = w[i] - (a * g[i] + b * s[i] + c * mu[i])
            v = _cumulative(z, received[i], total)
            received[i] += v - z
            out[i] = v
    else:
        for i in range(w.size):
            out[i] = w[i] - (a * g[i] + b * s[i] + c * mu[i])


@kernel
def sgd_step(w, g, step, penalty, threshold, scale, received, total, out):
    """out = prox(w - step * g).  O(n); moves 3 * n * itemsize bytes
    (+ 2 * n * itemsize for the cumulative penalty).
    Spec: kernels._reference.update."""
    if _same_buffer(w, out):
        _sgd_loops(out, g, step, penalty, threshold, scale, received, total, out)
    else:
        _sgd_loops(w, g, step, penalty, threshold, scale, received, total, out)


@kernel
def mixed_step(w, g, s, mu, a, b, c, penalty, threshold, scale, received, total, out):
    """out = prox(w - (a * g + b * s + c * mu)).  O(n); moves
    5 * n * itemsize bytes (+ 2 * n * itemsize for the cumulative penalty).
    Spec: kernels._reference.update."""
    if _same_buffer(w, out):
        _mixed_loops(
            out, g, s, mu, a, b, c, penalty, threshold, scale, received, total, out
        )
    else:
        _mixed_loops(
            w, g, s, mu, a, b, c, penalty, threshold, scale, received, total, out
        )
