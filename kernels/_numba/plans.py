"""One-sample plans, compiled with Numba: ``MatvecPlan`` and ``MLPPlan``.

Same interface and semantics as the plans of the other backends
(``kernels._reference.plans`` is the specification): a fixed matrix or
chain of layers, bound once, applied to one vector at a time by one
compiled call, with the results of this backend's kernels bit for bit
(the plans call the same compiled row loops and epilogue).

What a plan saves is the per-call cost of Numba's dispatcher, which types
and unboxes every argument (about 70 ns an array): a three-layer network
passes 12 arrays to its layer kernels, in three calls.  ``MLPPlan`` instead
keeps a table of its layers (one int64 row each: format, dtype kinds,
shape, the address and length of every array) and passes only that table
and the input to one compiled function, which rebuilds each array as a view
of its address (``numba.carray``).  The plan holds a reference to every
array, so their memory stays valid and they cannot be resized; values
modified in place are seen by the next call, as by the kernels.
"""

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from kernels._checks import plan_matvec_output, sample_vector
from kernels._codes import ACTIVATION_IDENTITY as _IDENTITY
from kernels._numba._jit import kernel
from kernels._numba.packed import _matvec as _packed_matvec
from kernels._numba.sparse import (
    _bias_activation,
    _bsr_matvec_rows,
    _csr_matvec_rows,
    _qcsr_matvec_rows,
)

__all__ = ["MatvecPlan", "MLPPlan"]


