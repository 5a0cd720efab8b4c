"""kernels.nn: every backend and weight format against a dense float64 MLP
built independently of the package (with an error bound for int8
weights), scikit-learn's MLPClassifier as an oracle, the model file's
round trip (its own tests: test_model_file.py, test_model_npz.py), the
allocation-free forward pass, and input validation."""

import functools
import io
import json
import tracemalloc
import warnings

import numpy as np
import pytest
from _support import run_python

import kernels
from kernels.nn import SparseLinear, SparseMLP
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

BACKENDS = kernels.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
FORMATS = ("csr", "bsr", "int8")
SIZES = (20, 16, 8, 4)  # every layer divisible by 4 x 4 blocks
THRESHOLD = 0.3  # keeps about half of the N(0, 0.4^2) weights

ACTIVATE = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "identity": lambda z: z,
}


def dense_weights(sizes=SIZES, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    weights = [
        0.4 * rng.standard_normal((n_out, n_in))
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    biases = [0.2 * rng.standard_normal(n_out) if bias else None for n_out in sizes[1:]]
    return weights, biases


def pruned(weights, threshold=THRESHOLD):
    return [np.where(np.abs(W) > threshold, W, 0.0) for W in weights]


def dense_forward(X, weights, biases, activations):
    """The oracle: float64 X @ W.T + b and the activation, layer by layer."""
    h = np.asarray(X, dtype=np.float64)
    for W, b, act in zip(weights, biases, activations, strict=True):
        h = h @ np.asarray(W, dtype=np.float64).T
        if b is not None:
            h = h + b
        h = ACTIVATE[act](h)
    return h


def activations_of(model):
    return [layer.activation for layer in model.layers]


def assert_matches(actual, expected, dtype):
    """Equal to float64 rounding, or to float32 rounding of sums of O(1)
    terms."""
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-5
    scale = 1 + np.abs(expected).max(initial=0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@functools.cache
def model(fmt, hidden="relu", bias=True):
    weights, biases = dense_weights(bias=bias)
    dtype = np.float32 if fmt == "int8" else np.float64
    return SparseMLP.from_dense(
        weights, biases, activation=hidden, threshold=THRESHOLD, fmt=fmt, dtype=dtype
    )


def inputs(batch, seed=1, n=SIZES[0]):
    return np.random.default_rng(seed).standard_normal((batch, n))


# Forward pass against the dense oracle ---------------------------------------


@pytest.mark.parametrize("shape", ["1-D", "batch 1", "batch 64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_forward_matches_dense_mlp(backend, fmt, shape):
    net = model(fmt)
    X = inputs(64 if shape == "batch 64" else 1)
    if shape == "1-D":
        X = X[0]
    weights, biases = dense_weights()
    if fmt == "int8":  # the dequantised weights, then the bound below
        effective = [layer.weight.to_dense() for layer in net.layers]
    else:
        effective = pruned(weights)
    expected = dense_forward(X, effective, biases, activations_of(net))
    Y = net.forward(X, backend=backend)
    assert Y.shape == expected.shape and Y.dtype == net.dtype
    assert Y.flags.c_contiguous
    assert_matches(Y, expected, net.dtype)


@pytest.mark.parametrize("hidden", ["relu", "tanh", "sigmoid", "identity"])
def test_every_activation(backend, hidden):
    net = model("csr", hidden)
    weights, biases = dense_weights()
    X = inputs(9)
    expected = dense_forward(X, pruned(weights), biases, [hidden] * 2 + ["identity"])
    assert_matches(net.forward(X, backend=backend), expected, np.float64)


def test_int8_error_within_the_quantisation_bound(backend):
    """|y_int8 - y| is bounded by propagating the per-entry bound
    |w - s_i q| <= s_i / 2, s_i = max|row i| / 127, through the layers:
    e' = |Wq| e + B |h| with 1-Lipschitz activations."""
    net = model("int8")
    weights, biases = dense_weights()
    X = inputs(32)
    h, error = X.astype(np.float64), np.zeros_like(X, dtype=np.float64)
    for W, b, act in zip(pruned(weights), biases, activations_of(net), strict=True):
        bound = (np.abs(W).max(axis=1) / 127 / 2)[:, None] * (W != 0)
        error = error @ (np.abs(W) + bound).T + np.abs(h) @ bound.T
        h = ACTIVATE[act](h @ W.T + b)
    Y = net.forward(X, backend=backend)
    slack = 1e-5 * (1 + np.abs(h).max())  # float32 rounding
    assert (np.abs(Y - h) <= error + slack).all()
    assert np.abs(Y - h).max() > 0  # the test does measure quantisation


def test_bias_free_and_empty_layers(backend):
    """No biases; a layer pruned to nothing outputs act(bias) for every
    sample."""
    weights, biases = dense_weights(bias=False)
    net = SparseMLP.from_dense(weights, threshold=THRESHOLD)
    X = inputs(5)
    expected = dense_forward(X, pruned(weights), biases, activations_of(net))
    assert_matches(net.forward(X, backend=backend), expected, np.float64)
    weights, biases = dense_weights()
    net = SparseMLP.from_dense(weights, biases, threshold=[THRESHOLD, 1e9, THRESHOLD])
    assert net.layers[1].nnz == 0
    thresholds = [THRESHOLD, 1e9, THRESHOLD]
    effective = [pruned([W], t)[0] for W, t in zip(weights, thresholds, strict=True)]
    expected = dense_forward(X, effective, biases, activations_of(net))
    assert_matches(net.forward(X, backend=backend), expected, np.float64)
    assert np.ptp(expected, axis=0).max() == 0


def test_empty_batch_and_input_dtypes():
    net = model("csr")
    assert net.forward(np.empty((0, 20))).shape == (0, 4)
    assert net.predict(np.empty((0, 20))).shape == (0,)
    X = np.random.default_rng(2).integers(-3, 4, (6, 20))
    expected = net.forward(X.astype(np.float64))
    np.testing.assert_array_equal(net.forward(X), expected)
    np.testing.assert_array_equal(net.forward(np.asfortranarray(X)), expected)
    np.testing.assert_array_equal(net.forward(X.tolist()), expected)
    np.testing.assert_array_equal(net.forward(X[:, ::-1][:, ::-1]), expected)


# Classification --------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_proba_and_predict(backend, fmt):
    base = model(fmt)
    labels = np.array([10, 20, 30, 40])
    net = SparseMLP(base.layers, classes=labels)
    X = inputs(50, seed=3)
    logits = net.forward(X, backend=backend)
    P = net.predict_proba(X, backend=backend)
    assert P.shape == (50, 4) and P.dtype == net.dtype
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-6)
    z = logits.astype(np.float64)
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert_matches(P, softmax, net.dtype)
    np.testing.assert_array_equal(
        net.predict(X, backend=backend), labels[np.argmax(logits, axis=1)]
    )
    np.testing.assert_array_equal(
        SparseMLP(base.layers).predict(X, backend=backend), np.argmax(logits, axis=1)
    )
    assert_matches(net.predict_proba(X[7]), P[7], net.dtype)
    assert net.predict(X[7]) == net.predict(X)[7]


def test_softmax_never_overflows():
    W = CSRMatrix.from_dense(np.array([[1.0], [-1.0], [0.0]]))
    net = SparseMLP([SparseLinear(W)])
    P = net.predict_proba(np.array([[1e308], [-1e308], [1000.0]]))
    np.testing.assert_array_equal(P, [[1, 0, 0], [0, 1, 0], [1, 0, 0]])


def test_single_output_is_binary_logistic():
    W = CSRMatrix.from_dense(np.array([[1.0, -2.0]]))
    net = SparseMLP([SparseLinear(W, [0.5])], classes=["no", "yes"])
    X = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [40.0, 0.0], [0.0, 40.0]])
    z = X @ [1.0, -2.0] + 0.5
    P = net.predict_proba(X)
    p, q = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(z))
    # both computed directly: 1 - p would be 0 for z = 40.5
    np.testing.assert_allclose(P, np.stack([q, p], axis=1), rtol=1e-14, atol=0)
    np.testing.assert_array_equal(net.predict(X), ["yes", "yes", "no", "yes", "no"])
    # a sigmoid output unit already is p
    net = SparseMLP([SparseLinear(W, [0.5], activation="sigmoid")])
    np.testing.assert_allclose(net.predict_proba(X)[:, 1], p, atol=1e-15)
    np.testing.assert_array_equal(net.predict(X), [1, 1, 0, 1, 0])


# scikit-learn as the oracle --------------------------------------------------


def fitted_mlp(n_classes, activation="relu", labels=None, seed=0):
    neural_network = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((120, 10))
    y = (X[:, :n_classes] + 0.3 * rng.standard_normal((120, n_classes))).argmax(1)
    if labels is not None:
        y = np.asarray(labels)[y]
    mlp = neural_network.MLPClassifier(
        (12, 6), activation=activation, max_iter=60, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        mlp.fit(X, y)
    return mlp, X


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_from_sklearn_multiclass(activation):
    mlp, X = fitted_mlp(3, activation)
    net = SparseMLP.from_sklearn(mlp)
    assert [layer.activation for layer in net.layers][-1] == "identity"
    expected_hidden = {"logistic": "sigmoid"}.get(activation, activation)
    assert net.layers[0].activation == expected_hidden
    np.testing.assert_allclose(
        net.predict_proba(X), mlp.predict_proba(X), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_array_equal(net.predict(X), mlp.predict(X))


def test_from_sklearn_binary_with_string_labels(backend):
    mlp, X = fitted_mlp(2, "tanh", labels=["cat", "dog"])
    net = SparseMLP.from_sklearn(mlp)
    assert net.out_features == 1 and net.classes.dtype.kind == "U"
    np.testing.assert_allclose(
        net.predict_proba(X, backend=backend),
        mlp.predict_proba(X),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_array_equal(net.predict(X, backend=backend), mlp.predict(X))


def test_from_sklearn_pruned_and_quantised():
    mlp, X = fitted_mlp(3)
    net = SparseMLP.from_sklearn(mlp, fmt="int8", density=0.5)
    assert net.dtype == np.float32
    assert [layer.format for layer in net.layers] == ["int8"] * 3
    assert net.nnz == sum(round(0.5 * W.size) for W in mlp.coefs_)
    agreement = np.mean(net.predict(X) == mlp.predict(X))
    assert agreement > 0.8


def test_from_sklearn_rejects_unsupported_models():
    neural_network = pytest.importorskip("sklearn.neural_network")
    with pytest.raises(ValueError, match="not fitted"):
        SparseMLP.from_sklearn(neural_network.MLPClassifier())
    with pytest.raises(TypeError, match="MLPClassifier"):
        SparseMLP.from_sklearn(object())
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regressor = neural_network.MLPRegressor(
            hidden_layer_sizes=(4,), max_iter=5
        ).fit(X, X[:, 0])
        multilabel = neural_network.MLPClassifier(
            hidden_layer_sizes=(4,), max_iter=5
        ).fit(X, (X[:, :2] > 0).astype(int))
    with pytest.raises(ValueError, match="only classifiers"):
        SparseMLP.from_sklearn(regressor)
    with pytest.raises(ValueError, match="multilabel"):
        SparseMLP.from_sklearn(multilabel)


# Construction, properties, summary -------------------------------------------


def test_layer_properties():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((8, 12))
    csr = CSRMatrix.from_dense(W, threshold=1.0)
    layer = SparseLinear(csr, np.arange(8), "tanh")
    assert (layer.in_features, layer.out_features) == (12, 8)
    assert layer.format == "csr" and layer.nnz == csr.nnz
    assert layer.bias.dtype == np.float64
    assert layer.nbytes == csr.nbytes + 2 * 8  # exact float16 values: 2 bytes
    assert SparseLinear(csr, rng.standard_normal(8)).nbytes == csr.nbytes + 8 * 8
    quantised = SparseLinear(QuantizedCSR.from_csr(csr), np.arange(8))
    assert quantised.format == "int8" and quantised.bias.dtype == np.float32
    assert quantised.nbytes == quantised.weight.nbytes + 8 * 2
    blocked = SparseLinear(BSRMatrix.from_csr(csr, (4, 4)))
    assert blocked.format == "bsr" and blocked.bias is None
    assert blocked.nbytes == blocked.weight.nbytes


def test_model_properties_and_summary():
    net = model("int8")
    assert (net.in_features, net.out_features) == (20, 4)
    assert net.nbytes == sum(layer.nbytes for layer in net.layers)
    assert net.nnz == sum(layer.nnz for layer in net.layers)
    text = net.summary()
    weights = sum(m * n for n, m in zip(SIZES[:-1], SIZES[1:], strict=True))
    dense = 4 * (weights + sum(SIZES[1:]))
    sizes = net.sizes()
    assert sizes["dense_bytes"] == dense and sizes["dense_weights"] == weights
    assert sizes["file_bytes"] == len(saved(net))
    assert sizes["byte_ratio"] == dense / sizes["file_bytes"]
    assert sizes["parameter_ratio"] == weights / net.nnz
    assert sizes["bit_ratio"] == 32 * weights / (8 * net.nnz)
    assert f"{dense:,} bytes" in text and f"{sizes['file_bytes']:,} bytes" in text
    assert f"{dense / sizes['file_bytes']:.1f}x fewer bytes" in text
    for layer in net.layers:
        m, n = layer.weight.shape
        assert f"{m} x {n}" in text
    assert text.count("int8") == 3 and "identity" in text
    assert "SparseMLP" in repr(net) and "SparseLinear" in repr(net.layers[0])


def test_from_dense_options():
    weights, biases = dense_weights()
    net = SparseMLP.from_dense(
        weights,
        biases,
        density=[0.5, 0.25, 1.0],
        fmt=["bsr", "int8", "csr"],
        blocksize=[(4, 2), (4, 4), (2, 2)],
        bits=4,
        activation="tanh",
        output_activation="sigmoid",
    )
    assert [layer.format for layer in net.layers] == ["bsr", "int8", "csr"]
    assert net.dtype == np.float32  # an int8 layer computes in float32
    assert net.layers[0].weight.blocksize == (4, 2)
    assert net.layers[1].weight.bits == 4 and net.layers[1].nnz == 32
    assert net.layers[2].nnz == 32
    assert activations_of(net) == ["tanh", "tanh", "sigmoid"]
    # the blocked layer stores the pruned weights, zeros filling its blocks
    kept = CSRMatrix.from_dense(weights[0], density=0.5, dtype=np.float32)
    np.testing.assert_array_equal(net.layers[0].weight.to_dense(), kept.to_dense())
    mixed = SparseMLP.from_dense([w.astype(np.float32) for w in weights])
    assert mixed.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(fmt="coo"), ValueError, "fmt"),
        (dict(threshold=[0.1, 0.2]), ValueError, "threshold"),
        (dict(fmt="bsr", blocksize=(3, 3)), ValueError, "layer 0.*divisible"),
        (dict(threshold=-1.0), ValueError, "layer 0.*threshold"),
        (dict(threshold=0.1, density=0.5), ValueError, "not both"),
        (dict(activation="softmax"), ValueError, "activation"),
        (dict(classes=[1, 2]), ValueError, "classes"),
        (dict(dtype=np.int32), TypeError, "dtype"),
    ],
)
def test_from_dense_errors(kwargs, error, match):
    weights, biases = dense_weights()
    with pytest.raises(error, match=match):
        SparseMLP.from_dense(weights, biases, **kwargs)


def test_constructor_errors():
    W = CSRMatrix.from_dense(np.ones((4, 6)))
    with pytest.raises(TypeError, match="CSRMatrix"):
        SparseLinear(np.ones((4, 6)))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        SparseLinear(W, np.ones(5))
    with pytest.raises(ValueError, match="bias must be finite"):
        SparseLinear(W, [0, 0, np.nan, 0])
    with pytest.raises(ValueError, match="activation"):
        SparseLinear(W, activation="gelu")
    with pytest.raises(TypeError, match="activation"):
        SparseLinear(W, activation=None)
    bad = CSRMatrix.from_dense(np.ones((4, 6)))
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        SparseLinear(bad)
    layer = SparseLinear(W)
    with pytest.raises(ValueError, match="do not chain"):
        SparseMLP([layer, layer])
    with pytest.raises(ValueError, match="one dtype"):
        SparseMLP(
            [
                layer,
                SparseLinear(
                    QuantizedCSR.from_csr(W.__class__.from_dense(np.ones((2, 4))))
                ),
            ]
        )
    with pytest.raises(ValueError, match="at least one"):
        SparseMLP([])
    with pytest.raises(TypeError, match=r"layers\[0\]"):
        SparseMLP([W])
    with pytest.raises(ValueError, match=r"classes must have shape \(4,\)"):
        SparseMLP([layer], classes=[0, 1, 2])
    with pytest.raises(TypeError, match="classes"):
        SparseMLP([layer], classes=np.array([1, "a", None, 2.0], dtype=object))
    with pytest.raises(ValueError, match="threads"):
        SparseMLP([layer], threads=0)
    net = SparseMLP([layer])
    with pytest.raises(ValueError, match=r"X must have shape \(batch, 6\)"):
        net.forward(np.ones((3, 5)))
    with pytest.raises(ValueError, match="X must have shape"):
        net.forward(np.ones((2, 3, 6)))
    with pytest.raises(TypeError, match="X"):
        net.forward(np.ones((3, 6), dtype=complex))
    with pytest.raises(ValueError, match="backend"):
        net.forward(np.ones(6), backend="fortran")


def test_backend_and_threads_pass_through(backend):
    net = model("csr")
    X = inputs(33)
    expected = net.forward(X, backend="numpy")
    chosen = SparseMLP(net.layers, backend=backend, threads=2)
    assert_matches(chosen.forward(X), expected, np.float64)
    assert_matches(chosen.forward(X, threads=1), expected, np.float64)
    with kernels.use_backend(backend):
        assert_matches(net.forward(X), expected, np.float64)
    chosen.backend = "not-a-backend"
    with pytest.raises(ValueError, match="backend"):
        chosen.forward(X)
    assert_matches(chosen.forward(X, backend=backend), expected, np.float64)


# Buffers: no allocation after the first call per batch size ------------------


@pytest.mark.parametrize("backend_name", COMPILED or ["none compiled"])
def test_forward_allocates_only_its_result(backend_name):
    if backend_name not in COMPILED:
        pytest.skip("no compiled backend: the numpy reference allocates temporaries")
    weights, biases = dense_weights((64, 32, 16, 4))
    net = SparseMLP.from_dense(
        weights, biases, activation="sigmoid", backend=backend_name, threads=1
    )
    buffers = 8 * 500 * (64 + 32 + 16 + 4)
    net.forward(inputs(2, n=64))  # imports and first-call set-up
    for X in (inputs(1, n=64)[0], inputs(1, n=64), inputs(64, n=64), inputs(500, n=64)):
        tracemalloc.start()
        net.forward(X)
        first = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tracemalloc.start()
        out = net.forward(X)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= out.nbytes + 4096, (X.shape, peak, out.nbytes)
        if len(X) == 500:
            assert first >= buffers  # the first call did allocate the buffers


def test_buffer_cache_is_bounded_and_results_independent():
    net = model("csr")
    results = {}
    for batch in (1, 2, 3, 4, 5, 6, 1, 2):
        results.setdefault(batch, []).append(net.forward(inputs(batch, seed=batch)))
    assert len(net._buffers) == 4
    for outputs in results.values():
        np.testing.assert_array_equal(outputs[0], outputs[-1])
    first = net.forward(inputs(3, seed=0))
    kept = first.copy()
    net.forward(inputs(3, seed=9))
    np.testing.assert_array_equal(first, kept)  # not a view of a buffer
    net.clear_buffers()
    assert not net._buffers


def test_concurrent_calls_do_not_share_buffers():
    from concurrent.futures import ThreadPoolExecutor

    net = model("csr")
    X = [inputs(16, seed=s) for s in range(40)]
    expected = [net.forward(x) for x in X]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(net.forward, X))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


