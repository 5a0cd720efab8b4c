"""Fused gradient-update kernels: the NumPy reference and the "numpy" backend.

One kernel call is one step ``w <- prox_{step h}(w - step * v)`` of a
stochastic proximal gradient method (ALGORITHMS.md section 2), where the
direction ``v`` is a linear combination of at most three gradient terms.
``kernels.update`` turns its estimator (SGD, SVRG, the lambda-estimator)
and its penalty into the arguments below; the kernels only see numbers.

The contract the compiled backends (``kernels._numba.update``,
``kernels._cy.update``) implement, name for name and argument for argument,
and that every kernel here trusts:

* ``w``, ``g``, ``s``, ``mu`` and ``out`` are C-contiguous 1-D arrays of one
  floating dtype (float32 or float64) and one length; ``out`` may be ``w``
  (in place) and shares memory with nothing else.
* ``step`` and the coefficients ``a``, ``b``, ``c`` (already multiplied by
  the step size), ``threshold``, ``scale`` and ``total`` are finite scalars
  of that dtype.
* ``penalty`` is one of the ``PROX_*`` codes of ``kernels._codes``.
  ``received`` has ``w``'s length when ``penalty == PROX_CUMULATIVE_L1``,
  shares memory with no other argument, and is updated in place; for the
  other penalties it is any array of the dtype (an empty one) and is not
  touched.

The proximal step, by code, with z = w - step * v:

* ``PROX_NONE``:    out = z.
* ``PROX_SOFT_THRESHOLD``: out = scale * sign(z) * max(|z| - threshold, 0)
  (``kernels._reference.prox.soft_threshold``: l1 with scale 1, the
  elastic net with scale 1 / (1 + step * l2)).
* ``PROX_HARD_THRESHOLD``: out = z * (|z| > threshold) (``hard_threshold``: the
  l0 prox with threshold sqrt(2 * step * beta)).
* ``PROX_CUMULATIVE_L1``: the cumulative l1 penalty of Tsuruoka et al. (2009)
  with running total ``total`` (``kernels._reference.prox.cumulative_l1``).

Cost model (ALGORITHMS.md section 6): every kernel streams each array once,
so it moves ``(k + 1) * n * itemsize`` bytes for k input arrays read
(w, g for SGD; w, g, s, mu otherwise) and ``out`` written, plus
``2 * n * itemsize`` for ``received`` under the cumulative penalty.  This
reference builds z in a temporary; the compiled kernels make one pass and
allocate nothing.
"""

from kernels._codes import PROX_CUMULATIVE_L1, PROX_HARD_THRESHOLD, PROX_SOFT_THRESHOLD
from kernels._reference import prox


def _apply_prox(z, penalty, threshold, scale, received, total, out):
    """out = prox(z) for penalty code ``penalty``; may overwrite z."""
    if penalty == PROX_SOFT_THRESHOLD:
        prox.soft_threshold(z, threshold, scale, out)
    elif penalty == PROX_HARD_THRESHOLD:
        prox.hard_threshold(z, threshold, out)
    elif penalty == PROX_CUMULATIVE_L1:
        prox.cumulative_l1(z, received, total)
        out[...] = z
    else:
        out[...] = z


def sgd_step(w, g, step, penalty, threshold, scale, received, total, out):
    """out = prox(w - step * g): a proximal SGD step with gradient g.

    O(n) time; moves 3 * n * itemsize bytes (read w and g, write out),
    + 2 * n * itemsize with the cumulative penalty.
    """
    z = w - step * g
    _apply_prox(z, penalty, threshold, scale, received, total, out)


def mixed_step(w, g, s, mu, a, b, c, penalty, threshold, scale, received, total, out):
    """out = prox(w - (a * g + b * s + c * mu)): a proximal step along a
    linear combination of three gradient terms, summed in this order.

    With a, b, c equal to step times (1, -1, 1) this is a Prox-SVRG step
    (g, s: the mini-batch gradient at w and at the snapshot, mu: the
    snapshot's mean gradient); the lambda-estimator uses (1 - lam, -lam,
    lam) or (1 - lam, lam - 1, lam).  O(n) time; moves 5 * n * itemsize
    bytes (read w, g, s and mu, write out), + 2 * n * itemsize with the
    cumulative penalty.
    """
    z = w - (a * g + b * s + c * mu)
    _apply_prox(z, penalty, threshold, scale, received, total, out)