@intrinsic
def _pointer(typingctx, address):
    """The integer ``address`` as a void pointer, for ``numba.carray``."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


# The columns of a layer table row.
(
    _FORMAT,  # 0 CSR, 1 BSR, 2 quantised CSR
    _INDEX,  # index dtype: 0 int32, 1 int64, 2 uint8, 3 uint16
    _POINTER,  # indptr dtype: 0 int32, 1 int64
    _M,
    _N,
    _R,  # block shape (1 x 1 but for BSR)
    _C,
    _ACTIVATION,
    _NNZ,  # stored values (blocks for BSR)
    _DATA,  # addresses
    _INDICES,
    _INDPTR,
    _SCALES,
    _BIAS,
    _HAS_BIAS,
    _META,  # a packed layer's meta array (address) and array sizes
    _STRUCTURE_SIZE,
    _INDPTR_SIZE,
    _SCALES_SIZE,
    _VALUE_KIND,  # a packed layer's values: 0 float32, 1 uint16, 2 uint8
    _WIDTH,
) = range(21)

_CSR, _BSR, _QUANTISED, _PACKED = 0, 1, 2, 3
_FORMATS = {"csr": _CSR, "bsr": _BSR, "int8": _QUANTISED, "packed": _PACKED}
_VALUE_KINDS = {np.dtype(np.float32): 0, np.dtype(np.uint16): 1, np.dtype(np.uint8): 2}
_INDEX_CODES = {
    np.dtype(np.int32): 0,
    np.dtype(np.int64): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.uint16): 3,
}


def _address(array):
    return array.__array_interface__["data"][0]


def _table_row(fmt, shape, arrays, activation):
    """The table row of one layer (a plan's arguments, as the layer kernels
    take them): its format, dtype kinds, shape and array addresses."""
    row = np.zeros(_WIDTH + 1, dtype=np.int64)
    code = _FORMATS[fmt]
    arrays = tuple(arrays)
    bias = arrays[-1]
    if code == _PACKED:
        meta, values, structure, indptr, scales = arrays[:5]
        row[_META] = _address(meta)
        row[_VALUE_KIND] = _VALUE_KINDS[values.dtype]
        row[_STRUCTURE_SIZE] = structure.size
        row[_INDPTR_SIZE] = indptr.size
        row[_SCALES_SIZE] = scales.size
        data, indices = values, structure
        row[_SCALES] = _address(scales)
        row[_POINTER] = 0
    else:
        data, indices, indptr = arrays[:3]
    row[_FORMAT] = code
    row[_INDEX] = _INDEX_CODES[indices.dtype]
    if code != _PACKED:
        row[_POINTER] = _INDEX_CODES[indptr.dtype]
    row[_M], row[_N] = shape
    row[_R], row[_C] = data.shape[1:] if code == _BSR else (1, 1)
    row[_ACTIVATION] = activation
    row[_NNZ] = data.shape[0]
    row[_DATA] = _address(data)
    row[_INDICES] = _address(indices)
    row[_INDPTR] = _address(indptr)
    if code == _QUANTISED:
        row[_SCALES] = _address(arrays[3])
    row[_HAS_BIAS] = bias is not None
    if bias is not None:
        row[_BIAS] = _address(bias)
    return row


@kernel(inline="always")
def _view(address, shape, dtype):
    return numba.carray(_pointer(address), shape, dtype)


@kernel(inline="always")
def _float_layer(row, indices, indptr, x, y):
    """y = W x for a CSR or BSR layer whose index arrays are given."""
    nnz = row[_NNZ]
    if row[_FORMAT] == _CSR:
        data = _view(row[_DATA], nnz, x.dtype)
        _csr_matvec_rows(data, indices, indptr, x, 1.0, 0.0, y, 0, row[_M])
    else:
        r, c = row[_R], row[_C]
        data = _view(row[_DATA], (nnz, r, c), x.dtype)
        if r == 1 and c == 1:  # as bsr_matvec: 1 x 1 blocks are CSR
            flat = data.reshape(nnz)
            _csr_matvec_rows(flat, indices, indptr, x, 1.0, 0.0, y, 0, row[_M])
        else:
            rows = indptr.size - 1
            _bsr_matvec_rows(data, indices, indptr, x, 1.0, 0.0, y, 0, rows)


@kernel(inline="always")
def _quantised_layer(row, indices, indptr, x, y):
    values = _view(row[_DATA], row[_NNZ], np.int8)
    scales = _view(row[_SCALES], row[_M], np.float32)
    _qcsr_matvec_rows(values, indices, indptr, scales, x, 1.0, 0.0, y, 0, row[_M])


@kernel(inline="always")
def _packed_values(row, values, x, y):
    """y = W x for a packed layer whose values are given: its structure
    by its dtype kind, then the deployment kernels' loops."""
    meta = _view(row[_META], 8, np.int64)
    indptr = _view(row[_INDPTR], row[_INDPTR_SIZE], np.int32)
    scales = _view(row[_SCALES], row[_SCALES_SIZE], np.float32)
    size = row[_STRUCTURE_SIZE]
    if row[_INDEX] == 2:
        structure = _view(row[_INDICES], size, np.uint8)
        _packed_matvec(meta, values, structure, indptr, scales, x, 1.0, 0.0, y)
    elif row[_INDEX] == 3:
        structure = _view(row[_INDICES], size, np.uint16)
        _packed_matvec(meta, values, structure, indptr, scales, x, 1.0, 0.0, y)
    else:
        structure = _view(row[_INDICES], size, np.int32)
        _packed_matvec(meta, values, structure, indptr, scales, x, 1.0, 0.0, y)


@kernel(inline="always")
def _packed_layer(row, x, y):
    kind, size = row[_VALUE_KIND], row[_NNZ]
    if kind == 0:
        _packed_values(row, _view(row[_DATA], size, np.float32), x, y)
    elif kind == 1:
        _packed_values(row, _view(row[_DATA], size, np.uint16), x, y)
    else:
        _packed_values(row, _view(row[_DATA], size, np.uint8), x, y)


