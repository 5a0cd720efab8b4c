"""The one-sample path of SparseMLP (forward, predict, predict_proba on 1-D
input or a batch of one): on the cython backend, the compiled
whole-network plan (kernels._cy.sparse.MLPPlan), which must give the bits
of the layer-by-layer batch path and agree with the numpy reference; on
the other backends, the layer-by-layer path.  Random models of every
format and dtype combination, with width-1 and empty layers and every
activation.

The layer-by-layer path of a batch of one is reached with ``threads=2``:
the plan serves one thread only, and the threaded layer kernels sum each
row with the same loop (so the same bits whether OpenMP is built or not)."""

import threading
import tracemalloc

import numpy as np
import pytest
from test_sparse import make

import kernels
from kernels._backend import kernels_for
from kernels._codes import ACTIVATION_NAMES as ACTIVATIONS
from kernels.nn import SparseLinear, SparseMLP
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

BACKENDS = kernels.available_backends()
HAS_CYTHON = "cython" in BACKENDS
needs_cython = pytest.mark.skipif(not HAS_CYTHON, reason="no cython backend")
LAYER_FORMATS = ("csr", "bsr", "int8")
# widths with a width-1 layer; every BSR layer picks blocks that divide it
WIDTHS = (12, 8, 1, 16, 4)


def _blocks(shape):
    for r, c in ((4, 4), (4, 1), (1, 4), (2, 2), (1, 1)):
        if shape[0] % r == 0 and shape[1] % c == 0:
            return r, c


def _empty_weight(fmt, shape, dtype, index_dtype):
    """A weight with no stored entries (the layer outputs act(bias))."""
    m, n = shape
    if fmt == "int8":
        return QuantizedCSR(
            np.empty(0, np.int8),
            np.empty(0, index_dtype),
            np.zeros(m + 1, index_dtype),
            np.zeros(m, np.float32),
            shape,
        )
    if fmt == "bsr":
        r, c = _blocks(shape)
        return BSRMatrix(
            np.empty((0, r, c), dtype),
            np.empty(0, index_dtype),
            np.zeros(m // r + 1, index_dtype),
            shape,
        )
    return CSRMatrix(
        np.empty(0, dtype),
        np.empty(0, index_dtype),
        np.zeros(m + 1, index_dtype),
        shape,
    )


def _weight(rng, fmt, shape, dtype, index_dtype):
    if fmt == "int8":
        return make("qcsr", rng, shape, np.float32, index_dtype)[0]
    if fmt == "bsr":
        r, c = _blocks(shape)
        return make(f"bsr{r}x{c}", rng, shape, dtype, index_dtype)[0]
    return make("csr", rng, shape, dtype, index_dtype)[0]


def random_model(
    rng,
    formats,
    dtype,
    widths=WIDTHS,
    activations=("relu", "tanh", "sigmoid", "identity"),
    index_dtype=np.int32,
    empty=(),
    classes=None,
):
    """A model of len(widths) - 1 layers, layer i in formats[i % len] with
    activation activations[i % len] (float32 whenever a layer is int8);
    the layers in ``empty`` store nothing; every other layer has a bias."""
    if "int8" in formats:
        dtype = np.float32
    layers = []
    for i, shape in enumerate(zip(widths[1:], widths[:-1], strict=True)):
        fmt = formats[i % len(formats)]
        if i in empty:
            weight = _empty_weight(fmt, shape, dtype, index_dtype)
        else:
            weight = _weight(rng, fmt, shape, dtype, index_dtype)
        bias = rng.uniform(-1, 1, shape[0]) if i % 3 != 1 else None
        layers.append(SparseLinear(weight, bias, activations[i % len(activations)]))
    return SparseMLP(layers, classes=classes)


def assert_reference(actual, expected, dtype):
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-5
    scale = 1 + np.abs(expected).max(initial=0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def samples(rng, n, count=5):
    """Inputs of mixed magnitudes, for the model's dtype to be chosen by
    the caller."""
    return [rng.standard_normal(n) * 10.0 ** rng.uniform(-2, 2) for _ in range(count)]


MODELS = [
    pytest.param(formats, dtype, id=f"{'-'.join(formats)}-{np.dtype(dtype).name}")
    for formats in (("csr",), ("bsr",), ("int8",), ("csr", "bsr", "int8"))
    for dtype in ((np.float32,) if "int8" in formats else (np.float32, np.float64))
]


# Results ---------------------------------------------------------------------


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize(("formats", "dtype"), MODELS)
def test_one_sample_is_the_batch_path_and_the_reference(
    formats, dtype, index_dtype, backend, rng
):
    """1-D forward on every backend equals that backend's batch path bit
    for bit (the compiled plan on cython runs the layer kernels' loops),
    and the numpy reference to rounding; an empty layer and a width-1 layer
    included."""
    net = random_model(rng, formats, dtype, index_dtype=index_dtype, empty=(2,))
    net.backend = backend
    assert net.layers[2].nnz == 0 and net.layers[1].out_features == 1
    for x in samples(rng, net.in_features):
        x = x.astype(net.dtype)
        y = net.forward(x)
        assert y.shape == (net.out_features,) and y.dtype == net.dtype
        assert y.flags.c_contiguous and y.flags.writeable and y.flags.owndata
        np.testing.assert_array_equal(y, net.forward(x[None], threads=2)[0])
        assert_reference(y, net.forward(x, backend="numpy"), net.dtype)
    assert backend in net._plans  # the backend's plan did serve these calls


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("formats", "dtype"), MODELS)
def test_every_activation(formats, dtype, activation, rng):
    net = random_model(rng, formats, dtype, activations=(activation,))
    for x in samples(rng, net.in_features):
        x = x.astype(net.dtype)
        y = net.forward(x)
        np.testing.assert_array_equal(y, net.forward(x[None], threads=2)[0])
        assert_reference(y, net.forward(x, backend="numpy"), net.dtype)


@pytest.mark.parametrize("fmt", LAYER_FORMATS)
def test_single_layer_of_width_one_and_all_empty(fmt, rng):
    for widths in ((1, 1), (5, 1), (1, 6)):
        for empty in ((), (0,)):
            net = random_model(rng, (fmt,), np.float64, widths=widths, empty=empty)
            x = rng.standard_normal(widths[0]).astype(net.dtype)
            np.testing.assert_array_equal(
                net.forward(x), net.forward(x[None], threads=2)[0]
            )


@pytest.mark.parametrize("index_dtype", [np.uint16, np.int32])
def test_wide_quantised_indices(index_dtype, rng):
    """uint16 column indices (n > 256) and int32 ones (n > 65536)."""
    n = 300 if index_dtype == np.uint16 else 65_537
    W = np.zeros((6, n))
    W[rng.integers(0, 6, 40), rng.integers(0, n, 40)] = rng.uniform(-1, 1, 40)
    W[:, n - 1] = 0.5  # the last column used
    net = SparseMLP.from_dense([W, rng.uniform(-1, 1, (3, 6))], fmt="int8")
    assert net.layers[0].weight.indices.dtype == index_dtype
    x = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), net.forward(x[None], threads=2)[0])
    assert_reference(net.forward(x), net.forward(x, backend="numpy"), np.float32)


