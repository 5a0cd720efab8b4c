"""Sparse matrix products, compiled with Numba.

Same names, arguments and semantics as ``kernels._reference.sparse`` (the
specification, with the input contract these kernels trust): CSR, BSR and
quantised CSR (int8 values, one float32 scale per row) times a vector, the
transpose times a vector, and times a feature-major batch.  Values are
float32 or float64 and every sum stays in that dtype (a quantised matrix
works in float32): ``alpha`` and ``beta`` are cast to it once, so a float32
product never goes through float64.

How the loops are written, and why:

* Hot-loop indices are made unsigned (``np.uintp``) before they index an
  array.  For a signed index Numba adds a negative-index wraparound (a
  compare and a select per access); the contract guarantees indices in
  range, and without the wraparound the CSR inner loop is one load of the
  column, one of the value and a fused multiply-add from x per non-zero.
* A row's dot product runs four independent accumulators over the row
  (unrolled by 4), so consecutive multiply-adds do not wait on each other's
  latency.  Summation order therefore differs from a plain loop and from
  scipy: results agree to rounding.  A batch row instead accumulates four
  non-zeros per pass over its k-long scratch, which LLVM vectorises.
* ``fastmath={"contract"}`` lets LLVM fuse a multiply and an add into one
  FMA (one rounding instead of two).  It reorders nothing and keeps NaN and
  inf semantics.
* ``y`` is written, never read, when ``beta == 0``.
* The kernels that take ``n_threads`` are Python functions.  With
  ``n_threads == 1`` they call a compiled kernel over all rows; otherwise a
  ``parallel=True`` one that splits the rows into one contiguous range per
  thread, balanced by non-zeros plus rows, each range one ``prange``
  iteration, with Numba's thread count set for that call and restored
  after it.  Both run the same compiled row-range kernel.  Whether a
  product is large enough to be worth threads is the caller's decision
  (``kernels.sparse``).  The transposed products scatter into y and are
  serial.
"""

import numba
import numpy as np
from numba import prange

from kernels._codes import ACTIVATION_RELU as _RELU
from kernels._codes import ACTIVATION_SIGMOID as _SIGMOID
from kernels._codes import ACTIVATION_TANH as _TANH
from kernels._numba._jit import kernel

_FAST = {"fastmath": {"contract"}}