@kernel
def _layer(row, x, y):
    """y = activation(W x + bias) for the layer of table row ``row``: the row
    loops and epilogue of this backend's layer kernels at batch 1."""
    m = row[_M]
    if row[_FORMAT] == _PACKED:
        _packed_layer(row, x, y)
        if row[_HAS_BIAS]:
            bias = _view(row[_BIAS], m, x.dtype)
            _bias_activation(y.reshape((m, 1)), bias, row[_ACTIVATION])
        return
    index, pointer = row[_INDEX], row[_POINTER]
    rows = m // row[_R] + 1
    nnz = row[_NNZ]
    if row[_FORMAT] != _QUANTISED:
        if index == 0:
            indices = _view(row[_INDICES], nnz, np.int32)
            indptr = _view(row[_INDPTR], rows, np.int32)
            _float_layer(row, indices, indptr, x, y)
        else:
            indices = _view(row[_INDICES], nnz, np.int64)
            indptr = _view(row[_INDPTR], rows, np.int64)
            _float_layer(row, indices, indptr, x, y)
    elif pointer == 0:
        indptr = _view(row[_INDPTR], rows, np.int32)
        if index == 2:
            _quantised_layer(row, _view(row[_INDICES], nnz, np.uint8), indptr, x, y)
        elif index == 3:
            _quantised_layer(row, _view(row[_INDICES], nnz, np.uint16), indptr, x, y)
        else:
            _quantised_layer(row, _view(row[_INDICES], nnz, np.int32), indptr, x, y)
    else:
        indptr = _view(row[_INDPTR], rows, np.int64)
        if index == 2:
            _quantised_layer(row, _view(row[_INDICES], nnz, np.uint8), indptr, x, y)
        elif index == 3:
            _quantised_layer(row, _view(row[_INDICES], nnz, np.uint16), indptr, x, y)
        else:
            _quantised_layer(row, _view(row[_INDICES], nnz, np.int32), indptr, x, y)
    if row[_HAS_BIAS]:
        bias = _view(row[_BIAS], m, x.dtype)
        _bias_activation(y.reshape((m, 1)), bias, row[_ACTIVATION])


@kernel
def _network(table, x):
    """The last layer's output for x: the layers in turn, between two
    scratch vectors of the widest layer's width."""
    width = table[0, _WIDTH]
    h0 = np.empty(width, dtype=x.dtype)
    h1 = np.empty(width, dtype=x.dtype)
    current = x
    for layer in range(table.shape[0]):
        target = h1 if layer % 2 == 0 else h0
        m = table[layer, _M]
        _layer(table[layer], current[: table[layer, _N]], target[:m])
        current = target[:m]
    return current


@kernel
def _forward(table, x, out, subtract_max):
    """out = the network's output for x (minus its maximum, NaN if any
    output is NaN, with ``subtract_max``)."""
    result = _network(table, x)
    out[:] = result
    if subtract_max and out.size:
        top = out[0]
        for i in range(1, out.size):
            if not (top >= out[i]) and not np.isnan(top):
                top = out[i]
        for i in range(out.size):
            out[i] = out[i] - top


@kernel
def _classify(table, x, cut):
    """The class index of x: argmax over several outputs (the first NaN, as
    np.argmax), or output > cut for a single one."""
    z = _network(table, x)
    if z.size == 1:
        return 1 if z[0] > cut else 0
    best = 0
    top = z[0]
    if np.isnan(top):
        return 0
    for i in range(1, z.size):
        if np.isnan(z[i]):
            return i
        if z[i] > top:
            top = z[i]
            best = i
    return best


class MLPPlan:
    """A chain of layers compiled for one sample at a time.

    ``MLPPlan(layers)``: one ``(format, (m, n), arrays, activation)`` per
    layer, as the layer kernels take them (``kernels._reference.plans``
    gives the contract).  Trusted: validated by the caller."""

    def __init__(self, layers):
        layers = tuple(layers)
        self._arrays = [a for layer in layers for a in layer[2] if a is not None]
        table = np.stack([_table_row(*layer) for layer in layers])
        table[:, _WIDTH] = max(1, int(table[:, _M].max()))
        self._table = table
        fmt, _, arrays, _ = layers[0]
        self._dtype = np.dtype(arrays[0].dtype if fmt in ("csr", "bsr") else np.float32)
        self._n_in = int(table[0, _N])
        self._m_out = int(table[-1, _M])

    @property
    def in_features(self):
        return self._n_in

    @property
    def out_features(self):
        return self._m_out

    @property
    def dtype(self):
        """float32 or float64: what the layers compute in and return."""
        return self._dtype

    def _input(self, x):
        return sample_vector(x, self._n_in, self._dtype)

    def forward(self, x):
        """A new array of the network's outputs for the vector x, or None
        (nothing run) when x is not a 1-D float32 or float64 array of
        in_features entries."""
        x = self._input(x)
        if x is None:
            return None
        out = np.empty(self._m_out, self._dtype)
        _forward(self._table, x, out, False)
        return out

    def forward_minus_max(self, x):
        """forward's outputs z minus their maximum, z - max(z); None as
        forward."""
        x = self._input(x)
        if x is None:
            return None
        out = np.empty(self._m_out, self._dtype)
        with np.errstate(all="ignore"):
            _forward(self._table, x, out, True)
        return out

    def classify(self, x, cut):
        """The class index of x (argmax, or output > cut for one output);
        -1 (nothing run) when x is not the simple case or there are no
        outputs."""
        x = self._input(x)
        if x is None or self._m_out == 0:
            return -1
        return int(_classify(self._table, x, float(cut)))


