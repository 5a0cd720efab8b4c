"""The fused proximal gradient step (ALGORITHMS.md sections 2, 3 and 4).

``prox_gradient_step`` is the parameter update of every stochastic
proximal gradient method here (SGD, SVRG, SAGA, the lambda-estimator) for
any differentiable model: the solvers of linear models and the training of
an MLP, layer by layer, call it once per mini-batch and parameter array.
It forms the step direction and applies the prox in one pass over the
arrays, without temporaries; ``CumulativeL1`` carries the state of the
cumulative l1 penalty from one call to the next.
"""

import math

import numpy as np

from kernels import _checks
from kernels._backend import kernels_for
from kernels._codes import (
    PROX_CUMULATIVE_L1,
    PROX_HARD_THRESHOLD,
    PROX_NONE,
    PROX_SOFT_THRESHOLD,
)
from kernels._penalties import CUMULATIVE_L1, ELASTIC_NET, L0, L1, require

__all__ = ["prox_gradient_step", "CumulativeL1", "lambda_coefficients"]

# The element-wise penalties the fused step applies.
PENALTIES = (None, L1, ELASTIC_NET, L0, CUMULATIVE_L1)

# The unused ``received`` argument of the kernels, per dtype.
_NO_STATE = {dtype: np.empty(0, dtype) for dtype in _checks.FLOAT_DTYPES}


class CumulativeL1:
    """The state of the cumulative l1 penalty (Tsuruoka, Tsujii and
    Ananiadou 2009; ALGORITHMS.md section 3) of one parameter array.

    ``received`` (q) is the signed penalty each weight has actually
    received, an array of the parameters' shape and dtype; ``total`` (u) is
    the penalty any weight could have received so far, the sum of
    ``step * beta`` over the steps taken.  ``CumulativeL1(w)`` starts both
    at zero; pass the object as ``cumulative=`` to every
    ``prox_gradient_step(..., penalty="cumulative_l1")`` of that array,
    which updates both.  The same state works with
    ``kernels.cumulative_l1(w, state.received, state.total)`` after a
    gradient step of one's own, with the same result.
    """

    def __init__(self, w):
        w = np.asarray(w)
        dtype = _checks.result_dtype(w.dtype, "w")
        self.received = np.zeros(w.shape, dtype)
        self.total = 0.0

    def __repr__(self):
        return (
            f"CumulativeL1(received: {self.received.dtype} array of shape "
            f"{self.received.shape}, total={self.total!r})"
        )