def test_wide_layers_take_heap_scratch(rng):
    """Layers wider than the plan's stack scratch, and enough work to
    release the GIL."""
    net = random_model(rng, ("csr",), np.float64, widths=(40, 3000, 10))
    x = rng.standard_normal(40)
    np.testing.assert_array_equal(net.forward(x), net.forward(x[None], threads=2)[0])
    assert net.predict(x) == net.predict(x[None], threads=2)[0]


# Inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(("formats", "dtype"), MODELS)
def test_input_dtypes_and_layouts(formats, dtype, rng):
    """float64 input to a float32 model (and the reverse) is converted once,
    as the batch path converts; strided and reversed views are gathered;
    other real dtypes and array-likes take the general path."""
    net = random_model(rng, formats, dtype)
    n = net.in_features
    x64 = rng.standard_normal(2 * n) * 3
    expected = net.forward(x64[None, ::2])[0]
    for x in (x64[::2], x64[::2].copy(), x64[::2].astype(np.float32)):
        want = net.forward(x.astype(net.dtype)[None])[0]
        np.testing.assert_array_equal(net.forward(x), want)
    np.testing.assert_array_equal(net.forward(x64[::2]), expected)
    reversed_x = x64[: 2 * n : 2][::-1]
    np.testing.assert_array_equal(
        net.forward(reversed_x), net.forward(reversed_x.copy()[None])[0]
    )
    integers = rng.integers(-3, 4, n)
    want = net.forward(integers.astype(np.float64)[None])[0]
    for x in (integers, integers.tolist(), integers.astype(np.float16)):
        np.testing.assert_array_equal(net.forward(x), want)
    assert net.forward(x64[::2]).dtype == net.dtype


