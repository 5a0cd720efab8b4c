"""kernels.sparse: every backend against scipy.sparse, against the NumPy
reference and against a dense float64 product built independently of the
package; the formats' constructors, conversions and quantisation error
bound; input validation.  Without scipy the tests of the scipy interface
skip and the others run against the other two oracles."""

import math
import tracemalloc

import numpy as np
import pytest
from _support import assert_close, run_python
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels import sparse
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR, spmm, spmv, spmv_t

try:
    import scipy.sparse as sp
except ImportError:
    sp = None
needs_scipy = pytest.mark.skipif(sp is None, reason="scipy is not installed")

REF = "numpy"  # the reference backend: the specification
BACKENDS = kernels.available_backends()
COMPILED = [b for b in BACKENDS if b != REF]
BLOCKS = ((1, 4), (4, 1), (4, 4))


# Matrices with an independent float64 dense oracle ----------------------------


def _structure(rng, n_major, n_minor, per_row, index_dtype):
    """Random compressed structure with empty rows (every third) and
    unsorted minor indices, one of them repeated in every row of two or
    more entries: (indices, indptr, the major index of every entry)."""
    counts = rng.integers(1, per_row + 1, n_major) * (n_minor > 0)
    counts[1::3] = 0
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = rng.integers(0, max(n_minor, 1), indptr[-1])
    several = counts >= 2
    indices[indptr[1:][several] - 1] = indices[indptr[:-1][several]]
    # np.repeat takes counts as np.intp, int32 on 32-bit platforms
    major = np.repeat(np.arange(n_major), counts.astype(np.intp))
    return indices.astype(index_dtype), indptr.astype(index_dtype), major


def make_csr(rng, shape, dtype, index_dtype=np.int32, per_row=5):
    m, n = shape
    indices, indptr, rows = _structure(rng, m, n, per_row, index_dtype)
    data = rng.uniform(-2, 2, indices.size).astype(dtype)
    dense = np.zeros(shape)
    np.add.at(dense, (rows, indices), data.astype(np.float64))
    return CSRMatrix(data, indices, indptr, shape), dense


