"""kernels.packed: deployment matrices on every backend.

Oracles, independent of the package's own decoding (``kernels._packing``):

* ``_decode``: a loop-by-loop reading of the raw arrays as the
  specification (``kernels._reference.packed``) describes the layouts and
  codecs, giving the float64 dense matrix a PackedMatrix stands for;
* the float64 product of that matrix with x (rounded to float32 once).

What each backend promises (the specification's docstring): the reference
("numpy") sums in float64 and rounds once, so it is within one float32
rounding of the exact product; the compiled backends sum in float32 in
their own order (partial sums), so they agree with the reference to float32
summation error, bounded by (n + 3) * eps32 * (|A| @ |x|); and where every
partial sum is exact (small integers, dyadic values) all of them give the
same bits.  Products always return float32 (float64 inputs are converted).
"""

import copy
import math
import pickle

import numpy as np
import pytest

import kernels
from kernels import _codes
from kernels._backend import kernels_for
from kernels.packed import CODECS, LAYOUTS, PackedMatrix, layout_bytes
from kernels.sparse import spmm, spmv, spmv_t

REF = "numpy"
BACKENDS = kernels.available_backends()
LAYOUT_NAMES = ("dense", "csr", "delta4", "delta8", "bitmask")
CODEC_NAMES = ("float32", "float16", "int8", "int4", "int2")
INTEGER = ("int8", "int4", "int2")
CONTAINER = {"float32": 32, "float16": 16, "int8": 8, "int4": 4, "int2": 2}
AUTO_ORDER = ("dense", "bitmask", "csr", "delta8", "delta4")
EPS32 = float(np.finfo(np.float32).eps)


def test_tables_cover_the_names():
    assert tuple(LAYOUTS) == LAYOUT_NAMES
    assert tuple(CODECS) == CODEC_NAMES
    assert REF in BACKENDS


# The independent oracle -------------------------------------------------------