def _gradient_term(value, name, w):
    """``value`` as an array the kernel can read next to ``w``: no
    conversion, since a copy of a gradient in a training loop is a hidden
    cost; the wrong dtype is a TypeError, the wrong shape or layout a
    ValueError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array of w's dtype {w.dtype}, got "
            f"{type(value).__name__}"
        )
    if value.dtype != w.dtype:
        raise TypeError(
            f"{name} must have w's dtype {w.dtype}, got dtype {value.dtype}"
        )
    if value.shape != w.shape:
        raise ValueError(f"{name} must have w's shape {w.shape}, got {value.shape}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return value


def lambda_coefficients(lam):
    """(cg, cs, cm) with v = cg * g + cs * s + cm * mu: the step direction of
    the lambda-estimator (ALGORITHMS.md section 2) for ``lam`` in [0, 1];
    ``lam=None`` is the textbook SVRG / SAGA direction g - s + mu.

    * ``lam <= 1/2``, the unbiased branch: v = (1 - lam) g - lam (s - mu),
      (1 - lam, -lam, lam); lam = 0 is SGD, lam = 1/2 half the SVRG
      direction.
    * ``lam > 1/2``, the biased branch: v = (1 - lam) (g - s) + lam mu,
      (1 - lam, lam - 1, lam).

    At a solution (x = snapshot, mu exact) v = max(cg, cm) * grad f: the
    solvers of ``kernels.solvers`` give the prox the step max(cg, cm) *
    step, so that, with a penalty, the lambda-estimator converges to the
    solution of the stated problem and not of the one with the penalty
    scaled by 1 / (1 - lam) or 1 / lam.  lam = 1/2 is then exactly SVRG
    with half the step."""
    if lam is None:
        return 1.0, -1.0, 1.0
    lam = _checks.scalar(lam, "lam", minimum=0.0, allow_inf=False)
    if lam > 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if lam <= 0.5:
        return 1.0 - lam, -lam, lam
    return 1.0 - lam, lam - 1.0, lam


def _penalty(penalty, beta, l2, cumulative, step, w):
    """(code, threshold, scale, received, total) for the kernel; the new
    total of a cumulative penalty is stored only once the kernel ran."""
    require(penalty, PENALTIES)
    beta = _checks.scalar(beta, "beta", minimum=0.0, allow_inf=False)
    l2 = _checks.scalar(l2, "l2", minimum=0.0, allow_inf=False)
    if penalty is None and beta != 0.0:
        raise ValueError(f"beta={beta} needs a penalty, got penalty=None")
    if penalty != ELASTIC_NET and l2 != 0.0:
        raise ValueError(
            f"l2 applies to penalty='elastic_net' only (beta=0 for a pure "
            f"ridge prox), got penalty={penalty!r}"
        )
    if penalty != CUMULATIVE_L1 and cumulative is not None:
        raise ValueError(
            f"cumulative is the state of penalty='cumulative_l1', "
            f"got penalty={penalty!r}"
        )
    no_state = _NO_STATE[w.dtype]
    t = step * beta
    if penalty == L1:
        return PROX_SOFT_THRESHOLD, t, 1.0, no_state, 0.0
    if penalty == ELASTIC_NET:
        return PROX_SOFT_THRESHOLD, t, 1.0 / (1.0 + step * l2), no_state, 0.0
    if penalty == L0:
        return PROX_HARD_THRESHOLD, math.sqrt(2.0 * t), 1.0, no_state, 0.0
    if penalty == CUMULATIVE_L1:
        if not isinstance(cumulative, CumulativeL1):
            raise TypeError(
                "penalty='cumulative_l1' needs cumulative=kernels.CumulativeL1(w), "
                f"got {type(cumulative).__name__}"
            )
        received = _checks.inplace_array(cumulative.received, "cumulative.received")
        if received.shape != w.shape or received.dtype != w.dtype:
            raise ValueError(
                f"cumulative.received must have w's shape {w.shape} and dtype "
                f"{w.dtype}, got shape {received.shape} and dtype {received.dtype}"
            )
        total = _checks.scalar(
            cumulative.total, "cumulative.total", minimum=0.0, allow_inf=False
        )
        return PROX_CUMULATIVE_L1, 0.0, 1.0, received, total + t
    return PROX_NONE, 0.0, 1.0, no_state, 0.0


def prox_gradient_step(
    w,
    g,
    s=None,
    mu=None,
    *,
    step,
    lam=None,
    penalty=None,
    beta=0.0,
    l2=0.0,
    cumulative=None,
    out=None,
    backend=None,
):
    """One proximal stochastic gradient step, fused:
    ``out = prox_{step * h}(w - step * v)``.

    Named after what it computes, the proximal gradient step, whatever the
    estimator of the gradient: ``v`` is chosen by which terms are given.

    * ``s`` and ``mu`` None: SGD, ``v = g``.
    * ``lam`` None: SVRG (Johnson & Zhang 2013), ``v = g - s + mu``.
    * ``0 <= lam <= 1/2``: the lambda-estimator's unbiased branch
      (``lambda_coefficients``),
      ``v = (1 - lam) * g - lam * (s - mu)``; lam = 0 is SGD, lam = 1/2
      half the SVRG direction.
    * ``1/2 < lam <= 1``: its biased branch,
      ``v = (1 - lam) * (g - s) + lam * mu`` (lam = 1 ignores g).

    ``g`` is the mini-batch gradient at ``w``, ``s`` the gradient of the
    same mini-batch at the snapshot point, ``mu`` the snapshot's full (or
    large-batch) mean gradient; for SAGA, ``s`` is the table's entries for
    the mini-batch and ``mu`` the table's mean.  The kernel computes
    ``v = a * g + b * s + c * mu`` with the coefficients above times
    ``step``, in the dtype of ``w``.

    ``h``, the penalty, with strength ``beta >= 0``:

    * None: no prox (``beta`` must be 0).
    * ``"l1"``: ``beta * ||w||_1``, soft thresholding by ``step * beta``
      (``kernels.prox_l1``).
    * ``"elastic_net"``: ``beta * ||w||_1 + (l2 / 2) * ||w||^2``, soft
      thresholding then division by ``1 + step * l2``
      (``kernels.prox_elastic_net``); ``l2`` is used by this penalty only.
    * ``"l0"``: ``beta * ||w||_0``, hard thresholding at
      ``sqrt(2 * step * beta)`` (``kernels.prox_l0``).
    * ``"cumulative_l1"``: the cumulative l1 penalty of Tsuruoka et al.
      (ALGORITHMS.md section 3), which clips weights at zero: pass the
      state ``cumulative=kernels.CumulativeL1(w)``; each call adds
      ``step * beta`` to ``cumulative.total`` and updates
      ``cumulative.received`` in place, exactly as
      ``w -= step * v; kernels.cumulative_l1(w, received, total)`` would.

    Arrays: ``w`` of any shape (a bias vector, a weight matrix), float32 or
    float64 (other real dtypes are converted as in ``kernels.prox``);
    ``g``, ``s`` and ``mu`` NumPy arrays of ``w``'s shape and dtype,
    C-contiguous (they are never copied or converted: a mismatch is an
    error).  ``out=w`` updates in place, as a training loop does;
    ``out=None`` returns a new array; any other ``out`` is a writable array
    of ``w``'s shape and dtype.  ``step`` is a finite number >= 0, ``lam``
    in [0, 1].  ``backend`` is "cython", "numba" or "numpy" (None: the
    current default).

    Cost: O(n) for n = w.size, one pass; moves 5 * n * itemsize bytes
    (read w, g, s, mu; write out), 3 * n * itemsize for SGD, + 2 * n *
    itemsize for the cumulative penalty's state.  Returns the result
    (``out`` when given).
    """
    w = _checks.as_float_array(w, "w")
    g = _gradient_term(g, "g", w)
    if (s is None) != (mu is None):
        raise ValueError(
            "s and mu go together (both None for SGD), got "
            f"s={'None' if s is None else 'an array'}, "
            f"mu={'None' if mu is None else 'an array'}"
        )
    snapshot = s is not None
    if snapshot:
        s = _gradient_term(s, "s", w)
        mu = _gradient_term(mu, "mu", w)
    step = _checks.scalar(step, "step", minimum=0.0, allow_inf=False)
    coefficients = lambda_coefficients(lam)
    if lam is not None and not snapshot:
        raise ValueError("lam needs the snapshot terms s and mu, got s=None")
    code, threshold, scale, received, total = _penalty(
        penalty, beta, l2, cumulative, step, w
    )
    terms = (g, s, mu) if snapshot else (g,)
    if received.size:
        for name, array in (("w", w), ("g", g), ("s", s), ("mu", mu), ("out", out)):
            if isinstance(array, np.ndarray) and np.may_share_memory(received, array):
                raise ValueError(
                    f"cumulative.received must not share memory with {name}"
                )
    buffer = _checks.output_buffer(out, w)
    if any(np.may_share_memory(buffer, term) for term in terms):
        buffer = np.empty_like(w)  # written, then copied into out
    kernels = kernels_for("update", backend)
    dtype = w.dtype.type
    flat = (w.reshape(-1), *(term.reshape(-1) for term in terms))
    prox_args = (
        code,
        _checks.cast(threshold, dtype),
        dtype(scale),
        received.reshape(-1),
        _checks.cast(total, dtype),
        buffer.reshape(-1),
    )
    if snapshot:
        a, b, c = (_checks.cast(step * k, dtype) for k in coefficients)
        kernels.mixed_step(*flat, a, b, c, *prox_args)
    else:
        kernels.sgd_step(*flat, _checks.cast(step, dtype), *prox_args)
    if code == PROX_CUMULATIVE_L1:
        cumulative.total = total
    return _checks.deliver(out, buffer)
