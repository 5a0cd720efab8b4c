"""Deployment-matrix kernels, compiled with Numba.

Same names, arguments and semantics as ``kernels._reference.packed`` (the
specification, with the layouts, value codecs and input contract these
kernels trust).  Every product computes in float32 on one thread.

How the loops are written: a row's entries are visited by one inlined
function per product (``_row_dot`` for a vector, ``_row_axpy`` for a
feature-major batch) that branches on the layout and decodes each value by
its codec (``_value``); the codes are the same for every row, so LLVM
moves those branches out of the loops (unswitching) and each combination
runs its own loop.  A float16 value is decoded from its bits exactly (the
significand times a power of two from a table; Numba has no float16
arithmetic on the CPU).  A bitmask byte is walked through tables of its
set bits (their count and positions), not bit by bit.
"""

import numpy as np

from kernels._codes import (
    LAYOUT_CSR,
    LAYOUT_DELTA,
    LAYOUT_DENSE,
    VALUES_FLOAT16,
    VALUES_FLOAT32,
    VALUES_INT4,
    VALUES_INT8,
)
from kernels._numba._jit import kernel
from kernels._numba.sparse import _bias_activation, _cast, _store, _store_row

_FAST = {"fastmath": {"contract"}}

# 2**(e - 25) for a binary16 exponent field e (1..30): a normal value is
# (1024 + mantissa) * _HALF_SCALE[e]; a subnormal (e = 0) mantissa * 2**-24.
_HALF_SCALE = np.array(
    [2.0**-24] + [2.0 ** (e - 25) for e in range(1, 31)] + [np.inf], np.float32
)
# For each byte value: how many bits are set, and their positions.
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.int64)
_POSITIONS = np.array(
    [
        [t for t in range(8) if b >> t & 1] + [0] * (8 - bin(b).count("1"))
        for b in range(256)
    ],
    np.int64,
)


@kernel(inline="always")
def _half(h):
    """The float32 value of the binary16 bit pattern h."""
    e = (np.int64(h) >> 10) & 31
    mantissa = np.int64(h) & 1023
    if e != 0:
        mantissa += 1024
    v = np.float32(mantissa) * _HALF_SCALE[e]
    return -v if np.int64(h) >> 15 else v


@kernel(inline="always")
def _value(values, code, p):
    """Stored value p as float32 (integer codecs: q, unscaled)."""
    if code == VALUES_FLOAT32:
        return np.float32(values[p])
    if code == VALUES_FLOAT16:
        return _half(values[p])
    if code == VALUES_INT8:
        byte = np.int64(values[p])
        return np.float32(byte - 256 if byte >= 128 else byte)
    if code == VALUES_INT4:
        field = (np.int64(values[p >> 1]) >> ((p & 1) << 2)) & 15
        return np.float32(field - 16 if field >= 8 else field)
    field = (np.int64(values[p >> 2]) >> ((p & 3) << 1)) & 3
    return np.float32(field - 4 if field >= 2 else field)


@kernel(inline="always")
def _gap(structure, bits, p):
    if bits == 8:
        return np.int64(structure[p])
    return (np.int64(structure[p >> 1]) >> ((p & 1) << 2)) & 15


@kernel(inline="always")
def _row_dot(meta, values, structure, indptr, x, i, p):
    """(row i . x in float32, the value index after the row), the row's
    values starting at value index p."""
    layout, code, index, n = meta[0], meta[1], meta[2], meta[4]
    s0 = s1 = s2 = s3 = np.float32(0)
    if layout == LAYOUT_DENSE:
        j = 0
        while j + 3 < n:
            s0 += _value(values, code, p + j) * x[j]
            s1 += _value(values, code, p + j + 1) * x[j + 1]
            s2 += _value(values, code, p + j + 2) * x[j + 2]
            s3 += _value(values, code, p + j + 3) * x[j + 3]
            j += 4
        while j < n:
            s0 += _value(values, code, p + j) * x[j]
            j += 1
        return (s0 + s1) + (s2 + s3), p + n
    if layout == LAYOUT_CSR:
        q, stop = np.int64(indptr[i]), np.int64(indptr[i + 1])
        while q + 3 < stop:
            s0 += _value(values, code, q) * x[np.uintp(structure[q])]
            s1 += _value(values, code, q + 1) * x[np.uintp(structure[q + 1])]
            s2 += _value(values, code, q + 2) * x[np.uintp(structure[q + 2])]
            s3 += _value(values, code, q + 3) * x[np.uintp(structure[q + 3])]
            q += 4
        while q < stop:
            s0 += _value(values, code, q) * x[np.uintp(structure[q])]
            q += 1
        return (s0 + s1) + (s2 + s3), stop
    if layout == LAYOUT_DELTA:
        column = np.int64(-1)
        q, stop = np.int64(indptr[i]), np.int64(indptr[i + 1])
        while q + 1 < stop:
            column += 1 + _gap(structure, index, q)
            s0 += _value(values, code, q) * x[np.uintp(column)]
            column += 1 + _gap(structure, index, q + 1)
            s1 += _value(values, code, q + 1) * x[np.uintp(column)]
            q += 2
        if q < stop:
            column += 1 + _gap(structure, index, q)
            s0 += _value(values, code, q) * x[np.uintp(column)]
        return s0 + s1, stop
    width = (n + 7) >> 3
    base = i * width
    for k in range(width):
        byte = np.int64(structure[base + k])
        for t in range(_POPCOUNT[byte]):
            s0 += _value(values, code, p) * x[np.uintp(k * 8 + _POSITIONS[byte, t])]
            p += 1
    return s0, p