@kernel
def _matvec(row, x, y, alpha, beta):
    """y = alpha * A x + beta * y for the CSR or quantised matrix of the
    table row ``row``: the row loops of csr_matvec / qcsr_matvec."""
    m, nnz = row[_M], row[_NNZ]
    index, pointer = row[_INDEX], row[_POINTER]
    if row[_FORMAT] == _CSR:
        data = _view(row[_DATA], nnz, x.dtype)
        if index == 0:
            indices = _view(row[_INDICES], nnz, np.int32)
            indptr = _view(row[_INDPTR], m + 1, np.int32)
            _csr_matvec_rows(data, indices, indptr, x, alpha, beta, y, 0, m)
        else:
            indices = _view(row[_INDICES], nnz, np.int64)
            indptr = _view(row[_INDPTR], m + 1, np.int64)
            _csr_matvec_rows(data, indices, indptr, x, alpha, beta, y, 0, m)
        return
    values = _view(row[_DATA], nnz, np.int8)
    scales = _view(row[_SCALES], m, np.float32)
    if pointer == 0:
        indptr = _view(row[_INDPTR], m + 1, np.int32)
        if index == 2:
            indices = _view(row[_INDICES], nnz, np.uint8)
            _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)
        elif index == 3:
            indices = _view(row[_INDICES], nnz, np.uint16)
            _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)
        else:
            indices = _view(row[_INDICES], nnz, np.int32)
            _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)
    else:
        indptr = _view(row[_INDPTR], m + 1, np.int64)
        if index == 2:
            indices = _view(row[_INDICES], nnz, np.uint8)
            _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)
        elif index == 3:
            indices = _view(row[_INDICES], nnz, np.uint16)
            _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)
        else:
            indices = _view(row[_INDICES], nnz, np.int32)
            _qcsr_matvec_rows(values, indices, indptr, scales, x, alpha, beta, y, 0, m)


class MatvecPlan:
    """One CSR or quantised matrix bound for y = alpha * A x + beta * y on
    one thread: ``MatvecPlan(format, (m, n), arrays)`` with ``arrays`` the
    arguments csr_matvec or qcsr_matvec takes before x, held as one table
    row (as a layer of ``MLPPlan``).  Trusted: validated by the caller.
    ``matvec(x, out, alpha, beta)`` as in ``kernels._reference.plans``."""

    def __init__(self, fmt, shape, arrays):
        arrays = tuple(arrays)
        self._arrays = arrays
        self._row = _table_row(fmt, shape, (*arrays, None), _IDENTITY)
        self._shape = tuple(shape)
        self._dtype = np.dtype(np.float32 if fmt == "int8" else arrays[0].dtype)

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        """float32 or float64: the dtype of x and y."""
        return self._dtype

    def matvec(self, x, out, alpha, beta):
        """y = alpha * A x + beta * out (out not read when beta == 0), or
        None when the arguments are not the simple case."""
        y = plan_matvec_output(x, out, beta, self._shape, self._dtype)
        if y is not None:
            _matvec(self._row, x, y, alpha, beta)
        return y
