"""One-sample plans: the NumPy reference, and the specification every
backend's ``MatvecPlan`` and ``MLPPlan`` follows (each backend's ``sparse``
module exports the two classes).

A plan binds a fixed matrix, or a fixed chain of layers, once, so that
applying it to one vector costs no per-call handling of its arrays: the
compiled backends spend a microsecond or two there on a small product,
as much as the product itself.  ``kernels.sparse.spmv`` and
``kernels.nn.SparseMLP`` ask the backend of the call for a plan (kept on
the matrix or model, one per backend) when the call is the simple case
the plan serves, and take the general path otherwise.

Contract (every backend):

* The structure is trusted, as by the kernels: the caller has validated it
  (the matrix classes and ``SparseMLP`` do, once, before a plan is built).
* A plan holds a reference to every array it was given: they stay alive
  and cannot be resized, and a call reads their current values (values
  modified in place are seen by the next call; modifying indices or indptr
  is as unsafe as for every kernel).
* A plan's result has the bits of its backend's kernels on the same
  input: ``MatvecPlan`` those of csr_matvec / qcsr_matvec on one thread,
  ``MLPPlan`` those of the layer kernels (csr_layer, bsr_layer,
  qcsr_layer) at batch 1, one thread.
* A call that is not the simple case runs nothing and returns None (-1 for
  ``classify``): the caller's general path then converts or rejects the
  arguments.

``MatvecPlan(fmt, (m, n), arrays)``: fmt "csr" or "int8", ``arrays`` the
arguments csr_matvec (data, indices, indptr) or qcsr_matvec (values,
indices, indptr, scales) takes before x.  ``matvec(x, out, alpha, beta)``
returns y = alpha * A x + beta * out (``out``, or a new array when ``out``
is None; out is not read when beta == 0), or None unless x is a
C-contiguous 1-D array of n entries of the matrix's dtype and ``out`` is
None (with beta == 0) or a writable C-contiguous 1-D array of m entries of
that dtype that does not overlap x.

``MLPPlan(layers)``: one ``(format, (m, n), arrays, activation)`` per
layer, format "csr", "bsr", "int8" or "packed", ``arrays`` the arguments
that layer's kernel takes before X (csr_layer's data, indices, indptr,
bias; bsr_layer's the same with (n_blocks, r, c) data; qcsr_layer's
values, indices, indptr, scales, bias; packed_layer's meta, values,
structure, indptr, scales, bias; a bias of None, with the identity
activation, is the plain product), activation a code of
``kernels._codes``; every layer computes in one dtype and each layer's n
is the previous layer's m.  ``forward(x)`` returns a new array of the last
layer's outputs, ``forward_minus_max(x)`` the same minus its maximum (NaN
when an output is NaN; no floating-point warnings), ``classify(x, cut)``
the class index as an int (the first largest output, or the first NaN, as
np.argmax; for a single output 1 if it is > cut, else 0).  x must be a
1-D float32 or float64 ndarray of in_features entries, any stride
(converted once to the plan's dtype when it differs), else forward returns
None and classify -1 (also for a network without outputs).
"""

import numpy as np

from kernels._checks import plan_matvec_output, sample_vector
from kernels._reference.packed import packed_layer, packed_matmat
from kernels._reference.sparse import (
    bsr_layer,
    bsr_matmat,
    csr_layer,
    csr_matmat,
    csr_matvec,
    qcsr_layer,
    qcsr_matmat,
    qcsr_matvec,
)

__all__ = ["MatvecPlan", "MLPPlan"]

_LAYERS = {
    "csr": csr_layer,
    "bsr": bsr_layer,
    "int8": qcsr_layer,
    "packed": packed_layer,
}
_PRODUCTS = {
    "csr": csr_matmat,
    "bsr": bsr_matmat,
    "int8": qcsr_matmat,
    "packed": packed_matmat,
}


class MLPPlan:
    """A chain of layers for one sample at a time: the layer kernels in
    turn, at batch 1.  See the module for the contract."""

    def __init__(self, layers):
        self._layers = []
        for fmt, shape, arrays, activation in layers:
            *weight, bias = tuple(arrays)
            self._layers.append((fmt, tuple(shape), tuple(weight), bias, activation))
        first_format, _, first_weight = self._layers[0][:3]
        self._dtype = np.dtype(
            first_weight[0].dtype if first_format in ("csr", "bsr") else np.float32
        )
        self._n_in = self._layers[0][1][1]
        self._m_out = self._layers[-1][1][0]

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

    def _run(self, x):
        y = x
        for fmt, (m, _), weight, bias, activation in self._layers:
            X, y = y.reshape(-1, 1), np.empty(m, self._dtype)
            if bias is None:
                _PRODUCTS[fmt](*weight, X, 1.0, 0.0, y.reshape(m, 1), 1)
            else:
                _LAYERS[fmt](*weight, bias, X, activation, y.reshape(m, 1), 1)
        return y

    def forward(self, x):
        """A new array of the network's outputs for x, or None."""
        x = sample_vector(x, self._n_in, self._dtype)
        return None if x is None else self._run(x)

    def forward_minus_max(self, x):
        """forward's outputs z minus their maximum, z - max(z), or None."""
        z = self.forward(x)
        if z is not None and z.size:
            with np.errstate(over="ignore", invalid="ignore"):
                z -= z.max()
        return z

    def classify(self, x, cut):
        """The class index of x as an int, or -1."""
        z = self.forward(x)
        if z is None or z.size == 0:
            return -1
        if z.size == 1:
            return 1 if z[0] > cut else 0
        return int(np.argmax(z))


class MatvecPlan:
    """One CSR or quantised matrix bound for y = alpha * A x + beta * y:
    csr_matvec or qcsr_matvec.  See the module for the contract."""

    def __init__(self, fmt, shape, arrays):
        self._arrays = tuple(arrays)
        self._kernel = qcsr_matvec if fmt == "int8" else csr_matvec
        self._shape = tuple(shape)
        self._dtype = np.dtype(np.float32 if fmt == "int8" else self._arrays[0].dtype)

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        """float32 or float64: the dtype of x and y."""
        return self._dtype

    def matvec(self, x, out, alpha, beta):
        """y = alpha * A x + beta * out, or None when the arguments are not
        the simple case."""
        y = plan_matvec_output(x, out, beta, self._shape, self._dtype)
        if y is not None:
            self._kernel(*self._arrays, x, alpha, beta, y, 1)
        return y
