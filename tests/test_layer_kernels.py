"""The layer kernels (csr_layer, bsr_layer, qcsr_layer): Y = activation(A @ X
+ bias) in one call, every backend against an independent float64 oracle
(which checks the numpy reference too), on the matrices of test_sparse
(empty rows, unsorted and repeated columns), the empty shapes and 1 x 1."""

import numpy as np
import pytest
from _support import assert_close
from test_sparse import EMPTY_SHAPES, FORMATS, make

from kernels import _backend
from kernels._codes import ACTIVATION_NAMES as ACTIVATIONS
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

LAYER_KERNEL = {
    CSRMatrix: "csr_layer",
    BSRMatrix: "bsr_layer",
    QuantizedCSR: "qcsr_layer",
}


def _activate(z, name):
    """The activation in float64, written independently of every backend."""
    if name == "relu":
        return np.where(z < 0, 0.0, z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    return z


def run_layer(A, bias, X, activation, backend, n_threads=1):
    """The layer kernel of A's format in ``backend``, Y pre-filled with NaN
    (it must be written, not read)."""
    Y = np.full((A.shape[0], X.shape[1]), np.nan, dtype=A.dtype)
    kernel = getattr(_backend._load(backend, "sparse"), LAYER_KERNEL[type(A)])
    kernel(*A._arrays, bias, X, ACTIVATIONS.index(activation), Y, n_threads)
    return Y


def check_layer(A, dense, activation, k, backend, rng, n_threads=1):
    m, n = A.shape
    bias = rng.uniform(-1, 1, m).astype(A.dtype)
    X = rng.uniform(-1, 1, (n, k)).astype(A.dtype)
    Y = run_layer(A, bias, X, activation, backend, n_threads)
    z = dense @ X.astype(np.float64) + bias.astype(np.float64)[:, None]
    expected = _activate(z, activation).astype(A.dtype)
    assert_close(Y, expected, scale=max(1.0, np.abs(z).max(initial=0.0)))


@pytest.mark.parametrize("k", [1, 5], ids=["batch1", "batch5"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_layer(fmt, activation, k, backend, dtype, rng):
    A, dense = make(fmt, rng, (12, 16), dtype)
    check_layer(A, dense, activation, k, backend, rng)


@pytest.mark.parametrize("k", [1, 3], ids=["batch1", "batch3"])
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("fmt", ["csr", "bsr", "qcsr"])
def test_layer_without_stored_entries(fmt, shape, k, backend, rng):
    """nnz = 0, m = 0, n = 0: activation(bias) in every row, never garbage."""
    m, n = shape
    blocksize = (1, 1) if shape == (1, 1) else (2, 4)
    if fmt == "csr":
        A = CSRMatrix([], [], np.zeros(m + 1, np.int32), shape)
    elif fmt == "qcsr":
        A = QuantizedCSR([], [], np.zeros(m + 1, np.int32), np.zeros(m), shape)
    else:
        blocks = np.zeros((0,) + blocksize)
        A = BSRMatrix(blocks, [], np.zeros(m // blocksize[0] + 1, np.int32), shape)
    for activation in ACTIVATIONS:
        check_layer(A, np.zeros(shape), activation, k, backend, rng)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("fmt", ["csr", "bsr", "qcsr"])
def test_layer_one_by_one(fmt, activation, backend, dtype, rng):
    if fmt == "csr":
        A = CSRMatrix(np.array([-3.0], dtype), [0], [0, 1], (1, 1))
    elif fmt == "bsr":
        A = BSRMatrix(np.full((1, 1, 1), -3.0, dtype), [0], [0, 1], (1, 1))
    else:
        A = QuantizedCSR([-127], [0], [0, 1], [3.0 / 127], (1, 1))
    for k in (1, 2):
        check_layer(A, np.array([[-3.0]]), activation, k, backend, rng)


@pytest.mark.parametrize("fmt", ["csr", "bsr4x4", "qcsr"])
def test_layer_on_threads(fmt, backend, rng):
    A, dense = make(fmt, rng, (64, 48), np.float32)
    for k in (1, 5):
        check_layer(A, dense, "relu", k, backend, rng, n_threads=2)


def test_relu_keeps_nan(backend):
    """relu is np.maximum(v, 0): NaN stays NaN (a NaN input is not hidden
    as 0), negative values become 0."""
    A = CSRMatrix([1.0, 1.0, 1.0], [0, 1, 2], [0, 1, 2, 3], (3, 3))
    X = np.array([[np.nan], [2.0], [-2.0]])
    Y = run_layer(A, np.zeros(3), X, "relu", backend)
    assert np.isnan(Y[0, 0])
    np.testing.assert_array_equal(Y[1:, 0], [2.0, 0.0])