def _field(raw, p, bits):
    """Field p of ``bits`` bits, packed little-endian in the bytes ``raw``."""
    per_byte = 8 // bits
    return (int(raw[p // per_byte]) >> ((p % per_byte) * bits)) & ((1 << bits) - 1)


def _stored_values(A):
    """The nnz stored values as Python floats (integer codecs: q)."""
    raw, count = A.values, A.nnz
    if A.codec == "float32":
        assert raw.dtype == np.float32
        return [float(v) for v in raw]
    if A.codec == "float16":
        assert raw.dtype == np.uint16
        return [float(v) for v in raw.view(np.float16)]
    if A.codec == "int8":
        assert raw.dtype == np.int8
        return [float(v) for v in raw]
    bits = CONTAINER[A.codec]
    assert raw.dtype == np.uint8 and raw.size == math.ceil(count * bits / 8)
    out = []
    for p in range(count):
        f = _field(raw, p, bits)
        out.append(float(f - (1 << bits) if f >= 1 << (bits - 1) else f))
    return out


def _stored_entries(A):
    """(row, column) of each stored entry, in value order, read from the
    raw structure arrays."""
    m, n = A.shape
    s, ptr = A.structure, A.indptr
    cells = []
    if A.layout == "dense":
        assert s.size == 0 and ptr.size == 0
        return [(i, j) for i in range(m) for j in range(n)]
    if A.layout == "bitmask":
        width = (n + 7) // 8
        assert ptr.size == 0 and s.dtype == np.uint8 and s.size == m * width
        for i in range(m):
            for j in range(n):
                if int(s[i * width + j // 8]) >> (j % 8) & 1:
                    cells.append((i, j))
        return cells
    assert ptr.dtype == np.int32 and ptr.shape == (m + 1,) and ptr[0] == 0
    for i in range(m):
        column = -1
        for p in range(int(ptr[i]), int(ptr[i + 1])):
            if A.layout == "csr":
                column = int(s[p])
            else:
                gap = int(s[p]) if A.layout == "delta8" else _field(s, p, 4)
                column += 1 + gap
            cells.append((i, column))
    return cells


def _decode(A):
    """The float64 (m, n) matrix A stands for, from its raw arrays."""
    values = _stored_values(A)
    cells = _stored_entries(A)
    assert len(values) == len(cells) == A.nnz
    D = np.zeros(A.shape)
    for (i, j), v in zip(cells, values, strict=True):
        assert 0 <= j < A.shape[1]
        D[i, j] += v * (float(A.scales[i]) if A.codec in INTEGER else 1.0)
    return D


def _nbytes_by_spec(A):
    """nbytes from the documented formula: ceil(count * value bits / 8)
    value bytes; the structure (csr count * index bytes, 1 for n <= 256, 2
    for n <= 65536, else 4; delta ceil(count * gap bits / 8); bitmask
    m * ceil(n / 8); dense none); m + 1 row pointers of 2 bytes when the
    count fits in uint16, else 4 (csr, delta); m scales of 2 bytes when
    every scale is exactly a float16, else 4 (integer codecs)."""
    m, n = A.shape
    count = A.nnz
    total = math.ceil(count * CONTAINER[A.codec] / 8)
    if A.layout == "csr":
        total += count * (1 if n <= 256 else 2 if n <= 65536 else 4)
        total += (m + 1) * (2 if count <= 65535 else 4)
    elif A.layout in ("delta4", "delta8"):
        total += math.ceil(count * int(A.layout[5:]) / 8)
        total += (m + 1) * (2 if count <= 65535 else 4)
    elif A.layout == "bitmask":
        total += m * math.ceil(n / 8)
    if A.codec in INTEGER:
        exact = all(float(np.float16(s)) == float(s) for s in A.scales)
        total += m * (2 if exact else 4)
    return total


def _random_weights(rng, shape, density=0.3, empty_rows=True):
    """A (m, n) float64 matrix with about ``density`` non-zeros, every
    third row empty (the first one kept), one row (when there are several)
    with two non-zeros 40 columns apart and none between (a long gap)."""
    m, n = shape
    W = rng.uniform(-2, 2, shape) * (rng.random(shape) < density)
    if empty_rows:
        W[1::3] = 0
    if m > 2 and n > 45:
        W[2] = 0
        W[2, [1, 42]] = (1.5, -0.75)
    return W


def _check_consistent(A):
    """A's properties against the oracle; returns the decoded matrix."""
    D = _decode(A)
    np.testing.assert_array_equal(A.to_dense(), D.astype(np.float32))
    assert A.to_dense().dtype == np.float32
    assert A.value_bits == A.nnz * CONTAINER[A.codec]
    assert A.stored_weights == int(np.count_nonzero(_stored_values(A)))
    assert A.nbytes == _nbytes_by_spec(A)
    assert A.dtype == np.float32
    return D


# 1. Products on every backend --------------------------------------------------


def _tolerance(D, x):
    """The float32 summation bound of a compiled backend: (n + 3) eps32
    (|D| @ |x|), plus half an ulp of the smallest normal."""
    n = D.shape[1]
    return (n + 3) * EPS32 * (np.abs(D) @ np.abs(x)) + 1e-38


def _assert_product(y, D, x, backend, reference=None):
    """y = D @ x to what ``backend`` promises, and to the reference."""
    x64 = np.asarray(x, np.float32).astype(np.float64)
    exact = D @ x64
    assert y.dtype == np.float32 and y.shape == exact.shape
    if backend == REF:
        # float64 sums, rounded once: one float32 rounding of the exact value
        tol = np.spacing(np.abs(exact).astype(np.float32)) + 1e-12 * (
            np.abs(D) @ np.abs(x64)
        )
    else:
        tol = _tolerance(D, x64)
    assert (np.abs(y - exact) <= tol).all(), (backend, np.abs(y - exact).max())
    if reference is not None:
        both = _tolerance(D, x64) + np.spacing(np.abs(exact).astype(np.float32))
        assert (np.abs(y.astype(np.float64) - reference) <= both).all()


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_products_match_reference_and_dense(rng, layout, codec):
    shape = (13, 61)  # n not a multiple of 8; a 40-column gap in row 2
    W = _random_weights(rng, shape)
    A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
    assert (A.layout, A.codec) == (layout, codec)
    D = _check_consistent(A)
    x = rng.standard_normal(shape[1]).astype(np.float32)
    X = rng.standard_normal((shape[1], 5)).astype(np.float32)
    y_ref = spmv(A, x, backend=REF).astype(np.float64)
    Y_ref = spmm(A, X, layout="features", backend=REF).astype(np.float64)
    for backend in BACKENDS:
        for dtype in (np.float32, np.float64):
            y = spmv(A, x.astype(dtype), backend=backend)
            _assert_product(y, D, x, backend, y_ref)
            Y = spmm(A, X.astype(dtype), layout="features", backend=backend)
            _assert_product(Y, D, X, backend, Y_ref)
            # one sample per row, and a batch of one (the matvec loops)
            Yb = spmm(A, X.T.astype(dtype), layout="batch", backend=backend)
            np.testing.assert_array_equal(Yb.T, Y)
            Y1 = spmm(A, X[:, :1].astype(dtype), layout="features", backend=backend)
            _assert_product(Y1, D, X[:, :1], backend, Y_ref[:, :1])
        with kernels.use_backend(backend):
            np.testing.assert_array_equal(A @ x, spmv(A, x, backend=backend))
            np.testing.assert_array_equal(
                A @ X, spmm(A, X, layout="features", backend=backend)
            )


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_exact_products_are_bit_identical(rng, layout, codec):
    """Small integer x and values whose products and partial sums are exact
    in float32: every backend returns the correctly rounded result."""
    shape = (9, 300)  # a csr index of 2 bytes, delta fillers
    W = _random_weights(rng, shape, density=0.2)
    W[4] = 0
    W[4, [0, 299]] = (1.0, -2.0)  # a gap longer than either delta range
    W = np.round(W * 4) / 4  # quarters: exact in float16 and float32
    if codec in INTEGER:
        qmax = 2 ** (CONTAINER[codec] - 1) - 1
        W = np.round(W / 2 * qmax)  # integers of |q| <= qmax
        W[:, -1] = qmax  # every row's scale is exactly 1
        W[1::3] = 0
    A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
    D = _check_consistent(A)
    if codec in INTEGER:
        np.testing.assert_array_equal(A.scales[D.any(axis=1)], 1.0)
    np.testing.assert_array_equal(D, W)
    x = rng.integers(-8, 9, shape[1]).astype(np.float32)
    X = rng.integers(-8, 9, (shape[1], 3)).astype(np.float32)
    expected, expected_X = (D @ x).astype(np.float32), (D @ X).astype(np.float32)
    for backend in BACKENDS:
        np.testing.assert_array_equal(spmv(A, x, backend=backend), expected)
        np.testing.assert_array_equal(
            spmv(A, x, alpha=-2.0, backend=backend), -2 * expected
        )
        np.testing.assert_array_equal(
            spmm(A, X, layout="features", backend=backend), expected_X
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_beta_and_out(rng, backend):
    W = _random_weights(rng, (11, 30))
    x = rng.standard_normal(30).astype(np.float32)
    X = rng.standard_normal((30, 4)).astype(np.float32)
    for layout in LAYOUT_NAMES:
        A = PackedMatrix.from_dense(W, layout=layout, codec="int4")
        D = _decode(A)
        y0 = rng.standard_normal(11).astype(np.float32)
        out = y0.copy()
        y = spmv(A, x, out=out, alpha=0.5, beta=-1.5, backend=backend)
        assert y is out
        expected = 0.5 * (D @ x.astype(np.float64)) - 1.5 * y0
        bound = 0.5 * _tolerance(D, x) + 4 * EPS32 * (1 + np.abs(expected))
        assert (np.abs(y - expected) <= bound).all()
        Y0 = rng.standard_normal((11, 4)).astype(np.float32)
        OUT = Y0.copy()
        Y = spmm(
            A, X, out=OUT, alpha=2.0, beta=0.25, layout="features", backend=backend
        )
        assert Y is OUT
        expected = 2.0 * (D @ X.astype(np.float64)) + 0.25 * Y0
        bound = 2 * _tolerance(D, X) + 4 * EPS32 * (1 + np.abs(expected))
        assert (np.abs(Y - expected) <= bound).all()
        # beta == 0 never reads out: NaN there does not leak
        out = np.full(11, np.nan, np.float32)
        assert np.isfinite(spmv(A, x, out=out, backend=backend)).all()


ACTIVATIONS = {
    _codes.ACTIVATION_IDENTITY: lambda v: v,
    _codes.ACTIVATION_RELU: lambda v: np.maximum(v, 0),
    _codes.ACTIVATION_TANH: np.tanh,
    _codes.ACTIVATION_SIGMOID: lambda v: 0.5 * np.tanh(v / 2) + 0.5,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 4])
def test_layer_kernel(rng, backend, k):
    """packed_layer: activation(A @ X + bias[:, None]) in float32."""
    W = _random_weights(rng, (10, 27))
    X = rng.standard_normal((27, k)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    layer = kernels_for("packed", backend).packed_layer
    for layout in LAYOUT_NAMES:
        for codec in ("float16", "int8", "int2"):
            A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
            D = _decode(A)
            pre = D @ X.astype(np.float64) + bias[:, None]
            bound = _tolerance(D, X) + 4 * EPS32 * (1 + np.abs(pre))
            for activation, f in ACTIVATIONS.items():
                Y = np.full((10, k), np.nan, np.float32)
                layer(*A._arrays, bias, X, activation, Y, 1)
                # every activation here is 1-Lipschitz
                assert (np.abs(Y - f(pre)) <= bound + 4 * EPS32).all(), (
                    layout,
                    codec,
                    activation,
                )


# Quantisation ----------------------------------------------------------------


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("scales", ["auto", "float16", "float32"])
def test_integer_quantisation_error_within_half_a_step(rng, bits, scales):
    W = rng.standard_normal((12, 40)) * np.logspace(-3, 3, 12)[:, None]
    W[3] = 0
    W[5, :] = 0.5  # every weight at the row's maximum
    W[7, 1] = -1e-6  # a tiny row
    A = PackedMatrix.from_dense(W, codec="int", bits=bits, scales=scales, layout="csr")
    assert A.codec == ("int2" if bits <= 2 else "int4" if bits <= 4 else "int8")
    assert A.bits == bits
    D = _check_consistent(A)
    qmax = 2 ** (bits - 1) - 1
    step = A.scales.astype(np.float64)
    largest = np.abs(W).max(axis=1)
    assert (step * qmax >= largest * (1 - 1e-7)).all()  # no clipping beyond
    ideal = largest / qmax
    half = ideal.astype(np.float16)
    normal = (ideal == 0) | (half >= np.finfo(np.float16).tiny)
    if scales == "float32" or (scales == "auto" and not normal.all()):
        np.testing.assert_array_equal(A.scales, ideal.astype(np.float32))
    else:
        # rounded up to a float16, by at most a float16 ulp
        np.testing.assert_array_equal(A.scales, A.scales.astype(np.float16))
        assert (step >= ideal.astype(np.float32)).all()
        assert (step - ideal <= np.spacing(half).astype(np.float64)).all()
    error = np.abs(W - D)
    assert (error <= step[:, None] / 2 * (1 + 1e-6) + 1e-30).all()
    np.testing.assert_array_equal(np.abs(_stored_values(A)) <= qmax, True)
    assert A.scales[3] == 0 and not D[3].any()


def test_float_codecs_store_rounded_values(rng):
    W = rng.standard_normal((6, 20)) * 100
    W[W < -50] = 0
    A16 = PackedMatrix.from_dense(W, layout="bitmask", codec="float16")
    np.testing.assert_array_equal(_decode(A16), W.astype(np.float16))
    A32 = PackedMatrix.from_dense(W, layout="bitmask", codec="float32")
    np.testing.assert_array_equal(_decode(A32), W.astype(np.float32))
    # error within half a float16 ulp
    assert (np.abs(W - _decode(A16)) <= np.spacing(np.float16(np.abs(W))) / 2).all()
    assert A16.scales.size == A32.scales.size == 0 and A16.bits is None


def test_pruning_and_weights_that_round_to_zero(rng):
    W = rng.standard_normal((8, 16))
    A = PackedMatrix.from_dense(W, layout="csr", threshold=0.5)
    D = _check_consistent(A)
    np.testing.assert_array_equal(D, np.where(np.abs(W) > 0.5, W, 0).astype(np.float32))
    A = PackedMatrix.from_dense(W, layout="csr", density=0.25)
    assert A.nnz == A.stored_weights == 32
    # int2 keeps only the weights that round to +-1: the rest are not stored
    A = PackedMatrix.from_dense(W, layout="csr", codec="int2")
    D = _check_consistent(A)
    assert A.nnz == A.stored_weights == np.count_nonzero(D)
    # but the dense layout stores every slot
    A = PackedMatrix.from_dense(W, layout="dense", codec="int2")
    assert A.nnz == W.size and A.stored_weights == np.count_nonzero(_decode(A))


def test_from_dense_rejects_bad_input():
    W = np.ones((2, 3))
    for bad in (
        dict(W=np.ones(3)),
        dict(W=np.array([[1.0, np.nan]])),
        dict(W=W, codec="int"),
        dict(W=W, codec="int", bits=9),
        dict(W=W, codec="int4", bits=5),
        dict(W=W, codec="int3"),
        dict(W=W, layout="coo"),
        dict(W=W, density=1.5),
        dict(W=W, density=0.5, threshold=0.1),
        dict(W=W, codec="int8", scales="float64"),
        dict(W=np.array([[7e4]]), codec="float16"),
        dict(W=np.array([[1e39]]), codec="float32"),
        dict(W=np.array([[1e39]]), codec="int8"),
    ):
        with pytest.raises(ValueError):
            PackedMatrix.from_dense(**bad)


def test_float16_scales_never_round_up_to_infinity():
    """A row whose scale lies just under the largest float16 rounds it up
    (so that |w| / scale <= qmax) past 65504: that is inf, so "auto" keeps
    float32 scales and "float16" refuses."""
    W = np.array([[65504.5 * 127, 1.0]])
    A = PackedMatrix.from_dense(W, codec="int8")
    assert np.isfinite(A.scales).all() and A.scales.dtype == np.float32
    assert abs(float(A.to_dense()[0, 0]) - W[0, 0]) <= float(A.scales[0]) / 2
    with pytest.raises(ValueError):
        PackedMatrix.from_dense(W, codec="int8", scales="float16")


# 2. Edge cases ---------------------------------------------------------------


def _check_all_backends(A, rng=None):
    """Products of every backend against the oracle (random x, k = 1, 3)."""
    rng = np.random.default_rng(0) if rng is None else rng
    m, n = A.shape
    D = _check_consistent(A)
    x = rng.standard_normal(n).astype(np.float32)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    for backend in BACKENDS:
        _assert_product(spmv(A, x, backend=backend), D, x, backend)
        _assert_product(spmm(A, X, layout="features", backend=backend), D, X, backend)
    return D


@pytest.mark.parametrize("codec", ["int4", "int2"])
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_value_counts_that_do_not_fill_the_last_byte(rng, layout, codec):
    for count in range(1, 10):
        W = np.zeros((1, count + 2))
        W[0, :count] = rng.choice([-1.0, 1.0, 0.5, -0.5], count)
        W[0, 0] = 1
        A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
        per_byte = 8 // CONTAINER[codec]
        assert A.values.size == -(-A.nnz // per_byte)
        D = _check_all_backends(A, rng)
        assert np.abs(D - W).max() <= A.scales[0] / 2 * (1 + 1e-6)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_empty_rows(rng, layout):
    W = _random_weights(rng, (7, 19), density=0.5)
    W[[0, 3, 6]] = 0  # first, middle and last rows empty
    for codec in CODEC_NAMES:
        A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
        D = _check_all_backends(A, rng)
        assert not D[[0, 3, 6]].any()
        if layout in ("csr", "delta4", "delta8"):
            assert (np.diff(A.indptr)[[0, 3, 6]] == 0).all()
        if layout == "bitmask":  # an all-zero row is all-zero bytes
            width = math.ceil(19 / 8)
            rows = A.structure.reshape(7, width)
            assert not rows[[0, 3, 6]].any()


@pytest.mark.parametrize(
    "columns, counts",
    [
        ((0, 300), {"delta4": 2 + 18, "delta8": 2 + 1}),  # gap 299
        ((15,), {"delta4": 1, "delta8": 1}),  # leading gap 15: fits 4 bits
        ((16,), {"delta4": 2, "delta8": 1}),  # leading gap 16: one filler
        ((0, 16, 33), {"delta4": 4, "delta8": 3}),  # gaps 15, 16
        ((255,), {"delta4": 16, "delta8": 1}),  # gap 255 fits 8 bits
        ((256,), {"delta4": 17, "delta8": 2}),  # gap 256: one 8-bit filler
        ((3, 301), {"delta4": 2 + 18, "delta8": 2 + 1}),  # at the last column
    ],
)
def test_gaps_longer_than_the_delta_range(rng, columns, counts):
    n = 302
    W = np.zeros((3, n))
    W[1, list(columns)] = rng.uniform(0.5, 1, len(columns))
    W[2, 5] = 1.0
    for layout, count in counts.items():
        for codec in ("float32", "int4", "int2"):
            A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
            assert np.diff(A.indptr).tolist() == [0, count, 1]
            # fillers: value 0, the full gap; real entries as W
            values = np.asarray(_stored_values(A)[:count])
            assert np.count_nonzero(values) == len(columns)
            assert A.stored_weights == len(columns) + 1
            assert A.nnz == count + 1
            D = _check_all_backends(A, rng)
            assert np.array_equal(D != 0, W != 0)


def test_one_by_one(rng):
    for layout in LAYOUT_NAMES:
        for codec in CODEC_NAMES:
            for w in (-0.75, 0.0):
                A = PackedMatrix.from_dense([[w]], layout=layout, codec=codec)
                assert A.shape == (1, 1)
                D = _check_all_backends(A, rng)
                if codec in INTEGER:  # q = +-qmax, the scale rounded up
                    assert abs(D[0, 0] - w) <= A.scales[0] / 2
                else:
                    assert D[0, 0] == w


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_empty_shapes(shape):
    m, n = shape
    for layout in (*LAYOUT_NAMES, "auto"):
        for codec in CODEC_NAMES:
            A = PackedMatrix.from_dense(np.zeros(shape), layout=layout, codec=codec)
            assert A.shape == shape and A.nnz == A.stored_weights == 0
            _check_consistent(A)
            assert A.scales.shape == ((m,) if codec in INTEGER else (0,))
            for backend in BACKENDS:
                y = spmv(A, np.ones(n), backend=backend)
                assert y.shape == (m,) and y.dtype == np.float32 and not y.any()
                Y = spmm(A, np.ones((n, 3)), layout="features", backend=backend)
                assert Y.shape == (m, 3) and not Y.any()
                Y = spmm(A, np.ones((n, 0)), layout="features", backend=backend)
                assert Y.shape == (m, 0)


def test_all_zero_matrix(rng):
    for layout in (*LAYOUT_NAMES, "auto"):
        for codec in CODEC_NAMES:
            A = PackedMatrix.from_dense(np.zeros((5, 12)), layout=layout, codec=codec)
            assert A.stored_weights == 0
            if codec in INTEGER:
                np.testing.assert_array_equal(A.scales, 0)
            D = _check_all_backends(A, rng)
            assert not D.any()
    assert PackedMatrix.from_dense(np.zeros((5, 12))).layout == "bitmask"


@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 63])
def test_bitmask_widths(rng, n):
    W = _random_weights(rng, (5, n), density=0.6)
    W[0, -1] = 1.0  # the last column, in the last (partial) byte
    for codec in ("float32", "int8", "int2"):
        A = PackedMatrix.from_dense(W, layout="bitmask", codec=codec)
        assert A.structure.size == 5 * math.ceil(n / 8)
        if n % 8:  # padding bits clear
            last = A.structure.reshape(5, -1)[:, -1]
            assert not (last >> (n % 8)).any()
        _check_all_backends(A, rng)


@pytest.mark.parametrize(
    "n, dtype",
    [(256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.int32)],
)
def test_csr_index_width(rng, n, dtype):
    W = np.zeros((3, n))
    W[0, [0, n - 1]] = (1.0, -2.0)
    W[2, rng.integers(0, n, 20)] = rng.uniform(-1, 1, 20)
    for codec in ("float32", "int8"):
        A = PackedMatrix.from_dense(W, layout="csr", codec=codec)
        assert A.structure.dtype == dtype and A.index_code == np.dtype(dtype).itemsize
        assert A.indices.max() == n - 1
        D = np.zeros(W.shape)
        rows = np.repeat(np.arange(3), np.diff(A.indptr))
        for i, j in zip(rows, A.indices, strict=True):
            D[i, j] = 1
        assert np.array_equal(D != 0, W != 0)
        x = rng.standard_normal(n).astype(np.float32)
        exact = A.to_dense().astype(np.float64) @ x
        for backend in BACKENDS:
            y = spmv(A, x, backend=backend)
            assert np.abs(y - exact).max() <= 1e-5


def test_row_pointers_past_uint16():
    """More than 65535 stored entries: 4-byte row pointers in nbytes."""
    W = np.ones((2, 40000))
    W[1, ::2] = -1
    A = PackedMatrix.from_dense(W, layout="csr", codec="int2")
    assert A.nnz == 80000 and A.indptr[-1] == 80000
    assert A.nbytes == 80000 // 4 + 80000 * 2 + 3 * 4 + 2 * 2 == _nbytes_by_spec(A)
    x = np.ones(40000, np.float32)
    for backend in BACKENDS:
        np.testing.assert_array_equal(spmv(A, x, backend=backend), [40000.0, 0.0])


# 3. layout="auto" ------------------------------------------------------------


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.3, 0.6, 0.9, 1.0])
def test_auto_picks_the_fewest_bytes(rng, density):
    for shape in ((16, 300), (24, 10), (3, 1000)):
        W = rng.standard_normal(shape) * (rng.random(shape) < density)
        for codec in CODEC_NAMES:
            auto = PackedMatrix.from_dense(W, codec=codec)
            sizes = {
                name: PackedMatrix.from_dense(W, layout=name, codec=codec).nbytes
                for name in LAYOUT_NAMES
            }
            assert auto.nbytes == min(sizes.values())
            # ties go to the first of dense, bitmask, csr, delta8, delta4
            best = [name for name in AUTO_ORDER if sizes[name] == auto.nbytes]
            assert auto.layout == best[0], (sizes, auto.layout)
            explicit = PackedMatrix.from_dense(W, layout=auto.layout, codec=codec)
            for name in ("values", "structure", "indptr", "scales"):
                np.testing.assert_array_equal(
                    getattr(auto, name), getattr(explicit, name)
                )
            # layout_bytes: the same comparison, scales aside
            scale_bytes = auto.nbytes - layout_bytes(W, codec)[auto.layout]
            assert layout_bytes(W, codec) == {
                name: size - scale_bytes for name, size in sizes.items()
            }


# 4. Size accounting ------------------------------------------------------------


def test_nbytes_by_hand():
    """A 3 x 10 matrix with 4 non-zeros (that int2 keeps too): row 0
    columns 0 and 9, row 1 none, row 2 columns 2 and 3.  By the documented formula:
    dense 30 values; csr 4 values, 4 one-byte indices, 4 uint16 pointers;
    delta4 4 values, 4 gaps in 2 bytes, 4 pointers; delta8 4 values, 4 gap
    bytes, 4 pointers; bitmask 4 values, 3 rows of 2 bytes."""
    W = np.zeros((3, 10))
    W[0, 0], W[0, 9], W[2, 2], W[2, 3] = 1.0, -1.0, 0.75, 1.0
    expected = {
        "dense": {"float32": 120, "float16": 60, "int8": 30, "int4": 15, "int2": 8},
        "csr": {
            "float32": 16 + 4 + 8,
            "float16": 8 + 12,
            "int8": 4 + 12,
            "int4": 2 + 12,
            "int2": 1 + 12,
        },
        "delta4": {
            "float32": 16 + 2 + 8,
            "float16": 8 + 10,
            "int8": 4 + 10,
            "int4": 2 + 10,
            "int2": 1 + 10,
        },
        "delta8": {
            "float32": 16 + 4 + 8,
            "float16": 8 + 12,
            "int8": 4 + 12,
            "int4": 2 + 12,
            "int2": 1 + 12,
        },
        "bitmask": {
            "float32": 16 + 6,
            "float16": 8 + 6,
            "int8": 4 + 6,
            "int4": 2 + 6,
            "int2": 1 + 6,
        },
    }
    for layout, by_codec in expected.items():
        for codec, size in by_codec.items():
            A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
            scales = 3 * 2 if codec in INTEGER else 0  # exact float16 scales
            assert A.nbytes == size + scales, (layout, codec)
            assert A.nnz == (30 if layout == "dense" else 4)
            assert A.stored_weights == 4
            assert A.value_bits == A.nnz * CONTAINER[codec]
    # float32 scales (not float16-exact) take 4 bytes each
    W[0, 0] = 1.0 + 2**-20
    A = PackedMatrix.from_dense(W, layout="csr", codec="int8", scales="float32")
    assert A.scales[0] != np.float16(A.scales[0])
    assert A.nbytes == 4 + 4 + 8 + 3 * 4


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_nbytes_by_formula(rng, layout):
    for shape in ((9, 70), (4, 300), (1, 3)):
        W = _random_weights(rng, shape, density=0.4)
        for codec in CODEC_NAMES:
            for scales in ("auto", "float32"):
                if codec not in INTEGER and scales != "auto":
                    continue
                A = PackedMatrix.from_dense(
                    W, layout=layout, codec=codec, scales=scales
                )
                assert A.nbytes == _nbytes_by_spec(A)
                n_values = {"dense": W.size}.get(layout, A.nnz)
                assert A.values.nbytes == math.ceil(n_values * CONTAINER[codec] / 8)
                assert A.value_bits == A.nnz * CONTAINER[codec]
                assert A.stored_weights == np.count_nonzero(_decode(A))
                assert A.density == A.nnz / W.size


# 5. Validation -----------------------------------------------------------------


def _f32(*v):
    return np.array(v, np.float32)


def _u8(*v):
    return np.array(v, np.uint8)


def _build(
    layout, codec, shape, values, structure=None, indptr=None, scales=None, bits=None
):
    return PackedMatrix(layout, codec, shape, values, structure, indptr, scales, bits)


INVALID = {
    # structure
    "csr column past n": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 3), [0, 1, 2]),
    "csr negative column": (
        "csr",
        "float32",
        (1, 70000),
        _f32(1),
        np.array([-5], np.int32),
        [0, 1],
    ),
    "csr column past n (int32)": (
        "csr",
        "float32",
        (1, 70000),
        _f32(1),
        np.array([70000], np.int32),
        [0, 1],
    ),
    "indptr decreasing": (
        "csr",
        "float32",
        (3, 3),
        _f32(1, 2),
        _u8(0, 1),
        [0, 2, 1, 2],
    ),
    "indptr not from 0": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 1), [1, 1, 2]),
    "indptr negative": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 1), [0, -1, 2]),
    "indptr too short": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 1), [0, 2]),
    "indptr too long": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 1), [0, 1, 2, 2]),
    "indptr 2-D": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 1), [[0, 1, 2]]),
    "indptr past int32": ("csr", "float32", (1, 3), _f32(1, 2), _u8(0, 1), [0, 2**40]),
    "indptr missing": ("csr", "float32", (2, 3), _f32(1, 2), _u8(0, 1)),
    "delta indptr missing": ("delta8", "float32", (1, 3), _f32(1), _u8(0)),
    "indptr past the values": ("csr", "float32", (2, 3), _f32(1), _u8(0, 1), [0, 1, 2]),
    "structure shorter than indptr": (
        "csr",
        "float32",
        (2, 3),
        _f32(1, 2),
        _u8(0),
        [0, 1, 2],
    ),
    "delta4 gaps past n": ("delta4", "float32", (1, 3), _f32(1, 2), _u8(0x21), [0, 2]),
    "delta8 gaps past n": ("delta8", "float32", (1, 3), _f32(1, 2), _u8(1, 1), [0, 2]),
    "delta8 gap past n, next row": (
        "delta8",
        "float32",
        (2, 3),
        _f32(1, 2),
        _u8(0, 3),
        [0, 1, 2],
    ),
    "delta4 structure too long": (
        "delta4",
        "float32",
        (1, 3),
        _f32(1, 2),
        _u8(0, 0),
        [0, 2],
    ),
    "bitmask padding bit": ("bitmask", "float32", (1, 3), _f32(1), _u8(8)),
    "bitmask padding bit, row 2": (
        "bitmask",
        "float32",
        (2, 10),
        _f32(1, 2),
        _u8(1, 0, 0, 4),
    ),
    "bitmask count != values": ("bitmask", "float32", (1, 3), _f32(1, 2), _u8(1)),
    "bitmask too many bytes": ("bitmask", "float32", (1, 3), _f32(1), _u8(1, 0)),
    "bitmask with indptr": ("bitmask", "float32", (1, 3), _f32(1), _u8(1), [0, 1]),
    "dense with structure": ("dense", "float32", (1, 1), _f32(1), _u8(1)),
    "dense with indptr": ("dense", "float32", (1, 1), _f32(1), None, [0, 1]),
    "dense values too few": ("dense", "float32", (2, 2), _f32(1, 2, 3)),
    "dense int4 values too many": (
        "dense",
        "int4",
        (1, 3),
        _u8(0, 0, 0),
        None,
        None,
        _f32(1),
    ),
    # values
    "values 2-D": ("dense", "float32", (1, 2), np.ones((1, 2), np.float32)),
    "float32 NaN": ("dense", "float32", (1, 2), _f32(1, np.nan)),
    "float32 inf": ("dense", "float32", (1, 2), _f32(1, -np.inf)),
    "float16 inf": ("dense", "float16", (1, 2), np.array([0x7C00, 0], np.uint16)),
    "float16 NaN": ("dense", "float16", (1, 1), np.array([0x7E00], np.uint16)),
    "int8 -128": (
        "dense",
        "int8",
        (1, 2),
        np.array([-128, 0], np.int8),
        None,
        None,
        _f32(1),
    ),
    "int8 bits=3, q=4": (
        "dense",
        "int8",
        (1, 1),
        np.array([4], np.int8),
        None,
        None,
        _f32(1),
        3,
    ),
    "int4 -8": ("dense", "int4", (1, 1), _u8(8), None, None, _f32(1)),
    "int4 bits=3, q=-4": ("dense", "int4", (1, 1), _u8(0xC), None, None, _f32(1), 3),
    "int2 -2": ("dense", "int2", (1, 1), _u8(2), None, None, _f32(1)),
    "int2 -2 in field 3": ("dense", "int2", (1, 4), _u8(0x80), None, None, _f32(1)),
    # scales
    "negative scale": ("dense", "int8", (1, 1), _u8(1), None, None, _f32(-1)),
    "NaN scale": ("dense", "int8", (1, 1), _u8(1), None, None, _f32(np.nan)),
    "infinite scale": ("dense", "int8", (1, 1), _u8(1), None, None, _f32(np.inf)),
    "scales missing": ("dense", "int8", (1, 1), _u8(1)),
    "scales too many": ("dense", "int8", (1, 1), _u8(1), None, None, _f32(1, 1)),
    "scales of a float codec": (
        "dense",
        "float32",
        (1, 1),
        _f32(1),
        None,
        None,
        _f32(1),
    ),
    # codes and parameters
    "bits of a float codec": ("dense", "float32", (1, 1), _f32(1), None, None, None, 8),
    "bits past the container": (
        "dense",
        "int4",
        (1, 1),
        _u8(1),
        None,
        None,
        _f32(1),
        5,
    ),
    "bits 1": ("dense", "int2", (1, 1), _u8(1), None, None, _f32(1), 1),
    "unknown layout": ("coo", "float32", (1, 1), _f32(1)),
    "unknown codec": ("dense", "int3", (1, 1), _f32(1)),
    "negative shape": ("dense", "float32", (-1, 1), _f32()),
    "3-D shape": ("dense", "float32", (1, 1, 1), _f32(1)),
}