def test_input_is_not_modified_or_kept():
    net = random_model(np.random.default_rng(0), ("csr",), np.float32)
    x = np.random.default_rng(1).standard_normal(net.in_features).astype(np.float32)
    kept = x.copy()
    y = net.forward(x)
    np.testing.assert_array_equal(x, kept)
    assert not np.shares_memory(x, y)
    x.setflags(write=False)  # read-only input is fine
    np.testing.assert_array_equal(net.forward(x), y)


def test_wrong_shapes_and_types_are_errors():
    net = random_model(np.random.default_rng(0), ("int8",), np.float32)
    n = net.in_features
    for x in (np.ones(n + 1, np.float32), np.ones(0, np.float32), np.ones(n - 1)):
        for call in (net.forward, net.predict, net.predict_proba):
            with pytest.raises(ValueError, match=rf"X must have shape \(batch, {n}\)"):
                call(x)
    with pytest.raises(TypeError, match="X"):
        net.forward(np.ones(n, dtype=complex))
    with pytest.raises(TypeError, match="X"):
        net.predict(np.array(["a"] * n))
    with pytest.raises(ValueError, match="backend"):
        net.forward(np.ones(n, np.float32), backend="fortran")
    with pytest.raises(ValueError, match="threads"):
        net.forward(np.ones(n, np.float32), threads=0)


def test_nan_and_inf_inputs():
    rng = np.random.default_rng(3)
    net = random_model(rng, ("csr",), np.float64, activations=("identity",))
    for value in (np.nan, np.inf, -np.inf):
        x = rng.standard_normal(net.in_features)
        x[::3] = value
        np.testing.assert_array_equal(
            net.forward(x), net.forward(x[None], threads=2)[0]
        )
        assert net.predict(x) == net.predict(x[None], threads=2)[0]
        with np.errstate(invalid="ignore", over="ignore"):
            np.testing.assert_array_equal(
                net.predict_proba(x), net.predict_proba(x[None], threads=2)[0]
            )


# Classification --------------------------------------------------------------


@pytest.mark.parametrize(("formats", "dtype"), MODELS)
def test_predict_and_predict_proba(formats, dtype, backend, rng):
    """The one-sample results are the batch results, bit for bit, with the
    batch results' types: class labels, or np.intp indices."""
    widths = (12, 8, 7)
    for classes in (None, np.array(list("abcdefg")), np.arange(7) * 10):
        net = random_model(rng, formats, dtype, widths=widths, classes=classes)
        net.backend = backend
        for x in samples(rng, net.in_features):
            label = net.predict(x)
            assert label == net.predict(x[None], threads=2)[0]
            assert type(label) is type(net.predict(x[None], threads=2)[0])
            P = net.predict_proba(x)
            np.testing.assert_array_equal(P, net.predict_proba(x[None], threads=2)[0])
            assert P.dtype == net.dtype and P.shape == (7,)
        if classes is None:
            assert type(net.predict(x)) is np.intp


def test_predict_argmax_ties_and_nan():
    """Ties go to the first maximum and NaN wins, as np.argmax."""
    W = CSRMatrix.from_dense(np.array([[1.0, 0], [0, 1.0], [1.0, 0], [0, 0]]))
    net = SparseMLP([SparseLinear(W, activation="identity")])
    assert net.predict(np.array([2.0, 1.0])) == 0
    assert net.predict(np.array([1.0, 2.0])) == 1
    assert net.predict(np.array([-1.0, -2.0])) == 3
    assert net.predict(np.array([1.0, np.nan])) == 1
    assert net.predict(np.array([np.nan, np.nan])) == 0
    for x in ([2.0, 1.0], [1.0, np.nan], [-np.inf, -np.inf]):
        x = np.array(x)
        assert net.predict(x) == np.argmax(net.forward(x))


@pytest.mark.parametrize("activation", ["identity", "sigmoid", "relu"])
def test_single_output(activation):
    """One output: class 1 when p > 0.5 (output > 0 for logits)."""
    W = CSRMatrix.from_dense(np.array([[1.0, -2.0]]))
    net = SparseMLP([SparseLinear(W, np.array([0.25]), activation)], classes=["n", "y"])
    for x in ([1.0, 0.0], [0.0, 1.0], [-0.25, 0.0], [0.5, 0.5], [np.nan, 0]):
        x = np.array(x)
        assert net.predict(x) == net.predict(x[None], threads=2)[0]
        with np.errstate(invalid="ignore"):  # sigmoid(NaN)
            np.testing.assert_array_equal(
                net.predict_proba(x), net.predict_proba(x[None], threads=2)[0]
            )