def _run_parallel(parallel_kernel, n_threads, args):
    """parallel_kernel(*args, threads), threads = min(n_threads, Numba's
    pool size), with Numba's thread count (a setting of the calling thread)
    set to ``threads`` for the call, then restored.

    Done here rather than in the compiled kernel: ``numba.set_num_threads``
    in compiled code embeds a ctypes pointer, which Numba cannot cache.
    """
    threads = min(n_threads, numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    if previous == threads:
        parallel_kernel(*args, threads)
        return
    numba.set_num_threads(threads)
    try:
        parallel_kernel(*args, threads)
    finally:
        numba.set_num_threads(previous)


# Shared pieces -----------------------------------------------------------
# Inlined into their callers by Numba (``inline="always"``): Numba does not
# let LLVM inline one compiled kernel into another, and a call per row, with
# its arrays passed member by member and reference-counted, costs as much as
# a short row.  Inlined code takes the caller's fastmath flags.


@kernel(inline="always")
def _cast(alpha, beta, like):
    """alpha and beta in the dtype of the array ``like``."""
    real = like.dtype.type
    return real(alpha), real(beta)


@kernel(inline="always")
def _store(y, i, value, alpha, beta):
    """y[i] = alpha * value + beta * y[i], y[i] not read when beta == 0."""
    if beta == 0:
        y[i] = alpha * value
    else:
        y[i] = alpha * value + beta * y[i]


@kernel(inline="always")
def _store_row(Y, i, acc, alpha, beta):
    """Y[i, :] = alpha * acc + beta * Y[i, :], Y not read when beta == 0."""
    row = Y[i]
    if beta == 0:
        for c in range(acc.size):
            row[c] = alpha * acc[c]
    else:
        for c in range(acc.size):
            row[c] = alpha * acc[c] + beta * row[c]


@kernel(inline="always")
def _scale_in_place(y, beta):
    """y = beta * y before a scatter, y not read when beta == 0."""
    if beta == 0:
        y[:] = 0
    elif beta != 1:
        for i in range(y.size):
            y[i] *= beta


@kernel(inline="always")
def _row_dot(data, indices, start, stop, x):
    """sum(data[j] * x[indices[j]] for j in [start, stop)) in x's dtype, with
    four accumulators."""
    real = x.dtype.type
    zero = real(0)
    a0 = a1 = a2 = a3 = zero
    j = start
    while j + 3 < stop:
        j0 = np.uintp(j)
        j1 = np.uintp(j + 1)
        j2 = np.uintp(j + 2)
        j3 = np.uintp(j + 3)
        a0 += real(data[j0]) * x[np.uintp(indices[j0])]
        a1 += real(data[j1]) * x[np.uintp(indices[j1])]
        a2 += real(data[j2]) * x[np.uintp(indices[j2])]
        a3 += real(data[j3]) * x[np.uintp(indices[j3])]
        j += 4
    while j < stop:
        j0 = np.uintp(j)
        a0 += real(data[j0]) * x[np.uintp(indices[j0])]
        j += 1
    return (a0 + a1) + (a2 + a3)


@kernel(inline="always")
def _row_axpy(data, indices, start, stop, X, acc):
    """acc += sum(data[j] * X[indices[j], :] for j in [start, stop)), four
    non-zeros per pass over acc (a quarter of the loads and stores of acc)."""
    real = acc.dtype.type
    j = start
    while j + 3 < stop:
        j0 = np.uintp(j)
        j1 = np.uintp(j + 1)
        j2 = np.uintp(j + 2)
        j3 = np.uintp(j + 3)
        v0 = real(data[j0])
        v1 = real(data[j1])
        v2 = real(data[j2])
        v3 = real(data[j3])
        x0 = X[np.uintp(indices[j0])]
        x1 = X[np.uintp(indices[j1])]
        x2 = X[np.uintp(indices[j2])]
        x3 = X[np.uintp(indices[j3])]
        for c in range(acc.size):
            acc[c] += (v0 * x0[c] + v1 * x1[c]) + (v2 * x2[c] + v3 * x3[c])
        j += 4
    while j < stop:
        j0 = np.uintp(j)
        v = real(data[j0])
        xj = X[np.uintp(indices[j0])]
        for c in range(acc.size):
            acc[c] += v * xj[c]
        j += 1


@kernel
def _split_rows(indptr, per_entry, per_row, n_parts):
    """Boundaries (n_parts + 1 of them) of contiguous row ranges of about equal
    cost, row range [0, i) costing indptr[i] * per_entry + i * per_row."""
    n_rows = indptr.size - 1
    total = np.int64(indptr[n_rows]) * per_entry + n_rows * per_row
    bounds = np.empty(n_parts + 1, dtype=np.int64)
    bounds[0] = 0
    for t in range(1, n_parts):
        target = total * t // n_parts
        lo = bounds[t - 1]
        hi = n_rows
        while lo < hi:  # the first row whose prefix cost reaches target
            mid = (lo + hi) // 2
            if np.int64(indptr[mid]) * per_entry + mid * per_row < target:
                lo = mid + 1
            else:
                hi = mid
        bounds[t] = lo
    bounds[n_parts] = n_rows
    return bounds


# CSR ---------------------------------------------------------------------


@kernel(**_FAST)
def _csr_matvec_rows(data, indices, indptr, x, alpha, beta, y, first, last):
    """Rows [first, last) of csr_matvec: the serial kernel, and one thread's
    share of the parallel one."""
    a, b = _cast(alpha, beta, y)
    for i in range(first, last):
        _store(y, i, _row_dot(data, indices, indptr[i], indptr[i + 1], x), a, b)


@kernel(parallel=True)
def _csr_matvec_parallel(data, indices, indptr, x, alpha, beta, y, n_threads):
    bounds = _split_rows(indptr, 1, 1, n_threads)
    for t in prange(n_threads):
        first, last = bounds[t], bounds[t + 1]
        _csr_matvec_rows(data, indices, indptr, x, alpha, beta, y, first, last)


def csr_matvec(data, indices, indptr, x, alpha, beta, y, n_threads):
    """y = alpha * A @ x + beta * y for A in CSR (m x n).

    O(nnz + m); moves nnz * (sv + si) + (m + 1) * si + m * sv bytes, plus x
    (from cache when it fits).  Spec: kernels._reference.sparse.
    """
    if n_threads > 1:
        args = (data, indices, indptr, x, alpha, beta, y)
        _run_parallel(_csr_matvec_parallel, n_threads, args)
    else:
        _csr_matvec_rows(data, indices, indptr, x, alpha, beta, y, 0, y.size)


@kernel(**_FAST)
def csr_matvec_t(data, indices, indptr, x, alpha, beta, y):
    """y = alpha * A.T @ x + beta * y, a scatter over y (x has m entries, y has
    n); single-threaded.  O(nnz + m + n); moves nnz * (sv + si) +
    (m + 1) * si + m * sv bytes, and y (n values) read and written once
    besides its scattered updates.  Spec: kernels._reference.sparse."""
    a, b = _cast(alpha, beta, y)
    real = y.dtype.type
    _scale_in_place(y, b)
    for i in range(indptr.size - 1):
        xi = a * x[i]
        for j in range(np.uintp(indptr[i]), np.uintp(indptr[i + 1])):
            y[np.uintp(indices[j])] += real(data[j]) * xi


@kernel(**_FAST)
def _csr_matmat_rows(data, indices, indptr, X, alpha, beta, Y, first, last):
    """Rows [first, last) of csr_matmat."""
    a, b = _cast(alpha, beta, Y)
    acc = np.empty(Y.shape[1], dtype=Y.dtype)
    for i in range(first, last):
        acc[:] = 0
        _row_axpy(data, indices, indptr[i], indptr[i + 1], X, acc)
        _store_row(Y, i, acc, a, b)


@kernel(parallel=True)
def _csr_matmat_parallel(data, indices, indptr, X, alpha, beta, Y, n_threads):
    bounds = _split_rows(indptr, 1, 1, n_threads)
    for t in prange(n_threads):
        first, last = bounds[t], bounds[t + 1]
        _csr_matmat_rows(data, indices, indptr, X, alpha, beta, Y, first, last)


def csr_matmat(data, indices, indptr, X, alpha, beta, Y, n_threads):
    """Y = alpha * A @ X + beta * Y for a feature-major batch X (n, k), Y (m, k):
    row i of Y gathers the rows X[j, :] of its non-zeros.

    O(nnz * k + m * k); each non-zero is loaded once for k multiply-adds;
    moves nnz * (sv + si) + (m + 1) * si + m * k * sv bytes, plus X.
    Spec: kernels._reference.sparse.
    """
    if Y.shape[1] == 1:  # the matvec loop: no vector loop set up per non-zero
        x, y = X.reshape(-1), Y.reshape(-1)
        csr_matvec(data, indices, indptr, x, alpha, beta, y, n_threads)
        return
    if n_threads > 1:
        args = (data, indices, indptr, X, alpha, beta, Y)
        _run_parallel(_csr_matmat_parallel, n_threads, args)
    else:
        _csr_matmat_rows(data, indices, indptr, X, alpha, beta, Y, 0, Y.shape[0])


# BSR ---------------------------------------------------------------------

# A block row is multiplied a tile of its blocks at a time, in r passes (pass
# rr takes row rr of every block of the tile): a pass runs four blocks side
# by side, one accumulator each, in one loop over the c columns, and the
# tile's values, at most _TILE of them, stay in L1 for the r passes.
_TILE = 2048


@kernel(**_FAST)
def _bsr_matvec_rows(data, indices, indptr, x, alpha, beta, y, first, last):
    """Block rows [first, last) of bsr_matvec."""
    a, b = _cast(alpha, beta, y)
    n_blocks, r, c = data.shape
    values = data.reshape(n_blocks * r * c)
    zero = y.dtype.type(0)
    step = r * c
    tile = max(1, _TILE // max(1, step))
    sums = np.empty(r, dtype=y.dtype)
    for row in range(first, last):
        sums[:] = 0
        for tile_start in range(indptr[row], indptr[row + 1], tile):
            tile_stop = min(tile_start + tile, indptr[row + 1])
            for rr in range(r):
                s0 = s1 = s2 = s3 = zero
                blk = tile_start
                while blk + 3 < tile_stop:
                    at0 = blk * step + rr * c
                    at1 = at0 + step
                    at2 = at1 + step
                    at3 = at2 + step
                    col0 = indices[blk] * c
                    col1 = indices[blk + 1] * c
                    col2 = indices[blk + 2] * c
                    col3 = indices[blk + 3] * c
                    for cc in range(c):
                        s0 += values[np.uintp(at0 + cc)] * x[np.uintp(col0 + cc)]
                        s1 += values[np.uintp(at1 + cc)] * x[np.uintp(col1 + cc)]
                        s2 += values[np.uintp(at2 + cc)] * x[np.uintp(col2 + cc)]
                        s3 += values[np.uintp(at3 + cc)] * x[np.uintp(col3 + cc)]
                    blk += 4
                while blk < tile_stop:
                    at0 = blk * step + rr * c
                    col0 = indices[blk] * c
                    for cc in range(c):
                        s0 += values[np.uintp(at0 + cc)] * x[np.uintp(col0 + cc)]
                    blk += 1
                sums[rr] += (s0 + s1) + (s2 + s3)
        for rr in range(r):
            _store(y, row * r + rr, sums[rr], a, b)


@kernel(parallel=True)
def _bsr_matvec_parallel(data, indices, indptr, x, alpha, beta, y, n_threads):
    _, r, c = data.shape
    bounds = _split_rows(indptr, r * c, r, n_threads)
    for t in prange(n_threads):
        first, last = bounds[t], bounds[t + 1]
        _bsr_matvec_rows(data, indices, indptr, x, alpha, beta, y, first, last)


def bsr_matvec(data, indices, indptr, x, alpha, beta, y, n_threads):
    """y = alpha * A @ x + beta * y for A in BSR with (r, c) blocks
    (``data`` of shape (n_blocks, r, c), C-contiguous).

    O(n_blocks * r * c + m); moves n_blocks * (r * c * sv + si) +
    (m / r + 1) * si + m * sv bytes, plus x.  Spec: kernels._reference.sparse.
    """
    if data.shape[1] == data.shape[2] == 1:  # 1 x 1 blocks: a CSR matrix
        csr_matvec(data.reshape(-1), indices, indptr, x, alpha, beta, y, n_threads)
        return
    if n_threads > 1:
        args = (data, indices, indptr, x, alpha, beta, y)
        _run_parallel(_bsr_matvec_parallel, n_threads, args)
    else:
        n_rows = indptr.size - 1
        _bsr_matvec_rows(data, indices, indptr, x, alpha, beta, y, 0, n_rows)


@kernel(**_FAST)
def bsr_matvec_t(data, indices, indptr, x, alpha, beta, y):
    """y = alpha * A.T @ x + beta * y for A in BSR, a scatter over y;
    single-threaded.  O(n_blocks * r * c + m + n); moves the matrix once,
    x once and y (n values) read and written once besides its scattered
    updates.  Spec: kernels._reference.sparse."""
    _, r, c = data.shape
    a, b = _cast(alpha, beta, y)
    _scale_in_place(y, b)
    xs = np.empty(r, dtype=y.dtype)
    for row in range(indptr.size - 1):
        for rr in range(r):
            xs[rr] = a * x[row * r + rr]
        for blk in range(indptr[row], indptr[row + 1]):
            column = indices[blk] * c
            block = data[blk]
            for cc in range(c):
                total = y[np.uintp(column + cc)]
                for rr in range(r):
                    total += block[rr, cc] * xs[rr]
                y[np.uintp(column + cc)] = total


@kernel(**_FAST)
def _bsr_matmat_rows(data, indices, indptr, X, alpha, beta, Y, first, last):
    """Block rows [first, last) of bsr_matmat: a block row of Y accumulates
    block @ X[block columns] in an (r, k) scratch, four columns of a block
    per pass over the scratch row."""
    a, b = _cast(alpha, beta, Y)
    _, r, c = data.shape
    acc = np.empty((r, Y.shape[1]), dtype=Y.dtype)
    for row in range(first, last):
        acc[:] = 0
        for blk in range(indptr[row], indptr[row + 1]):
            block = data[blk]
            column = indices[blk] * c
            for rr in range(r):
                target = acc[rr]
                cc = 0
                while cc + 3 < c:
                    x0 = X[np.uintp(column + cc)]
                    x1 = X[np.uintp(column + cc + 1)]
                    x2 = X[np.uintp(column + cc + 2)]
                    x3 = X[np.uintp(column + cc + 3)]
                    v0 = block[rr, cc]
                    v1 = block[rr, cc + 1]
                    v2 = block[rr, cc + 2]
                    v3 = block[rr, cc + 3]
                    for k in range(target.size):
                        target[k] += (v0 * x0[k] + v1 * x1[k]) + (
                            v2 * x2[k] + v3 * x3[k]
                        )
                    cc += 4
                while cc < c:
                    xj = X[np.uintp(column + cc)]
                    v = block[rr, cc]
                    for k in range(target.size):
                        target[k] += v * xj[k]
                    cc += 1
        for rr in range(r):
            _store_row(Y, row * r + rr, acc[rr], a, b)


@kernel(parallel=True)
def _bsr_matmat_parallel(data, indices, indptr, X, alpha, beta, Y, n_threads):
    _, r, c = data.shape
    bounds = _split_rows(indptr, r * c, r, n_threads)
    for t in prange(n_threads):
        first, last = bounds[t], bounds[t + 1]
        _bsr_matmat_rows(data, indices, indptr, X, alpha, beta, Y, first, last)


def bsr_matmat(data, indices, indptr, X, alpha, beta, Y, n_threads):
    """Y = alpha * A @ X + beta * Y for A in BSR, feature-major X (n, k) and
    Y (m, k).  O(n_blocks * r * c * k + m * k); each block value is loaded
    once for k multiply-adds.  Spec: kernels._reference.sparse."""
    if data.shape[1] == data.shape[2] == 1:  # 1 x 1 blocks: a CSR matrix
        csr_matmat(data.reshape(-1), indices, indptr, X, alpha, beta, Y, n_threads)
        return
    if Y.shape[1] == 1:  # the matvec loop: no vector loop set up per value
        x, y = X.reshape(-1), Y.reshape(-1)
        bsr_matvec(data, indices, indptr, x, alpha, beta, y, n_threads)
        return
    if n_threads > 1:
        args = (data, indices, indptr, X, alpha, beta, Y)
        _run_parallel(_bsr_matmat_parallel, n_threads, args)
    else:
        n_rows = indptr.size - 1
        _bsr_matmat_rows(data, indices, indptr, X, alpha, beta, Y, 0, n_rows)


# Quantised CSR -------------------------------------------------------------


@kernel(**_FAST)
def _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, first, last):
    """Rows [first, last) of qcsr_matvec."""
    a, b = _cast(alpha, beta, y)
    for i in range(first, last):
        total = _row_dot(values, indices, indptr[i], indptr[i + 1], x)
        _store(y, i, total * scales[i], a, b)


@kernel(parallel=True)
def _qcsr_matvec_parallel(
    values, indices, indptr, scales, x, alpha, beta, y, n_threads
):
    bounds = _split_rows(indptr, 1, 1, n_threads)
    for t in prange(n_threads):
        first, last = bounds[t], bounds[t + 1]
        _qcsr_matvec_rows(
            values, indices, indptr, scales, x, alpha, beta, y, first, last
        )


def qcsr_matvec(values, indices, indptr, scales, x, alpha, beta, y, n_threads):
    """y = alpha * diag(scales) @ Q @ x + beta * y for a quantised CSR matrix
    (int8 ``values`` Q, one float32 scale per row, float32 x and y).

    Row i sums int8 * float32 products in float32, then multiplies by
    scales[i] once.  O(nnz + m); moves nnz * (1 + si) + (m + 1) * sp +
    m * 8 bytes (sp the indptr itemsize; scales and y), plus x.
    Spec: kernels._reference.sparse.
    """
    args = (values, indices, indptr, scales, x, alpha, beta, y)
    if n_threads > 1:
        _run_parallel(_qcsr_matvec_parallel, n_threads, args)
    else:
        _qcsr_matvec_rows(*args, 0, y.size)


@kernel(**_FAST)
def qcsr_matvec_t(values, indices, indptr, scales, x, alpha, beta, y):
    """y = alpha * Q.T @ diag(scales) @ x + beta * y, a scatter over y;
    single-threaded.  O(nnz + m + n).  Spec: kernels._reference.sparse."""
    a, b = _cast(alpha, beta, y)
    real = y.dtype.type
    _scale_in_place(y, b)
    # x[i] times its row's scale in float64: in float32 it can overflow to
    # inf where the scale is near float32's largest, and a stored zero value
    # would then give NaN (0 * inf) where the product is 0
    for i in range(indptr.size - 1):
        xi = np.float64(a) * (np.float64(scales[i]) * np.float64(x[i]))
        for j in range(np.uintp(indptr[i]), np.uintp(indptr[i + 1])):
            y[np.uintp(indices[j])] += real(np.float64(values[j]) * xi)


@kernel(**_FAST)
def _qcsr_matmat_rows(values, indices, indptr, scales, X, alpha, beta, Y, first, last):
    """Rows [first, last) of qcsr_matmat."""
    a, b = _cast(alpha, beta, Y)
    acc = np.empty(Y.shape[1], dtype=Y.dtype)
    for i in range(first, last):
        acc[:] = 0
        _row_axpy(values, indices, indptr[i], indptr[i + 1], X, acc)
        _store_row(Y, i, acc, a * scales[i], b)


@kernel(parallel=True)
def _qcsr_matmat_parallel(
    values, indices, indptr, scales, X, alpha, beta, Y, n_threads
):
    bounds = _split_rows(indptr, 1, 1, n_threads)
    for t in prange(n_threads):
        first, last = bounds[t], bounds[t + 1]
        _qcsr_matmat_rows(
            values, indices, indptr, scales, X, alpha, beta, Y, first, last
        )


def qcsr_matmat(values, indices, indptr, scales, X, alpha, beta, Y, n_threads):
    """Y = alpha * diag(scales) @ Q @ X + beta * Y, feature-major X (n, k) and
    Y (m, k), in float32.  O(nnz * k + m * k).  Spec: kernels._reference.sparse."""
    if Y.shape[1] == 1:  # the matvec loop: no vector loop set up per non-zero
        x, y = X.reshape(-1), Y.reshape(-1)
        qcsr_matvec(values, indices, indptr, scales, x, alpha, beta, y, n_threads)
        return
    args = (values, indices, indptr, scales, X, alpha, beta, Y)
    if n_threads > 1:
        _run_parallel(_qcsr_matmat_parallel, n_threads, args)
    else:
        _qcsr_matmat_rows(*args, 0, Y.shape[0])


# Layers ------------------------------------------------------------------


@kernel(**_FAST)
def _bias_activation(Y, bias, activation):
    """Y[i, :] = activation(Y[i, :] + bias[i]), in Y's dtype, one pass over
    Y (m * k values, in cache after the product that wrote them).  relu
    keeps NaN as np.maximum(v, 0) does; sigmoid is 0.5 * tanh(v / 2) +
    0.5 (no overflow)."""
    real = Y.dtype.type
    zero = real(0)
    half = real(0.5)
    for i in range(Y.shape[0]):
        b = bias[i]
        row = Y[i]
        if activation == _RELU:
            for c in range(row.size):
                v = row[c] + b
                row[c] = zero if v < zero else v
        elif activation == _TANH:
            for c in range(row.size):
                row[c] = np.tanh(row[c] + b)
        elif activation == _SIGMOID:
            for c in range(row.size):
                row[c] = half * np.tanh(half * (row[c] + b)) + half
        else:
            for c in range(row.size):
                row[c] += b


def csr_layer(data, indices, indptr, bias, X, activation, Y, n_threads):
    """Y = activation(A @ X + bias[:, None]) for A in CSR, feature-major X
    (n, k) and Y (m, k): csr_matmat with alpha = 1, beta = 0, then one
    compiled pass adding the bias and applying the activation (a code of
    kernels._codes).  O(nnz * k + m * k); moves the
    bytes of csr_matmat plus m * sv of bias.  Spec: kernels._reference.sparse.
    """
    csr_matmat(data, indices, indptr, X, 1.0, 0.0, Y, n_threads)
    _bias_activation(Y, bias, activation)


def bsr_layer(data, indices, indptr, bias, X, activation, Y, n_threads):
    """Y = activation(A @ X + bias[:, None]) for A in BSR: bsr_matmat, then
    the bias and activation as csr_layer.  O(n_blocks * r * c * k + m * k).
    Spec: kernels._reference.sparse."""
    bsr_matmat(data, indices, indptr, X, 1.0, 0.0, Y, n_threads)
    _bias_activation(Y, bias, activation)


def qcsr_layer(values, indices, indptr, scales, bias, X, activation, Y, n_threads):
    """Y = activation(diag(scales) @ Q @ X + bias[:, None]) for a quantised
    CSR matrix, float32: qcsr_matmat, then the bias and activation as
    csr_layer.  O(nnz * k + m * k).  Spec: kernels._reference.sparse."""
    qcsr_matmat(values, indices, indptr, scales, X, 1.0, 0.0, Y, n_threads)
    _bias_activation(Y, bias, activation)


def __getattr__(name):
    """The one-sample plans, ``MatvecPlan`` and ``MLPPlan``: part of every
    backend's sparse contract (kernels._reference.plans gives it), defined
    in kernels._numba.plans, which calls the kernels of this module."""
    if name in ("MatvecPlan", "MLPPlan"):
        from kernels._numba import plans

        return getattr(plans, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