@kernel(inline="always")
def _row_axpy(meta, values, structure, indptr, X, acc, i, p):
    """acc += row i @ X (X feature-major (n, k)); returns the value index
    after the row."""
    layout, code, index, n = meta[0], meta[1], meta[2], meta[4]
    if layout == LAYOUT_DENSE:
        for j in range(n):
            v = _value(values, code, p + j)
            xj = X[j]
            for c in range(acc.size):
                acc[c] += v * xj[c]
        return p + n
    if layout == LAYOUT_CSR or layout == LAYOUT_DELTA:
        column = np.int64(-1)
        stop = np.int64(indptr[i + 1])
        for q in range(np.int64(indptr[i]), stop):
            if layout == LAYOUT_CSR:
                column = np.int64(structure[q])
            else:
                column += 1 + _gap(structure, index, q)
            v = _value(values, code, q)
            xj = X[np.uintp(column)]
            for c in range(acc.size):
                acc[c] += v * xj[c]
        return stop
    width = (n + 7) >> 3
    base = i * width
    for k in range(width):
        byte = np.int64(structure[base + k])
        for t in range(_POPCOUNT[byte]):
            v = _value(values, code, p)
            xj = X[np.uintp(k * 8 + _POSITIONS[byte, t])]
            for c in range(acc.size):
                acc[c] += v * xj[c]
            p += 1
    return p


@kernel(**_FAST)
def _matvec(meta, values, structure, indptr, scales, x, alpha, beta, y):
    a, b = _cast(alpha, beta, y)
    scaled = scales.size > 0
    p = np.int64(0)
    for i in range(meta[3]):
        total, p = _row_dot(meta, values, structure, indptr, x, i, p)
        if scaled:
            total *= scales[i]
        _store(y, i, total, a, b)


def packed_matvec(
    meta, values, structure, indptr, scales, x, alpha, beta, y, n_threads
):
    """y = alpha * A @ x + beta * y for a deployment matrix A, in float32,
    one thread.  O(count + m).  Spec: kernels._reference.packed."""
    _matvec(meta, values, structure, indptr, scales, x, alpha, beta, y)


@kernel(**_FAST)
def _matmat(meta, values, structure, indptr, scales, X, alpha, beta, Y):
    a, b = _cast(alpha, beta, Y)
    acc = np.empty(Y.shape[1], dtype=Y.dtype)
    p = np.int64(0)
    for i in range(meta[3]):
        acc[:] = 0
        p = _row_axpy(meta, values, structure, indptr, X, acc, i, p)
        _store_row(Y, i, acc, a * scales[i] if scales.size else a, b)


def packed_matmat(
    meta, values, structure, indptr, scales, X, alpha, beta, Y, n_threads
):
    """Y = alpha * A @ X + beta * Y, feature-major X (n, k), Y (m, k), in
    float32, one thread; k == 1 runs the matvec loops.  O(count * k + m *
    k).  Spec: kernels._reference.packed."""
    if Y.shape[1] == 1:
        x, y = X.reshape(-1), Y.reshape(-1)
        _matvec(meta, values, structure, indptr, scales, x, alpha, beta, y)
    else:
        _matmat(meta, values, structure, indptr, scales, X, alpha, beta, Y)


def packed_layer(
    meta, values, structure, indptr, scales, bias, X, activation, Y, n_threads
):
    """Y = activation(A @ X + bias[:, None]): packed_matmat with alpha = 1,
    beta = 0, then the bias and activation as the sparse layer kernels.
    Spec: kernels._reference.packed."""
    packed_matmat(meta, values, structure, indptr, scales, X, 1.0, 0.0, Y, n_threads)
    _bias_activation(Y, bias, activation)