def test_softmax_of_extreme_logits_never_warns():
    W = CSRMatrix.from_dense(np.array([[1.0], [-1.0], [0.0]]), dtype=np.float32)
    net = SparseMLP([SparseLinear(W)])
    for value in (3e38, -3e38, 1000.0):
        x = np.array([value], np.float32)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            P = net.predict_proba(x)
        np.testing.assert_array_equal(P, net.predict_proba(x[None], threads=2)[0])
        assert np.isclose(P.sum(), 1)


# Dispatch: which calls take the plan -----------------------------------------


def test_plan_serves_one_thread_one_sample(monkeypatch, backend):
    """Each backend's plan serves the one-thread one-sample calls on that
    backend (a batch of one included), and only those."""
    rng = np.random.default_rng(5)
    net = random_model(rng, ("csr",), np.float64)
    x = rng.standard_normal(net.in_features)
    expected = net.forward(x[None], threads=2, backend=backend)[0]
    net.forward(x, threads=2, backend=backend)
    net.forward(x[None], threads=2, backend=backend)
    net.forward(np.stack([x, x]), backend=backend)
    assert not net._plans
    np.testing.assert_array_equal(
        net.forward(x[None], threads=1, backend=backend), expected[None]
    )
    assert list(net._plans) == [backend]  # a batch of one takes the plan
    net._plans.clear()
    with kernels.use_backend(backend):
        np.testing.assert_array_equal(net.forward(x, threads=1), expected)
        plan = net._plans[backend]
        np.testing.assert_array_equal(net.forward(x), expected)
    np.testing.assert_array_equal(net.forward(x, backend=backend.upper()), expected)
    assert net._plans == {backend: plan}  # built once, under the canonical name

    def refuse(*args):
        raise AssertionError("the plan was used")

    monkeypatch.setitem(net._plans, backend, type("Refuse", (), {"forward": refuse})())
    net.threads = 2
    np.testing.assert_array_equal(net.forward(x, backend=backend), expected)
    net.threads = None
    with pytest.raises(AssertionError, match="the plan was used"):
        net.forward(x, backend=backend)


def test_plan_holds_its_arrays(backend):
    """The plan keeps every array alive after the model is gone, and sees
    values modified in place (as the layer kernels do)."""
    import gc

    rng = np.random.default_rng(6)
    net = random_model(rng, ("csr", "int8"), np.float32)
    x = rng.standard_normal(net.in_features).astype(np.float32)
    expected = net.forward(x, backend=backend)
    plan = net._plans[backend]
    layer = net.layers[0]
    del net
    gc.collect()
    np.testing.assert_array_equal(plan.forward(x), expected)
    layer.weight.data[:] *= 2
    assert not np.array_equal(plan.forward(x), expected)
    with pytest.raises(ValueError):
        layer.weight.data.resize(1)  # a held buffer: cannot be resized


COMBINATIONS = (
    [("csr", v, i, i) for v in (np.float32, np.float64) for i in (np.int32, np.int64)]
    + [("bsr", v, i, i) for v in (np.float32, np.float64) for i in (np.int32, np.int64)]
    + [
        ("int8", np.int8, i, p)
        for i in (np.uint8, np.uint16, np.int32)
        for p in (np.int32, np.int64)
    ]
)


