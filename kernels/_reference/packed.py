"""Deployment-matrix kernels: the NumPy reference and the "numpy" backend.

The specification the compiled backends (``kernels._numba.packed``, the
Cython module ``kernels._cy.packed``) match name for name and argument for
argument.  A deployment matrix (``kernels.packed.PackedMatrix``) is an
(m, n) matrix stored as small as its layout and value codec allow, for
inference on a board; products compute in float32.  ``kernels.packed``
validates everything first; a kernel trusts its arguments:

``meta``: int64 array of ``META_FIELDS`` entries, (layout, values, index,
m, n, count, bits, 0), the codes of ``kernels._codes``:

* ``layout`` LAYOUT_DENSE, LAYOUT_CSR, LAYOUT_DELTA or LAYOUT_BITMASK;
* ``values`` VALUES_FLOAT32, VALUES_FLOAT16, VALUES_INT8, VALUES_INT4 or
  VALUES_INT2;
* ``index``: CSR: bytes per column index (1, 2 or 4: ``structure`` is
  uint8, uint16 or int32); DELTA: bits per gap (4 or 8); else 0;
* ``count``: the stored entries (m * n for DENSE; the set bits for
  BITMASK; fillers included for DELTA);
* ``bits``: the quantisation's bits (2..8) for integer values, else 0
  (not needed by the products: the row scales carry the magnitude).

The stored entries of row i, in order, and the value index p of each
(p runs over the whole matrix, row after row):

* DENSE: every column j of the row, p = i * n + j; ``structure`` and
  ``indptr`` are empty.
* CSR: p in [indptr[i], indptr[i + 1]), column ``structure[p]``.
* DELTA: p in [indptr[i], indptr[i + 1]), column c_p = c_(p-1) + 1 +
  gap_p, starting from c = -1 at the row's start, gap_p the p-th gap of
  ``index`` bits in ``structure`` (4 bits: two per byte, gap 2k in the low
  nibble of byte k).  A gap longer than 2**bits - 1 is split by filler
  entries: gap 2**bits - 1 and value 0.
* BITMASK: row i owns the B = ceil(n / 8) bytes structure[i*B:(i+1)*B];
  column j is stored when bit (j % 8) of byte j // 8 is set (bits past n
  are 0); p counts the set bits of the rows before and of this row before
  j.  ``indptr`` is empty.

``indptr`` (CSR and DELTA): m + 1 int32 offsets, from 0 to count, never
decreasing (the model file stores them as uint16 where they fit).
Columns are in [0, n); within a row CSR columns may repeat (summed), DELTA
and BITMASK columns strictly increase.

Values, by code (``values`` array): FLOAT32 float32 values; FLOAT16 the
uint16 bit patterns of IEEE binary16 values; INT8 uint8 bytes holding
the two's-complement int8 values q; INT4 uint8 bytes holding two 4-bit
two's-complement q (value 2k in the low nibble of byte k); INT2 uint8
bytes holding four 2-bit two's-complement q (value 4k + t in bits 2t,
2t + 1 of byte k).  Integer values stand for scales[i] * q (``scales``: m
float32 values, one per row); float values for themselves (``scales`` is
empty).  Row sums are scaled once per row.

Products (x, y float32, C-contiguous; feature-major batches X (n, k),
Y (m, k)): y_i = alpha * row_i . x + beta * y_i, y not read when beta ==
0; the layer kernel writes Y = activation(A @ X + bias[:, None]) with a
code of ``kernels._codes``.  ``n_threads`` is accepted for the contract of
the sparse products and not used: the deployment kernels run on one
thread (they serve small models on small CPUs).

Cost model (ALGORITHMS.md section 6): a product reads the value bytes
(count * bits / 8), the structure (CSR: count * index bytes; DELTA: count
* bits / 8; BITMASK: m * ceil(n / 8); DENSE: none), indptr and scales
(m * 4 or 2 bytes each), x and writes y.
"""

import numpy as np

from kernels._codes import (
    VALUES_FLOAT16,
    VALUES_FLOAT32,
)
from kernels._packing import META_M, META_VALUES, decode_values, entries
from kernels._reference.sparse import _finish, _layer


def _product(meta, values, structure, indptr, scales, X):
    """A @ X in float64 (X 1-D or feature-major 2-D)."""
    m = int(meta[META_M])
    code = int(meta[META_VALUES])
    rows, cols = entries(meta, structure, indptr)
    v = decode_values(code, values, rows.size)
    contributions = v.reshape((-1,) + (1,) * (X.ndim - 1)) * X[cols]
    product = np.zeros((m,) + X.shape[1:])
    np.add.at(product, rows, contributions)
    if code not in (VALUES_FLOAT32, VALUES_FLOAT16):
        product *= scales.astype(np.float64).reshape((-1,) + (1,) * (X.ndim - 1))
    return product


def packed_matvec(
    meta, values, structure, indptr, scales, x, alpha, beta, y, n_threads
):
    """y = alpha * A @ x + beta * y for a deployment matrix A (m x n).

    O(count + m); moves the value bytes, the structure, indptr, scales, x
    and y (see the module's cost model).  Sums in float64 here; the
    compiled backends sum in float32, so results agree to rounding."""
    _finish(_product(meta, values, structure, indptr, scales, x), alpha, beta, y)


def packed_matmat(
    meta, values, structure, indptr, scales, X, alpha, beta, Y, n_threads
):
    """Y = alpha * A @ X + beta * Y for a feature-major batch X (n, k),
    Y (m, k).  O(count * k + m * k)."""
    _finish(_product(meta, values, structure, indptr, scales, X), alpha, beta, Y)


def packed_layer(
    meta, values, structure, indptr, scales, bias, X, activation, Y, n_threads
):
    """Y = activation(A @ X + bias[:, None]) for a deployment matrix A,
    feature-major X (n, k) and Y (m, k), float32: the product in float64,
    rounded once, then the activation (codes and formulas as the sparse
    layer kernels: relu max(v, 0), sigmoid 0.5 * tanh(v / 2) + 0.5)."""
    _layer(_product(meta, values, structure, indptr, scales, X), bias, activation, Y)