def make_bsr(rng, shape, blocksize, dtype, index_dtype=np.int32, per_row=3):
    (m, n), (r, c) = shape, blocksize
    indices, indptr, _ = _structure(rng, m // r, n // c, per_row, index_dtype)
    data = rng.uniform(-2, 2, (indices.size, r, c)).astype(dtype)
    data[data < -1.5] = 0  # explicit zeros inside blocks
    dense = np.zeros(shape)
    for block_row in range(m // r):
        for k in range(indptr[block_row], indptr[block_row + 1]):
            column = indices[k]
            dense[
                block_row * r : (block_row + 1) * r, column * c : (column + 1) * c
            ] += data[k]
    return BSRMatrix(data, indices, indptr, shape), dense


def make_qcsr(rng, shape, index_dtype=np.int32, per_row=5, bits=8):
    m, n = shape
    qmax = 2 ** (bits - 1) - 1
    indices, indptr, rows = _structure(rng, m, n, per_row, index_dtype)
    values = rng.integers(-qmax, qmax + 1, indices.size).astype(np.int8)
    scales = rng.uniform(0.001, 0.05, m).astype(np.float32)
    dense = np.zeros(shape)
    np.add.at(dense, (rows, indices), scales[rows].astype(np.float64) * values)
    return QuantizedCSR(values, indices, indptr, scales, shape, bits=bits), dense


def _random_dense(rng, shape, density):
    """A dense array with about ``density * size`` entries uniform in
    [-1, 1], zeros elsewhere."""
    W = rng.uniform(-1, 1, shape)
    W[rng.random(shape) >= density] = 0
    return W


FORMATS = ["csr"] + [f"bsr{r}x{c}" for r, c in BLOCKS] + ["qcsr"]


def make(fmt, rng, shape, dtype, index_dtype=np.int32):
    if fmt == "csr":
        return make_csr(rng, shape, dtype, index_dtype)
    if fmt == "qcsr":
        return make_qcsr(rng, shape, index_dtype)
    r, c = (int(v) for v in fmt[3:].split("x"))
    return make_bsr(rng, shape, (r, c), dtype, index_dtype)


def as_scipy(A):
    """The scipy oracle of A (the dequantised CSR for a QuantizedCSR)."""
    if isinstance(A, QuantizedCSR):
        A = A.dequantize()
    return A.to_scipy()


# The products, with their dense float64 definition ----------------------------


def _call(op, A, x, backend, **kw):
    if op == "spmv":
        return spmv(A, x, backend=backend, **kw)
    if op == "spmv_t":
        return spmv_t(A, x, backend=backend, **kw)
    return spmm(A, x, layout=op[5:], backend=backend, **kw)


def _operand(op, rng, shape, dtype, k=3, strided=False):
    m, n = shape
    size = {
        "spmv": (n,),
        "spmv_t": (m,),
        "spmm_features": (n, k),
        "spmm_batch": (k, n),
    }[op]
    x = rng.uniform(-1, 1, size).astype(dtype)
    if strided:  # the same values, not contiguous
        wide = np.zeros(size[:-1] + (2 * size[-1],), dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
    return x


def _dense_product(op, dense, x):
    if op == "spmv":
        return dense @ x
    if op == "spmv_t":
        return dense.T @ x
    if op == "spmm_features":
        return dense @ x
    return x @ dense.T


def _output_shape(op, shape, k=3):
    m, n = shape
    return {
        "spmv": (m,),
        "spmv_t": (n,),
        "spmm_features": (m, k),
        "spmm_batch": (k, m),
    }[op]


OPS = ["spmv", "spmv_t", "spmm_features", "spmm_batch"]

# (alpha, beta, what out is)
MODES = {
    "new": (1.0, 0.0, None),
    "nan_out": (-1.5, 0.0, "nan"),
    "beta": (2.0, 0.5, "values"),
    "strided_out": (0.5, -1.0, "strided"),
}


def _out(kind, shape, dtype, rng):
    if kind is None:
        return None
    if kind == "nan":
        return np.full(shape, np.nan, dtype)
    values = rng.uniform(-1, 1, shape).astype(dtype)
    if kind == "values":
        return values
    wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
    wide[..., ::2] = values
    return wide[..., ::2]


def check_product(A, dense, op, backend, rng, alpha=1.0, beta=0.0, out_kind=None):
    """The product against the dense float64 oracle, scipy and the reference
    backend, to the dtype's tolerance."""
    dtype = A.dtype
    x = _operand(op, rng, A.shape, dtype, strided=out_kind == "strided")
    out = _out(out_kind, _output_shape(op, A.shape), dtype, rng)
    y0 = None if out is None else np.nan_to_num(out.astype(np.float64), nan=0.0)
    x64 = x.astype(np.float64)
    expected = alpha * _dense_product(op, dense, x64)
    scale = abs(alpha) * np.abs(_dense_product(op, np.abs(dense), np.abs(x64)))
    if beta != 0:
        expected = expected + beta * y0
        scale = scale + abs(beta) * np.abs(y0)
    scale = float(scale.max(initial=1.0))
    reference_out = None if out is None else out.copy()
    result = _call(op, A, x, backend, out=out, alpha=alpha, beta=beta)
    if out is not None:
        assert result is out
    assert_close(result, expected.astype(dtype), scale)
    if sp is not None:
        oracle = _dense_product(op, as_scipy(A), x64)
        assert_close(
            result, (alpha * oracle + (beta * y0 if beta else 0)).astype(dtype), scale
        )
    reference = _call(op, A, x, REF, out=reference_out, alpha=alpha, beta=beta)
    assert_close(result, reference, scale)
    return result


# every mode with int32 indices, the most demanding one with int64
INDEX_MODES = [(np.int32, mode) for mode in MODES] + [(np.int64, "strided_out")]


@pytest.mark.parametrize(
    "index_dtype, mode",
    INDEX_MODES,
    ids=[f"{np.dtype(i).name}-{mode}" for i, mode in INDEX_MODES],
)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_product(fmt, op, index_dtype, mode, backend, dtype, rng):
    """Unsorted and repeated indices, empty rows, explicit zeros, all modes
    of alpha, beta and out."""
    A, dense = make(fmt, rng, (12, 16), dtype, index_dtype)
    if fmt != "qcsr":
        assert A.indices.dtype == index_dtype
    alpha, beta, out_kind = MODES[mode]
    check_product(A, dense, op, backend, rng, alpha, beta, out_kind)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n", [300, 70_000], ids=["uint16", "int32"])
def test_quantized_wide_indices(op, n, backend, rng):
    A, dense = make_qcsr(rng, (6, n), per_row=20)
    assert A.indices.dtype == (np.uint16 if n <= 65536 else np.int32)
    check_product(A, dense, op, backend, rng, 1.5, 0.25, "values")


EMPTY_SHAPES = [(0, 0), (0, 4), (4, 0), (4, 8), (1, 1)]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("fmt", ["csr", "bsr", "qcsr"])
def test_no_stored_entries(fmt, shape, op, backend, rng):
    """nnz = 0, m = 0 and n = 0: zeros (or beta * out), never garbage."""
    m, n = shape
    blocksize = (1, 1) if shape == (1, 1) else (2, 4)
    if fmt == "csr":
        A = CSRMatrix([], [], np.zeros(m + 1, np.int32), shape)
    elif fmt == "qcsr":
        A = QuantizedCSR([], [], np.zeros(m + 1, np.int32), np.zeros(m), shape)
    else:
        blocks = np.zeros((0,) + blocksize)
        A = BSRMatrix(blocks, [], np.zeros(m // blocksize[0] + 1, np.int32), shape)
    dense = np.zeros(shape)
    for alpha, beta, out_kind in MODES.values():
        check_product(A, dense, op, backend, rng, alpha, beta, out_kind)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", ["csr", "bsr", "qcsr"])
def test_one_by_one(fmt, op, backend, dtype, rng):
    if fmt == "csr":
        A = CSRMatrix(np.array([3.0], dtype), [0], [0, 1], (1, 1))
    elif fmt == "bsr":
        A = BSRMatrix(np.full((1, 1, 1), 3.0, dtype), [0], [0, 1], (1, 1))
    else:
        A = QuantizedCSR([127], [0], [0, 1], [3.0 / 127], (1, 1))
    check_product(A, np.array([[3.0]]), op, backend, rng, 2.0, 0.5, "values")


@pytest.mark.parametrize("op", ["spmm_features", "spmm_batch"])
def test_empty_batch(op, backend, rng):
    A, _ = make_csr(rng, (5, 7), np.float64)
    X = np.zeros((7, 0)) if op == "spmm_features" else np.zeros((0, 7))
    result = _call(op, A, X, backend)
    assert result.shape == ((5, 0) if op == "spmm_features" else (0, 5))


@needs_scipy
@pytest.mark.parametrize("fmt", FORMATS)
@given(
    m=st.integers(0, 6),
    n=st.integers(0, 6),
    k=st.integers(1, 5),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_matrices_match_scipy(fmt, m, n, k, density, seed):
    """Random shapes and densities (canonical matrices from from_dense, the
    block formats with shapes scaled to their blocks), every backend."""
    rng = np.random.default_rng(seed)
    r, c = (1, 1) if not fmt.startswith("bsr") else (int(v) for v in fmt[3:].split("x"))
    W = _random_dense(rng, (m * r, n * c), density)
    if fmt == "csr":
        A = CSRMatrix.from_dense(W)
    elif fmt == "qcsr":
        A = QuantizedCSR.from_csr(CSRMatrix.from_dense(W))
    else:
        A = BSRMatrix.from_dense(W, (r, c))
    S = as_scipy(A).astype(np.float64)
    x, xt = rng.uniform(-1, 1, W.shape[1]), rng.uniform(-1, 1, W.shape[0])
    X = rng.uniform(-1, 1, (W.shape[1], k))
    for backend in BACKENDS:
        scale = 1.0 + W.shape[1] + W.shape[0]
        assert_close(spmv(A, x, backend=backend), (S @ x).astype(A.dtype), scale)
        assert_close(spmv_t(A, xt, backend=backend), (S.T @ xt).astype(A.dtype), scale)
        expected = (S @ X).astype(A.dtype)
        assert_close(spmm(A, X, layout="features", backend=backend), expected, scale)
        assert_close(spmm(A, X.T, backend=backend), expected.T, scale)


# Calling conventions -----------------------------------------------------------


@needs_scipy
@pytest.mark.parametrize(
    "scipy_class", ["csr_array", "csr_matrix", "coo_array", "csc_matrix", "bsr_array"]
)
def test_scipy_input(scipy_class, backend, rng):
    W = rng.uniform(-1, 1, (8, 6))
    W[W < 0.3] = 0
    S = getattr(sp, scipy_class)(W)
    x, xt = rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 8)
    X = rng.uniform(-1, 1, (4, 6))
    np.testing.assert_allclose(spmv(S, x, backend=backend), W @ x, rtol=1e-12)
    np.testing.assert_allclose(spmv_t(S, xt, backend=backend), W.T @ xt, rtol=1e-12)
    np.testing.assert_allclose(spmm(S, X, backend=backend), X @ W.T, rtol=1e-12)


@needs_scipy
def test_scipy_csr_is_converted_without_copy(rng):
    S = sp.csr_array(_random_dense(rng, (20, 30), 0.2))
    A = CSRMatrix.from_scipy(S)
    assert np.shares_memory(A.data, S.data)
    assert np.shares_memory(A.indices, S.indices)
    B = BSRMatrix.from_scipy(S.tobsr(blocksize=(2, 3)))
    assert B.blocksize == (2, 3)
    np.testing.assert_array_equal(B.to_dense(), S.toarray())
    np.testing.assert_array_equal(
        BSRMatrix.from_scipy(S, (5, 5)).to_dense(), S.toarray()
    )
    assert BSRMatrix.from_scipy(S, (5, 5)).blocksize == (5, 5)


def test_matmul_operator(rng):
    A, dense = make_csr(rng, (6, 5), np.float64)
    x, X = rng.uniform(size=5), rng.uniform(size=(5, 3))
    np.testing.assert_allclose(A @ x, dense @ x)
    np.testing.assert_allclose(A @ X, dense @ X)
    np.testing.assert_allclose(A @ list(x), dense @ x)
    Q = QuantizedCSR.from_csr(A)
    np.testing.assert_allclose(Q @ x, Q.to_dense() @ x.astype(np.float32), rtol=1e-5)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        A @ np.ones((5, 1, 1))
    with pytest.raises(TypeError):
        A @ A
    with pytest.raises(ValueError, match="x must have shape"):
        A @ np.ones(4)


def test_repr_and_properties(rng):
    A, _ = make_csr(rng, (6, 5), np.float32)
    assert (
        repr(A)
        == f"CSRMatrix(shape=(6, 5), nnz={A.nnz}, dtype=float32, index_dtype=int32)"
    )
    assert A.nbytes == A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
    assert A.density == A.nnz / 30
    B = BSRMatrix.from_dense(np.eye(4), (2, 2))
    assert "blocksize=(2, 2)" in repr(B)
    assert B.nnz == 8 and B.density == 0.5 and B.fill_in == 2.0
    assert B.nbytes == 8 * 8 + 2 * 4 + 3 * 4
    Q = QuantizedCSR.from_csr(CSRMatrix.from_dense(np.eye(3)), bits=4)
    assert "bits=4" in repr(Q) and Q.bits == 4 and Q.dtype == np.float32
    assert CSRMatrix([], [], [0], (0, 0)).density == 0.0


def test_dtype_conversion(backend, rng):
    """x is converted to A's dtype; A keeps float32; ints become float64."""
    A32, dense = make_csr(rng, (5, 4), np.float32)
    assert spmv(A32, np.arange(4), backend=backend).dtype == np.float32
    assert spmv(A32, np.arange(4.0), backend=backend).dtype == np.float32
    A = CSRMatrix([1, 2], [0, 1], [0, 1, 2], (2, 2))
    assert A.dtype == np.float64
    assert CSRMatrix(np.ones(1, np.float16), [0], [0, 1], (1, 1)).dtype == np.float32
    Q = QuantizedCSR.from_csr(A)
    assert spmv(Q, np.ones(2), backend=backend).dtype == np.float32
    with pytest.raises(ValueError, match="dtype float32"):
        spmv(A32, np.ones(4), out=np.zeros(5), backend=backend)


@pytest.mark.parametrize("op", OPS)
def test_out_overlapping_input(op, backend, rng):
    A, dense = make_csr(rng, (6, 6), np.float64)
    x = _operand(op, rng, A.shape, np.float64, k=6)
    expected = _dense_product(op, dense, x)
    result = _call(op, A, x, backend, out=x)
    assert result is x
    np.testing.assert_allclose(result, expected, rtol=1e-12)


def test_batch_layout_with_fortran_arrays_writes_out_directly(backend, rng):
    A, dense = make_csr(rng, (6, 5), np.float64)
    X = np.asfortranarray(rng.uniform(size=(4, 5)))
    out = np.asfortranarray(np.full((4, 6), np.nan))
    assert spmm(A, X, out=out, backend=backend) is out
    np.testing.assert_allclose(out, X @ dense.T, rtol=1e-12)
    result = spmm(A, X, backend=backend)
    assert result.flags.f_contiguous
    np.testing.assert_allclose(result, X @ dense.T, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3, 8, np.int64(2)])
@pytest.mark.parametrize("fmt", ["csr", "bsr4x4", "qcsr"])
def test_threads(fmt, threads, backend, rng):
    """Any thread count gives the serial result (to rounding)."""
    A, dense = make(fmt, rng, (64, 48), np.float32)
    x, X = rng.uniform(-1, 1, 48).astype(np.float32), rng.uniform(-1, 1, (48, 5))
    serial = spmv(A, x, threads=1, backend=backend)
    assert_close(spmv(A, x, threads=threads, backend=backend), serial, 10.0)
    assert_close(
        spmm(A, X, layout="features", threads=threads, backend=backend),
        spmm(A, X, layout="features", threads=1, backend=backend),
        10.0,
    )
    xt = np.ones(64, np.float32)
    assert_close(
        spmv_t(A, xt, threads=threads, backend=backend),
        spmv_t(A, xt, backend=backend),
        10.0,
    )


def test_default_threads_follow_the_work_size(backend, rng):
    assert sparse._n_threads(None, sparse.PARALLEL_MIN_WORK - 1) == 1
    assert sparse._n_threads(None, sparse.PARALLEL_MIN_WORK) == sparse._CPUS >= 1
    # an explicit count is started on at most the usable CPUs
    assert sparse._n_threads(3, 0) == min(3, sparse._CPUS)
    assert sparse._n_threads(1, 10**9) == 1
    # a product above the threshold, on the default thread count
    A, dense = make_csr(rng, (2000, 500), np.float64, per_row=20)
    X = rng.uniform(-1, 1, (500, 16))
    assert A.nnz * 16 >= sparse.PARALLEL_MIN_WORK
    np.testing.assert_allclose(
        spmm(A, X, layout="features", backend=backend),
        dense @ X,
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.skipif(not COMPILED, reason="no compiled backend here")
@pytest.mark.parametrize("compiled", COMPILED)
def test_no_hidden_copies(compiled, rng):
    """With x and out of the right dtype and layout, a compiled backend
    allocates nothing of their size."""
    # float64 as in test_default_threads: the same compiled kernels
    A, _ = make_csr(rng, (100_000, 64), np.float64, per_row=2)
    x = np.ones(64)
    out = np.empty(100_000)
    X = np.ones((64, 8))
    Y = np.empty((100_000, 8))
    spmv(A, x, out=out, backend=compiled)  # compile / warm up
    spmm(A, X, out=Y, layout="features", backend=compiled)
    tracemalloc.start()
    try:
        spmv(A, x, out=out, backend=compiled)
        spmm(A, X, out=Y, layout="features", backend=compiled)
        spmm(A, np.asfortranarray(X.T), out=np.asfortranarray(Y.T), backend=compiled)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes / 4, peak


# Formats: construction and conversions ------------------------------------------


def test_index_dtypes_are_normalised():
    data, indptr = np.ones(3), np.array([0, 2, 3])
    for indices, pointer, expected in [
        (np.array([0, 1, 1], np.int32), indptr.astype(np.int32), np.int32),
        (np.array([0, 1, 1], np.int64), indptr.astype(np.int64), np.int64),
        (np.array([0, 1, 1], np.int32), indptr.astype(np.int64), np.int32),
        (np.array([0, 1, 1], np.uint16), indptr.astype(np.uint8), np.int32),
        ([0, 1, 1], [0, 2, 3], np.int32),
    ]:
        A = CSRMatrix(data, indices, pointer, (2, 2))
        assert A.indices.dtype == A.indptr.dtype == expected
    kept = np.array([0, 1, 1], np.int32)
    A = CSRMatrix(data, kept, indptr.astype(np.int32), (2, 2))
    assert np.shares_memory(A.indices, kept) and np.shares_memory(A.data, data)


def test_from_dense_threshold(dtype, rng):
    W = rng.uniform(-1, 1, (7, 9)).astype(dtype)
    W[0, :3] = 0
    A = CSRMatrix.from_dense(W)
    assert A.nnz == np.count_nonzero(W) and A.dtype == dtype
    np.testing.assert_array_equal(A.to_dense(), W)
    B = CSRMatrix.from_dense(W, threshold=0.5)
    np.testing.assert_array_equal(B.to_dense(), np.where(np.abs(W) > 0.5, W, 0))
    assert CSRMatrix.from_dense(W, threshold=np.inf).nnz == 0
    assert CSRMatrix.from_dense(W, dtype=np.float32).dtype == np.float32
    assert A.indices.dtype == np.int32
    np.testing.assert_array_equal(
        np.diff(A.indices[A.indptr[1] : A.indptr[2]]) > 0, True
    )


@pytest.mark.parametrize("density", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_from_dense_density_keeps_the_largest(density, rng):
    W = rng.uniform(-1, 1, (8, 10))
    A = CSRMatrix.from_dense(W, density=density)
    assert A.nnz == round(density * W.size)
    kept = np.abs(A.to_dense()[A.to_dense() != 0])
    dropped = np.abs(W[A.to_dense() == 0])
    if kept.size and dropped.size:
        assert kept.min() >= dropped.max()


def test_from_dense_density_ties_go_to_earlier_entries():
    W = np.array([[1.0, -2.0, 2.0], [0.0, -2.0, 1.0]])
    A = CSRMatrix.from_dense(W, density=0.5)  # 3 of 6: the first three 2s
    np.testing.assert_array_equal(A.to_dense(), [[0, -2, 2], [0, -2, 0]])
    B = CSRMatrix.from_dense(np.zeros((2, 2)), density=0.5)  # explicit zeros
    assert B.nnz == 2
    np.testing.assert_array_equal(B.indices, [0, 1])


@pytest.mark.parametrize("blocksize", BLOCKS + ((2, 3), (1, 1)), ids=str)
def test_bsr_from_dense_and_from_csr(blocksize, dtype, rng):
    W = rng.uniform(-1, 1, (12, 12)).astype(dtype)
    W[np.abs(W) < 0.8] = 0
    W[4:8] = 0  # an empty block row
    B = BSRMatrix.from_dense(W, blocksize)
    assert B.blocksize == blocksize and B.dtype == dtype
    np.testing.assert_array_equal(B.to_dense(), W)
    assert B.fill_in == B.nnz / np.count_nonzero(W) >= 1
    if sp is not None:
        np.testing.assert_array_equal(B.to_scipy().toarray(), W)
    C = BSRMatrix.from_csr(CSRMatrix.from_dense(W), blocksize)
    np.testing.assert_array_equal(C.data, B.data)
    np.testing.assert_array_equal(C.indices, B.indices)
    np.testing.assert_array_equal(C.indptr, B.indptr)
    pruned = BSRMatrix.from_dense(W, blocksize, threshold=0.9)
    expected = CSRMatrix.from_dense(W, threshold=0.9).to_dense()
    np.testing.assert_array_equal(pruned.to_dense(), expected)


def test_bsr_from_csr_sums_repeated_unsorted_entries():
    A = CSRMatrix([1.0, 2.0, 3.0, 4.0], [3, 0, 3, 1], [0, 3, 4], (2, 4))
    B = BSRMatrix.from_csr(A, (2, 2))
    np.testing.assert_array_equal(B.to_dense(), [[2, 0, 0, 4], [0, 4, 0, 0]])
    np.testing.assert_array_equal(A.to_dense(), B.to_dense())
    assert B.fill_in == 8 / 3


def test_repeated_entries_are_summed_like_scipy(backend):
    A = CSRMatrix([1.0, 2.0, 4.0], [1, 0, 1], [0, 3, 3], (2, 2))
    if sp is not None:
        np.testing.assert_array_equal(A.to_dense(), A.to_scipy().toarray())
    np.testing.assert_array_equal(A.to_dense(), [[2, 5], [0, 0]])
    np.testing.assert_array_equal(spmv(A, [1.0, 10.0], backend=backend), [52, 0])
    np.testing.assert_array_equal(spmv_t(A, [1.0, 10.0], backend=backend), [2, 5])


@needs_scipy
def test_to_scipy_shares_memory(rng):
    A, dense = make_csr(rng, (5, 7), np.float32)
    S = A.to_scipy()
    assert isinstance(S, sp.csr_array) and S.dtype == np.float32
    assert np.shares_memory(S.data, A.data)
    np.testing.assert_allclose(S.toarray(), dense, rtol=1e-7)
    np.testing.assert_array_equal(CSRMatrix.from_scipy(S).to_dense(), A.to_dense())


# QuantizedCSR ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, index_dtype",
    [
        (1, np.uint8),
        (256, np.uint8),
        (257, np.uint16),
        (65536, np.uint16),
        (65537, np.int32),
    ],
)
def test_quantized_index_dtype(n, index_dtype, rng):
    A = CSRMatrix(rng.uniform(size=3), [n - 1, 0, n // 2], [0, 1, 2, 3], (3, n))
    Q = QuantizedCSR.from_csr(A)
    assert Q.indices.dtype == index_dtype and Q.indptr.dtype == np.int32
    assert Q.values.dtype == np.int8 and Q.scales.dtype == np.float32
    np.testing.assert_array_equal(Q.indices, A.indices)
    rows = Q.indptr.size - 1
    assert (
        Q.nbytes
        == Q.nnz * (1 + np.dtype(index_dtype).itemsize) + 4 * (rows + 1) + 4 * rows
    )
    if n <= 65536:
        assert Q.nbytes <= 3 * Q.nnz + 4 * (rows + 1) + 4 * rows


@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_quantization_error_bound(bits, dtype, rng):
    """|a_ij - scale_i q_ij| <= scale_i / 2 = max|row i| / (2 qmax)."""
    A, dense = make_csr(rng, (40, 30), dtype, per_row=12)
    A = CSRMatrix(
        A.data * np.repeat(np.logspace(-3, 3, 40), np.diff(A.indptr)).astype(dtype),
        A.indices,
        A.indptr,
        A.shape,
    )
    dense = A.to_dense().astype(np.float64)  # repeated entries summed
    Q = QuantizedCSR.from_csr(A, bits=bits)
    qmax = 2 ** (bits - 1) - 1
    assert np.abs(Q.values).max() <= qmax
    row_max = np.abs(dense).max(axis=1)
    np.testing.assert_allclose(Q.scales, row_max / qmax, rtol=1e-6)
    error = np.abs(dense - Q.to_dense().astype(np.float64))
    bound = Q.scales.astype(np.float64)[:, None] / 2
    assert (error <= bound * (1 + 1e-6) + 1e-7 * np.abs(dense)).all()
    # and the bound is not vacuous: it is reached to within a factor of 2
    if bits <= 4:
        assert (error > bound / 2).any()


def test_quantization_of_a_zero_row_and_empty_rows():
    A = CSRMatrix([0.0, 0.0, 1.0, -2.0], [0, 1, 0, 2], [0, 2, 2, 4], (3, 3))
    Q = QuantizedCSR.from_csr(A)
    np.testing.assert_array_equal(Q.scales, [0, 0, np.float32(2 / 127)])
    assert np.isfinite(Q.to_dense()).all()
    np.testing.assert_array_equal(Q.values, [0, 0, 64, -127])
    np.testing.assert_allclose(Q @ np.ones(3), [0, 0, -1.0], atol=2 / 127)
    assert not np.isnan(Q.dequantize().data).any()


def test_quantization_sums_repeated_entries_first():
    A = CSRMatrix([1.0, 1.0, 0.5], [1, 1, 0], [0, 3], (1, 2))
    Q = QuantizedCSR.from_csr(A)
    np.testing.assert_array_equal(Q.indices, [0, 1])
    np.testing.assert_allclose(Q.to_dense(), [[0.5, 2.0]], rtol=1e-2)
    assert Q.values[1] == 127


@needs_scipy
def test_quantized_from_scipy_and_dequantize(rng):
    S = sp.coo_array(_random_dense(rng, (10, 12), 0.3))
    Q = QuantizedCSR.from_csr(S)
    D = Q.dequantize()
    assert isinstance(D, CSRMatrix) and D.dtype == np.float32
    np.testing.assert_allclose(D.to_dense(), S.toarray(), atol=1 / 254)


# Validation ------------------------------------------------------------------------

GOOD = {
    "data": [1.0, 2.0, 3.0],
    "indices": [0, 2, 1],
    "indptr": [0, 2, 2, 3],
    "shape": (3, 3),
}

ERRORS = [
    ({"indices": [0, 3, 1]}, ValueError, r"indices must lie in \[0, 3\), got 3"),
    ({"indices": [0, -1, 1]}, ValueError, r"indices must lie in \[0, 3\), got -1"),
    ({"indptr": [1, 2, 2, 3]}, ValueError, "indptr must start at 0"),
    ({"indptr": [0, 2, 1, 3]}, ValueError, "indptr must never decrease"),
    ({"indptr": [0, 2, 3]}, ValueError, "indptr must have 4 entries"),
    ({"indptr": [0, 2, 2, 2]}, ValueError, "indptr must end at"),
    ({"indices": [0, 2]}, ValueError, "indices must have one entry per stored value"),
    ({"data": [[1.0, 2.0, 3.0]]}, ValueError, "data must be 1-D"),
    ({"indices": [[0, 2, 1]]}, ValueError, "indices must be 1-D"),
    ({"indices": [0.0, 2.0, 1.0]}, TypeError, "indices must hold integers"),
    ({"indptr": [0, 2, 2, 3.0]}, TypeError, "indptr must hold integers"),
    ({"data": ["a", "b", "c"]}, TypeError, "data must hold real numbers"),
    ({"data": [1j, 2, 3]}, TypeError, "data must hold real numbers"),
    ({"shape": (3, -1)}, ValueError, "shape must be >= 0"),
    ({"shape": (3,)}, ValueError, "shape must be a pair"),
    ({"shape": (3.0, 3)}, TypeError, "shape must be an integer"),
    ({"shape": 3}, TypeError, "shape must be a pair"),
    (
        {"indptr": np.array([0, 2, 2, 2**32 + 3], np.uint64)},
        ValueError,
        "indptr must end",
    ),
]


@pytest.mark.parametrize("change, error, message", ERRORS, ids=lambda c: str(c)[:40])
def test_csr_structure_errors(change, error, message):
    with pytest.raises(error, match=message):
        CSRMatrix(**{**GOOD, **change})


def test_unchecked_construction_skips_only_the_value_pass():
    bad = {**GOOD, "indices": [0, 7, 1]}
    assert CSRMatrix(**bad, check=False).nnz == 3  # unsafe, by request
    with pytest.raises(ValueError, match="indptr must have"):
        CSRMatrix(**{**GOOD, "indptr": [0, 3]}, check=False)


def test_bsr_structure_errors():
    data = np.ones((2, 2, 2))
    with pytest.raises(
        ValueError, match=r"shape \(5, 4\) must be divisible by blocksize"
    ):
        BSRMatrix(data, [0, 1], [0, 2, 2], (5, 4))
    with pytest.raises(ValueError, match="must be divisible"):
        BSRMatrix.from_dense(np.ones((6, 6)), (4, 4))
    with pytest.raises(ValueError, match="must be divisible"):
        BSRMatrix.from_csr(CSRMatrix.from_dense(np.ones((6, 6))), (4, 1))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        BSRMatrix(data, [0, 2], [0, 2, 2], (4, 4))
    with pytest.raises(ValueError, match="indptr must have 3 entries"):
        BSRMatrix(data, [0, 1], [0, 2], (4, 4))
    with pytest.raises(ValueError, match=r"data must have shape \(n_blocks, r, c\)"):
        BSRMatrix(np.ones((2, 4)), [0, 1], [0, 2, 2], (4, 4))
    with pytest.raises(ValueError, match="blocksize must be positive"):
        BSRMatrix.from_dense(np.ones((4, 4)), (0, 4))
    with pytest.raises(TypeError, match="A must be a CSRMatrix"):
        BSRMatrix.from_csr(np.ones((4, 4)))


def test_quantized_structure_errors():
    good = {
        "values": [1, -2],
        "indices": [0, 1],
        "indptr": [0, 2],
        "scales": [0.5],
        "shape": (1, 2),
    }
    for change, error, message in [
        ({"values": [1, 200]}, ValueError, r"values must lie in \[-127, 127\]"),
        ({"values": [1, -8], "bits": 4}, ValueError, r"values must lie in \[-7, 7\]"),
        ({"values": [1.0, 2.0]}, TypeError, "values must hold integers"),
        ({"bits": 9}, ValueError, "bits must be <= 8"),
        ({"bits": 1}, ValueError, "bits must be >= 2"),
        ({"scales": [0.5, 1.0]}, ValueError, r"scales must have shape \(1,\)"),
        ({"scales": [-1.0]}, ValueError, "scales must be >= 0"),
        ({"scales": [np.nan]}, ValueError, "scales must be finite"),
        ({"indices": [0, 2]}, ValueError, r"indices must lie in \[0, 2\)"),
    ]:
        with pytest.raises(error, match=message):
            QuantizedCSR(**{**good, **change})
    with pytest.raises(ValueError, match="A.data must be finite"):
        QuantizedCSR.from_csr(CSRMatrix([np.inf], [0], [0, 1], (1, 1)))
    with pytest.raises(TypeError, match="A must be a CSRMatrix"):
        QuantizedCSR.from_csr(np.eye(2))


def test_from_dense_errors():
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\]"):
        CSRMatrix.from_dense(np.ones((2, 2)), density=1.5)
    with pytest.raises(ValueError, match="density must be >= 0"):
        CSRMatrix.from_dense(np.ones((2, 2)), density=-0.1)
    with pytest.raises(ValueError, match="density must not be NaN"):
        CSRMatrix.from_dense(np.ones((2, 2)), density=np.nan)
    with pytest.raises(ValueError, match="not both"):
        CSRMatrix.from_dense(np.ones((2, 2)), threshold=0.5, density=0.5)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        CSRMatrix.from_dense(np.ones((2, 2)), threshold=-1)
    with pytest.raises(ValueError, match="W must be 2-D"):
        CSRMatrix.from_dense(np.ones(3))
    with pytest.raises(ValueError, match="W must be finite"):
        CSRMatrix.from_dense([[np.nan]])
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        CSRMatrix.from_dense(np.ones((2, 2)), dtype=np.int32)


@needs_scipy
def test_from_scipy_rejects_other_types():
    with pytest.raises(TypeError, match="scipy.sparse matrix"):
        CSRMatrix.from_scipy(np.ones((2, 2)))


def test_product_errors(backend):
    A = CSRMatrix(**GOOD)
    for call, error, message in [
        (lambda: spmv(A, np.ones(4)), ValueError, r"x must have shape \(3,\)"),
        (lambda: spmv(A, np.ones((3, 1))), ValueError, r"x must have shape \(3,\)"),
        (lambda: spmv(A, np.ones(3, complex)), TypeError, "x must hold real"),
        (lambda: spmv(np.eye(3), np.ones(3)), TypeError, "CSRMatrix.from_dense"),
        (lambda: spmv(A, np.ones(3), beta=1.0), ValueError, "out is required"),
        (lambda: spmv(A, np.ones(3), alpha=np.inf), ValueError, "alpha must be finite"),
        (
            lambda: spmv(A, np.ones(3), alpha=np.nan),
            ValueError,
            "alpha must not be NaN",
        ),
        (
            lambda: spmv(A, np.ones(3), out=np.ones(3), beta=np.inf),
            ValueError,
            "beta must be finite",
        ),
        (lambda: spmv(A, np.ones(3), alpha="2"), TypeError, "alpha must be a real"),
        (
            lambda: spmv(A, np.ones(3), out=np.ones(4)),
            ValueError,
            r"out must have shape \(3,\)",
        ),
        (
            lambda: spmv(A, np.ones(3), out=np.ones(3, np.float32)),
            ValueError,
            "out must have dtype float64",
        ),
        (
            lambda: spmv(A, np.ones(3), out=[0.0, 0.0, 0.0]),
            TypeError,
            "out must be a NumPy array",
        ),
        (lambda: spmv(A, np.ones(3), threads=0), ValueError, "threads must be >= 1"),
        (lambda: spmv(A, np.ones(3), threads=1.5), TypeError, "threads must be an int"),
        (lambda: spmv_t(A, np.ones(3), threads=0), ValueError, "threads must be >= 1"),
        (lambda: spmv_t(A, np.ones(4)), ValueError, r"x must have shape \(3,\)"),
        (
            lambda: spmm(A, np.ones((2, 4))),
            ValueError,
            r'X must have shape \(batch, 3\) for layout="batch"',
        ),
        (
            lambda: spmm(A, np.ones((2, 3)), layout="features"),
            ValueError,
            r'X must have shape \(3, batch\) for layout="features"',
        ),
        (lambda: spmm(A, np.ones(3)), ValueError, "X must have shape"),
        (lambda: spmm(A, np.ones((2, 3)), layout="rows"), ValueError, "layout must be"),
        (
            lambda: spmm(A, np.ones((2, 3)), out=np.ones((3, 2))),
            ValueError,
            r"out must have shape \(2, 3\)",
        ),
        (lambda: spmv(A, np.ones(3), backend="fortran"), ValueError, "backend must be"),
    ]:
        with pytest.raises(error, match=message):
            call()
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        spmv(A, np.ones(3), out=readonly, backend=backend)


def test_imports_without_scipy():
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "import numpy as np, kernels\n"
        "A = kernels.CSRMatrix.from_dense(np.eye(3))\n"
        "B = kernels.BSRMatrix.from_csr(A, (1, 3))\n"
        "Q = kernels.QuantizedCSR.from_csr(A)\n"
        "for M in (A, B, Q):\n"
        "    assert (kernels.spmv(M, np.ones(3)) == 1).all()\n"
        "try:\n"
        "    A.to_scipy()\n"
        "except ImportError:\n"
        "    print('ok')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_fill_in_edge_cases():
    assert BSRMatrix(np.zeros((0, 2, 2)), [], [0, 0], (2, 2)).fill_in == 1.0
    assert BSRMatrix(np.zeros((1, 2, 2)), [0], [0, 1], (2, 2)).fill_in == math.inf


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("fmt", ["csr", "bsr", "qcsr"])
def test_read_only_inputs(fmt, backend):
    """Matrices and vectors from read-only memory (np.load with mmap_mode="r")."""
    ptr = _read_only(np.array([0, 1, 2], np.int32))
    if fmt == "csr":
        A = CSRMatrix(
            _read_only([1.0, 2.0]), _read_only(np.array([0, 1], np.int32)), ptr, (2, 2)
        )
    elif fmt == "bsr":
        A = BSRMatrix(
            _read_only(np.ones((2, 1, 2))),
            _read_only(np.array([0, 0], np.int32)),
            ptr,
            (2, 2),
        )
    else:
        A = QuantizedCSR(
            _read_only(np.array([1, 2], np.int8)),
            _read_only(np.array([0, 1], np.uint8)),
            ptr,
            _read_only(np.ones(2, np.float32)),
            (2, 2),
        )
    dense = A.to_dense()
    x = _read_only(np.array([1.0, -2.0], A.dtype))
    np.testing.assert_allclose(spmv(A, x, backend=backend), dense @ x)
    np.testing.assert_allclose(spmv_t(A, x, backend=backend), dense.T @ x)
    X = _read_only(np.ones((3, 2), A.dtype))
    np.testing.assert_allclose(spmm(A, X, backend=backend), X @ dense.T)