@pytest.mark.parametrize(
    ("fmt", "values", "indices", "indptr"),
    COMBINATIONS,
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_plan_every_dtype_combination(fmt, values, indices, indptr, backend, rng):
    """Each array dtype combination the layer kernels take (int64 indptr of
    int8 weights too, which QuantizedCSR only builds past 2**31 entries):
    a two-layer plan gives the bits of the layer kernels at batch 1."""
    module = kernels_for("sparse", backend)
    dtype = np.float32 if fmt == "int8" else values
    kernel = getattr(
        module, {"csr": "csr_layer", "bsr": "bsr_layer"}.get(fmt, "qcsr_layer")
    )
    layers, weights = [], []
    for shape, activation in (((8, 12), 2), ((4, 8), 3)):
        A = _weight(rng, fmt, shape, dtype, np.int32)
        arrays = [a.copy() for a in A._arrays]
        arrays[1] = arrays[1].astype(indices)
        arrays[2] = arrays[2].astype(indptr)
        bias = rng.uniform(-1, 1, shape[0]).astype(dtype)
        layers.append((fmt, shape, (*arrays, bias), activation))
        weights.append((arrays, bias, activation))
    plan = module.MLPPlan(layers)
    x = rng.standard_normal(12).astype(dtype)
    H = x[:, None].copy()
    for arrays, bias, activation in weights:
        Y = np.empty((len(bias), 1), dtype)
        kernel(*arrays, bias, H, activation, Y, 1)
        H = Y
    np.testing.assert_array_equal(plan.forward(x), H[:, 0])
    assert plan.classify(x, 0.0) == np.argmax(H[:, 0])


@needs_cython
def test_plan_constructor_checks():
    from kernels._cy.sparse import MLPPlan

    f32, i32 = np.float32, np.int32
    csr = (np.ones(2, f32), np.array([0, 1], i32), np.array([0, 1, 2], i32))
    ok = ("csr", (2, 3), (*csr, np.zeros(2, f32)), 1)
    plan = MLPPlan([ok])
    assert (plan.in_features, plan.out_features, plan.dtype) == (3, 2, f32)
    assert plan.forward(np.ones(4, f32)) is None  # not its shape
    assert plan.forward(np.ones((1, 3), f32)) is None
    assert plan.forward(np.ones(3, np.int64)) is None  # the caller converts
    assert plan.classify(np.ones(4, f32), 0.0) == -1
    with pytest.raises(ValueError, match="at least one"):
        MLPPlan([])
    with pytest.raises(TypeError, match="float32 or float64"):
        MLPPlan([("csr", (2, 3), (*csr, np.zeros(2)), 1)])  # float64 bias
    with pytest.raises(ValueError, match="chain"):
        MLPPlan([ok, ok])
    with pytest.raises(ValueError, match="bias"):
        MLPPlan([("csr", (2, 3), (*csr, np.zeros(3, f32)), 1)])
    with pytest.raises(ValueError, match="do not fit"):
        MLPPlan([("csr", (3, 3), (*csr, np.zeros(3, f32)), 1)])
    with pytest.raises(ValueError, match="activation"):
        MLPPlan([("csr", (2, 3), (*csr, np.zeros(2, f32)), 4)])
    with pytest.raises(ValueError, match="format"):
        MLPPlan([("coo", (2, 3), (*csr, np.zeros(2, f32)), 1)])
    f64 = ("csr", (2, 2), (np.ones(2), *csr[1:], np.zeros(2)), 0)
    with pytest.raises(ValueError, match="one dtype"):
        MLPPlan([ok, f64])


# Allocation and threads ------------------------------------------------------


@needs_cython
def test_one_sample_allocates_only_its_result():
    """No activation buffers (4000 bytes for the hidden layer here): the
    result, and NumPy's small temporaries for predict_proba's softmax."""
    rng = np.random.default_rng(7)
    net = random_model(rng, ("int8",), np.float32, widths=(64, 1000, 10))
    x = rng.standard_normal(net.in_features).astype(np.float32)
    for call in (net.forward, net.predict, net.predict_proba):
        call(x)
        tracemalloc.start()
        out = call(x)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= np.asarray(out).nbytes + 2048, (call.__name__, peak)
    assert not net._buffers  # no batch buffers either


@pytest.mark.parametrize("widths", [(12, 8, 1, 16, 4), (64, 2000, 10)], ids=str)
def test_concurrent_one_sample_calls(widths, backend):
    """Threads calling one model at once (on the plan: scratch per call; the
    wide model releases the GIL) get each its own result."""
    rng = np.random.default_rng(9)
    net = random_model(rng, ("csr", "int8"), np.float32, widths=widths)
    net.backend = backend
    X = [x.astype(np.float32) for x in samples(rng, net.in_features, count=24)]
    expected = [(net.forward(x), net.predict(x), net.predict_proba(x)) for x in X]
    errors = []
    start = threading.Barrier(4)

    def work(offset):
        start.wait()
        for repeat in range(30):
            i = (offset + repeat) % len(X)
            y, label, P = net.forward(X[i]), net.predict(X[i]), net.predict_proba(X[i])
            want = expected[i]
            if not (
                np.array_equal(y, want[0])
                and label == want[1]
                and np.array_equal(P, want[2])
            ):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
