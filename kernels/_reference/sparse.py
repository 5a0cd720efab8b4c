"""Sparse matrix-vector kernels: the NumPy reference and the "numpy" backend.

The specification the compiled backends (``kernels._numba.sparse``, the
Cython module ``kernels._cy.sparse``) match name for name and argument for
argument.  ``kernels.sparse`` validates everything first; a kernel trusts:

* CSR structure: ``indptr`` (int32 or int64, length m + 1) starts at 0,
  never decreases and ends at nnz; every ``indices`` entry (int32 or int64
  for float matrices; uint8, uint16 or int32 for quantised ones) lies in
  [0, n).  Columns within a row may be unsorted or repeated: repeated
  entries are summed, as scipy.sparse does.
* BSR structure: the same over block rows, with ``data`` of shape
  (n_blocks, r, c) and block-column ``indices`` in [0, n / c).
* Vectors and batches are C-contiguous and of the values' dtype (float32
  or float64; a quantised matrix works in float32).  A batch is stored
  feature-major: ``X`` has shape (n, k) and ``Y`` shape (m, k), so that
  one non-zero a_ij updates the contiguous row Y[i, :] from X[j, :]; the
  public layer transposes (batch, features) arrays once per call.
* ``y`` / ``Y`` is written, never read, when ``beta == 0`` (no zero-fill
  pass): its previous content may be garbage or NaN.  ``y`` does not
  overlap ``x``.
* ``n_threads >= 1``; the compiled backends split rows over that many
  threads (the reference ignores it).
* A layer kernel (``csr_layer``, ``bsr_layer``, ``qcsr_layer``) computes
  Y = activation(A @ X + bias[:, None]): ``bias`` has m entries of Y's
  dtype and ``activation`` an activation code of ``kernels._codes`` (0
  identity, 1 relu, 2 tanh, 3 sigmoid), never a Python function.

Cost model (ALGORITHMS.md section 6): y = A x reads nnz * (value + index)
bytes, (m + 1) index bytes of ``indptr``, x (n values, from cache when it
fits) and writes m values: memory bound.  A batch of k columns reuses each
loaded non-zero k times.
"""

import numpy as np

from kernels._checks import row_ids
from kernels._codes import ACTIVATION_RELU as _RELU
from kernels._codes import ACTIVATION_SIGMOID as _SIGMOID
from kernels._codes import ACTIVATION_TANH as _TANH


def _finish(product, alpha, beta, y):
    """y = alpha * product + beta * y, with y not read when beta == 0."""
    if beta == 0:
        np.multiply(product, alpha, out=y, casting="unsafe")
    else:
        y *= beta
        y += (alpha * product).astype(y.dtype)