# Files: round trip -----------------------------------------------------------


def saved(net):
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("classes", [None, [3, 1, 4, 1.5], ["a", "b", "c", "d"]])
def test_save_load_round_trip(fmt, classes, tmp_path):
    net = SparseMLP(model(fmt).layers, classes=classes)
    path = tmp_path / "model.bin"
    net.save(path)
    assert path.exists() and not (tmp_path / "model.bin.npz").exists()
    loaded = SparseMLP.load(path)
    X = inputs(30, seed=5)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.summary() == net.summary()
    for a, b in zip(loaded.layers, net.layers, strict=True):
        assert type(a.weight) is type(b.weight) and a.weight.dtype == b.weight.dtype
    if classes is not None:
        assert loaded.classes.dtype == np.asarray(classes).dtype


def test_load_needs_neither_scipy_nor_numba(tmp_path):
    net = SparseMLP(model("int8").layers, classes=["a", "b", "c", "d"])
    net.save(tmp_path / "model.bin")
    X = inputs(10, seed=6)
    np.save(tmp_path / "X.npy", X)
    code = (
        "import sys, json\n"
        "sys.modules['scipy'] = None\n"
        "sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "from kernels.nn import SparseMLP\n"
        f"net = SparseMLP.load({str(tmp_path / 'model.bin')!r})\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        "print(json.dumps([net.predict(X).tolist(), net.predict_proba(X).tolist()]))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    labels, proba = json.loads(result.stdout)
    assert labels == net.predict(X).tolist()
    np.testing.assert_allclose(proba, net.predict_proba(X), rtol=1e-5, atol=1e-6)