WRONG_DTYPES = {
    "float64 values": ("dense", "float32", (1, 2), np.ones(2)),
    "list values": ("dense", "float32", (1, 1), [1.0]),
    "float16 values as float16": ("dense", "float16", (1, 1), np.ones(1, np.float16)),
    "int4 values as int8": (
        "dense",
        "int4",
        (1, 1),
        np.ones(1, np.int8),
        None,
        None,
        _f32(1),
    ),
    "csr int32 index for n = 3": (
        "csr",
        "float32",
        (2, 3),
        _f32(1, 2),
        np.array([0, 1], np.int32),
        [0, 1, 2],
    ),
    "csr uint8 index for n = 300": (
        "csr",
        "float32",
        (1, 300),
        _f32(1),
        _u8(0),
        [0, 1],
    ),
    "delta structure uint16": (
        "delta8",
        "float32",
        (1, 3),
        _f32(1),
        np.zeros(1, np.uint16),
        [0, 1],
    ),
    "float indptr": (
        "csr",
        "float32",
        (2, 3),
        _f32(1, 2),
        _u8(0, 1),
        np.array([0.0, 1, 2]),
    ),
    "string scales": ("dense", "int8", (1, 1), _u8(1), None, None, ["a"]),
    "float shape": ("dense", "float32", (1.5, 1), _f32(1)),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_arrays_raise_value_error(name):
    with pytest.raises(ValueError):
        _build(*INVALID[name])


@pytest.mark.parametrize("name", WRONG_DTYPES)
def test_wrong_dtypes_raise_type_error(name):
    """A raw array of the wrong dtype is a TypeError (as everywhere in the
    package: the constructor converts nothing)."""
    with pytest.raises(TypeError):
        _build(*WRONG_DTYPES[name])


def test_constructor_round_trip(rng):
    W = _random_weights(rng, (7, 50))
    for layout in LAYOUT_NAMES:
        for codec in CODEC_NAMES:
            A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
            B = PackedMatrix(
                layout,
                codec,
                A.shape,
                A.values,
                A.structure,
                A.indptr,
                A.scales,
                A.bits,
            )
            assert (B.layout, B.codec, B.bits, B.nnz) == (
                A.layout,
                A.codec,
                A.bits,
                A.nnz,
            )
            assert B.nbytes == A.nbytes
            np.testing.assert_array_equal(B.to_dense(), A.to_dense())
            # int8 values are accepted as int8 or as their uint8 bytes
            if codec == "int8":
                C = PackedMatrix(
                    layout,
                    codec,
                    A.shape,
                    A.values.view(np.uint8),
                    A.structure,
                    A.indptr,
                    A.scales,
                )
                np.testing.assert_array_equal(C.to_dense(), A.to_dense())


def test_csr_repeated_columns_are_summed():
    A = _build("csr", "float32", (2, 4), _f32(1, 2, 4), _u8(3, 3, 0), [0, 2, 3])
    D = _check_all_backends(A)
    np.testing.assert_array_equal(D, [[0, 0, 0, 3], [4, 0, 0, 0]])


def test_corrupted_arrays_raise_or_work(rng):
    """Random bytes flipped in valid arrays: the constructor either raises
    ValueError or builds a matrix whose products match its oracle (never a
    crash, never an out-of-bounds read)."""
    W = _random_weights(rng, (6, 40), density=0.4)
    x = rng.standard_normal(40).astype(np.float32)
    accepted = rejected = 0
    for layout in LAYOUT_NAMES:
        for codec in ("float16", "int4", "int2"):
            A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
            arrays = {
                "values": A._values,
                "structure": A.structure,
                "indptr": A.indptr,
                "scales": A.scales,
            }
            for _ in range(12):
                name = rng.choice([k for k, v in arrays.items() if v.size])
                bad = {k: v.copy() for k, v in arrays.items()}
                raw = bad[name].view(np.uint8)
                raw[rng.integers(raw.size)] ^= np.uint8(1 << rng.integers(8))
                try:
                    B = PackedMatrix(
                        layout,
                        codec,
                        A.shape,
                        bad["values"],
                        bad["structure"],
                        bad["indptr"],
                        bad["scales"],
                        A.bits,
                    )
                except ValueError:
                    rejected += 1
                    continue
                accepted += 1
                D = _decode(B)
                # a flipped scale bit can make a row overflow float32
                finite = np.abs(D) @ np.abs(x) < 1e30
                for backend in BACKENDS:
                    with np.errstate(over="ignore"):
                        y = spmv(B, x, backend=backend)
                    _assert_product(y[finite], D[finite], x, backend)
    assert accepted and rejected


def test_product_argument_errors(rng):
    A = PackedMatrix.from_dense(_random_weights(rng, (4, 6)), layout="csr")
    for backend in BACKENDS:
        for x in (np.ones(5), np.ones(7), np.ones(4), np.ones((6, 1, 1))):
            with pytest.raises(ValueError):
                spmv(A, x, backend=backend)
        with pytest.raises(ValueError):
            spmm(A, np.ones((5, 3)), layout="features", backend=backend)
        with pytest.raises(ValueError):
            spmm(A, np.ones((3, 5)), layout="batch", backend=backend)
        with pytest.raises(ValueError):
            spmv(A, np.ones(6), out=np.ones(5, np.float32), backend=backend)
        with pytest.raises(ValueError):
            spmv(A, np.ones(6), out=np.ones(4), backend=backend)  # float64 out
        with pytest.raises(ValueError):
            A @ np.ones(5)
        # no transposed product for deployment matrices
        with pytest.raises(TypeError, match="PackedMatrix"):
            spmv_t(A, np.ones(4), backend=backend)


# 6. Pickling and copies ----------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_pickle_and_copy(rng, layout):
    W = _random_weights(rng, (5, 20))
    x = rng.standard_normal(20).astype(np.float32)
    for codec in ("float16", "int4"):
        A = PackedMatrix.from_dense(W, layout=layout, codec=codec)
        spmv(A, x)  # products leave nothing behind that a pickle needs
        for B in (pickle.loads(pickle.dumps(A)), copy.copy(A), copy.deepcopy(A)):
            assert type(B) is PackedMatrix and B.shape == A.shape
            assert (B.layout, B.codec, B.bits, B.nnz, B.nbytes) == (
                A.layout,
                A.codec,
                A.bits,
                A.nnz,
                A.nbytes,
            )
            for name in ("values", "structure", "indptr", "scales"):
                np.testing.assert_array_equal(getattr(B, name), getattr(A, name))
            np.testing.assert_array_equal(B.to_dense(), A.to_dense())
            for backend in BACKENDS:
                np.testing.assert_array_equal(
                    spmv(B, x, backend=backend), spmv(A, x, backend=backend)
                )
        deep = copy.deepcopy(A)
        assert not np.shares_memory(deep.values, A.values)
        assert repr(A).startswith("PackedMatrix(shape=(5, 20)")
        assert f"layout={layout!r}" in repr(A)