def _csr_product(data, indices, indptr, x, n_rows):
    """A @ x (x 1-D or feature-major 2-D) accumulated in float64."""
    contributions = data.astype(np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    contributions = contributions * x[indices.astype(np.intp)]
    product = np.zeros((n_rows,) + x.shape[1:])
    np.add.at(product, row_ids(indptr), contributions)
    return product


def _csr_transpose_product(data, indices, indptr, x, n_cols):
    """A.T @ x accumulated in float64."""
    contributions = data.astype(np.float64) * x[row_ids(indptr)]
    product = np.zeros(n_cols)
    np.add.at(product, indices.astype(np.intp), contributions)
    return product


def csr_matvec(data, indices, indptr, x, alpha, beta, y, n_threads):
    """y = alpha * A @ x + beta * y for A in CSR (m x n).

    O(nnz + m) time; moves nnz * (sv + si) + (m + 1) * si + m * sv bytes
    (plus x).  Sums in float64 here; compiled backends sum in the values'
    dtype with several accumulators, so float32 results agree to rounding.
    """
    _finish(_csr_product(data, indices, indptr, x, y.shape[0]), alpha, beta, y)


def csr_matvec_t(data, indices, indptr, x, alpha, beta, y):
    """y = alpha * A.T @ x + beta * y without forming the transpose
    (x has m entries, y has n).  A scatter over y; single-threaded.
    O(nnz + m + n) time."""
    _finish(
        _csr_transpose_product(data, indices, indptr, x, y.shape[0]), alpha, beta, y
    )


def csr_matmat(data, indices, indptr, X, alpha, beta, Y, n_threads):
    """Y = alpha * A @ X + beta * Y for a feature-major batch X (n, k),
    Y (m, k).  O(nnz * k) time; each non-zero is loaded once for k
    multiply-adds."""
    _finish(_csr_product(data, indices, indptr, X, Y.shape[0]), alpha, beta, Y)


def _bsr_as_csr(data, indices, indptr):
    """The entries of a BSR matrix as CSR arrays (explicit zeros kept)."""
    n_blocks, r, c = data.shape
    block_rows = row_ids(indptr)
    rows = (block_rows[:, None, None] * r + np.arange(r)[None, :, None]).repeat(c, 2)
    cols = indices.astype(np.intp)[:, None, None] * c + np.arange(c)[None, None, :]
    cols = cols.repeat(r, 1)
    order = np.argsort(rows.reshape(-1), kind="stable")
    row_of = rows.reshape(-1)[order]
    counts = np.bincount(row_of, minlength=(indptr.size - 1) * r)
    csr_indptr = np.concatenate([[0], np.cumsum(counts)])
    return data.reshape(-1)[order], cols.reshape(-1)[order], csr_indptr


def bsr_matvec(data, indices, indptr, x, alpha, beta, y, n_threads):
    """y = alpha * A @ x + beta * y for A in BSR with (r, c) blocks
    (``data`` of shape (n_blocks, r, c)).  O(n_blocks * r * c) time; the
    index traffic is one block-column index per r * c values."""
    csr_matvec(*_bsr_as_csr(data, indices, indptr), x, alpha, beta, y, n_threads)


def bsr_matvec_t(data, indices, indptr, x, alpha, beta, y):
    """y = alpha * A.T @ x + beta * y for A in BSR; single-threaded."""
    csr_matvec_t(*_bsr_as_csr(data, indices, indptr), x, alpha, beta, y)


def bsr_matmat(data, indices, indptr, X, alpha, beta, Y, n_threads):
    """Y = alpha * A @ X + beta * Y for A in BSR, feature-major X and Y."""
    csr_matmat(*_bsr_as_csr(data, indices, indptr), X, alpha, beta, Y, n_threads)


def qcsr_matvec(values, indices, indptr, scales, x, alpha, beta, y, n_threads):
    """y = alpha * diag(scales) @ Q @ x + beta * y for a quantised CSR
    matrix: int8 ``values`` Q, one float32 scale per row, float32 x and y.

    Row i is accumulated over its int8 values times x, then multiplied by
    scales[i] once.  Moves nnz * (1 + si) + (m + 1) * 4 + m * 4 bytes.
    """
    product = _csr_product(values, indices, indptr, x, y.shape[0])
    _finish(product * scales.astype(np.float64), alpha, beta, y)


def qcsr_matvec_t(values, indices, indptr, scales, x, alpha, beta, y):
    """y = alpha * Q.T @ diag(scales) @ x + beta * y; single-threaded."""
    scaled = x.astype(np.float64) * scales
    _finish(
        _csr_transpose_product(values, indices, indptr, scaled, y.shape[0]),
        alpha,
        beta,
        y,
    )


def qcsr_matmat(values, indices, indptr, scales, X, alpha, beta, Y, n_threads):
    """Y = alpha * diag(scales) @ Q @ X + beta * Y, feature-major X and Y."""
    product = _csr_product(values, indices, indptr, X, Y.shape[0])
    _finish(product * scales.astype(np.float64)[:, None], alpha, beta, Y)


def _layer(product, bias, activation, Y):
    """Y = activation(product + bias[:, None]): the sum in float64, rounded
    to Y's dtype once, then the activation in that dtype.  relu is
    np.maximum(v, 0) (NaN stays NaN); sigmoid is
    0.5 * tanh(v / 2) + 0.5, which never overflows."""
    _finish(product + bias.astype(np.float64)[:, None], 1.0, 0.0, Y)
    if activation == _RELU:
        np.maximum(Y, 0, out=Y)
    elif activation == _TANH:
        np.tanh(Y, out=Y)
    elif activation == _SIGMOID:
        np.multiply(Y, 0.5, out=Y)
        np.tanh(Y, out=Y)
        np.multiply(Y, 0.5, out=Y)
        np.add(Y, 0.5, out=Y)


def csr_layer(data, indices, indptr, bias, X, activation, Y, n_threads):
    """Y = activation(A @ X + bias[:, None]) for A in CSR (m x n), a
    feature-major batch X (n, k) and Y (m, k): one layer of a network, the
    product written once with its bias and activation applied.
    O(nnz * k + m * k); moves the bytes of csr_matmat plus m * sv of bias."""
    product = _csr_product(data, indices, indptr, X, Y.shape[0])
    _layer(product, bias, activation, Y)


def bsr_layer(data, indices, indptr, bias, X, activation, Y, n_threads):
    """Y = activation(A @ X + bias[:, None]) for A in BSR, feature-major X
    and Y.  O(n_blocks * r * c * k + m * k)."""
    product = _csr_product(*_bsr_as_csr(data, indices, indptr), X, Y.shape[0])
    _layer(product, bias, activation, Y)


def qcsr_layer(values, indices, indptr, scales, bias, X, activation, Y, n_threads):
    """Y = activation(diag(scales) @ Q @ X + bias[:, None]) for a quantised
    CSR matrix, feature-major X and Y, float32.  O(nnz * k + m * k)."""
    product = _csr_product(values, indices, indptr, X, Y.shape[0])
    _layer(product * scales.astype(np.float64)[:, None], bias, activation, Y)


def __getattr__(name):
    """The one-sample plans, ``MatvecPlan`` and ``MLPPlan``: part of every
    backend's sparse contract (kernels._reference.plans gives it), defined
    in kernels._reference.plans, which calls the kernels of this module."""
    if name in ("MatvecPlan", "MLPPlan"):
        from kernels._reference import plans

        return getattr(plans, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
