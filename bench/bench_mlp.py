"""Sparse MLP inference (kernels.nn.SparseMLP) against the dense model in
NumPy and in onnxruntime.

The network is LeNet-300-100 (784-300-100-10, ReLU on the hidden layers,
logits out) with random float32 weights (He-scaled normal) and biases,
pruned by magnitude to ``density`` in every layer.  All implementations
compute the same function of a (batch, 784) float32 input, the pruned
model:

* ours, "<backend>-<format>": ``SparseMLP.from_dense(weights, biases,
  activation="relu", density=density, fmt=format)``, format "csr" or
  "int8" (``QuantizedCSR`` weights), ``forward(X, backend=..., threads=1)``
  on the batch-major X (its transposing copies included);
* "dense": the NumPy a user would write, ``H = H @ W.T + b`` and an
  in-place ReLU per layer, on the pruned weights stored dense;
* "onnxruntime": the same dense model as an ONNX graph (Gemm with
  transB=1 + Relu per layer, built here with onnx.helper) in an
  InferenceSession with intra_op_num_threads=1 and inter_op_num_threads=1,
  default graph optimisations; skipped when onnx or onnxruntime is not
  installed.

Reported: ``time_forward``, ``peakmem_forward`` (setup included), and
``track_speedup_over_dense`` / ``track_speedup_over_onnxruntime`` (baseline
time / this implementation's time, same input).  One thread everywhere:
BLAS pinned with threadpoolctl.
"""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from .common import AVAILABLE, median_seconds, single_thread_blas, skip

try:
    from kernels.nn import SparseMLP
except ImportError:  # a commit from before kernels.nn: every row of ours skips
    SparseMLP = None

LAYERS = (784, 300, 100, 10)
BACKENDS = ("cython", "numba", "numpy")
OURS = tuple(f"{backend}-{fmt}" for backend in BACKENDS for fmt in ("csr", "int8"))
IMPLEMENTATIONS = (*OURS, "dense", "onnxruntime")
DENSITIES = (0.1, 0.05, 0.01)
BATCHES = (1, 64)


def lenet_weights(density, seed=0):
    """float32 weights (out, in) and biases of LeNet-300-100, each weight
    matrix pruned to ``round(density * size)`` entries of largest magnitude
    (the rule of ``SparseMLP.from_dense(density=...)``; with continuous
    random values there are no ties)."""
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for n_in, n_out in zip(LAYERS[:-1], LAYERS[1:], strict=True):
        W = rng.standard_normal((n_out, n_in), dtype=np.float32)
        W *= np.float32(np.sqrt(2.0 / n_in))
        keep = round(density * W.size)
        flat = np.abs(W).reshape(-1)
        cut = np.partition(flat, flat.size - keep)[flat.size - keep]
        W[np.abs(W) < cut] = 0
        weights.append(W)
        biases.append(rng.standard_normal(n_out, dtype=np.float32) * np.float32(0.1))
    return weights, biases


def dense_forward(X, weights, biases):
    """The dense model in plain NumPy."""
    H = X
    last = len(weights) - 1
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        H = H @ W.T + b
        if i < last:
            np.maximum(H, 0, out=H)
    return H


def onnx_session(weights, biases):
    """An onnxruntime session of the dense model: Gemm(transB=1) + Relu per
    layer, one thread.  Skips when onnx or onnxruntime is missing."""
    try:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        skip(f"onnx / onnxruntime not installed: {exc}")
    nodes, initializers = [], []
    source = "X"
    last = len(weights) - 1
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        initializers += [
            numpy_helper.from_array(W, f"W{i}"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        gemm = "Y" if i == last else f"gemm{i}"
        nodes.append(
            helper.make_node("Gemm", [source, f"W{i}", f"b{i}"], [gemm], transB=1)
        )
        if i < last:
            nodes.append(helper.make_node("Relu", [gemm], [f"relu{i}"]))
            source = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "lenet_300_100",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", LAYERS[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", LAYERS[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def mlp_forward(implementation, density, batch):
    """A call computing the logits of a random (batch, 784) input with
    ``implementation``, checked once against the dense float64 model."""
    weights, biases = lenet_weights(density)
    X = np.random.default_rng(1).standard_normal((batch, LAYERS[0]), dtype=np.float32)
    if implementation == "dense":

        def run():
            return dense_forward(X, weights, biases)

    elif implementation == "onnxruntime":
        session = onnx_session(weights, biases)
        feed = {"X": X}

        def run():
            return session.run(None, feed)[0]

    else:
        backend, _, fmt = implementation.partition("-")
        if SparseMLP is None:
            skip("kernels.nn is not in this version")
        if backend not in AVAILABLE:
            skip(f"backend {backend!r} is not available here")
        model = SparseMLP.from_dense(
            weights, biases, activation="relu", density=density, fmt=fmt
        )

        def run():
            return model.forward(X, backend=backend, threads=1)

    expected = dense_forward(
        X.astype(np.float64),
        [W.astype(np.float64) for W in weights],
        [b.astype(np.float64) for b in biases],
    )
    # int8: a half quantisation step per weight, through three layers
    tolerance = 5e-2 if implementation.endswith("int8") else 1e-3
    error = np.max(np.abs(run() - expected)) / np.max(np.abs(expected))
    if not error <= tolerance:
        raise AssertionError(f"{implementation}: wrong logits, relative error {error}")
    return run


class MLPForward:
    """LeNet-300-100 forward pass, one thread."""

    params = (IMPLEMENTATIONS, DENSITIES, BATCHES)
    param_names = ("implementation", "density", "batch")

    def setup(self, implementation, density, batch):
        single_thread_blas()
        self.run = mlp_forward(implementation, density, batch)
        self.run()  # warm-up: JIT compilation, buffers of this batch size

    def time_forward(self, implementation, density, batch):
        self.run()

    def peakmem_forward(self, implementation, density, batch):
        self.run()

    def _speedup_over(self, baseline, implementation, density, batch):
        if implementation == baseline:
            raise SkipNotImplemented(f"the {baseline} baseline's speed-up over itself")
        try:
            run = mlp_forward(baseline, density, batch)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from None
        run()
        return median_seconds(run) / median_seconds(self.run)

    def track_speedup_over_dense(self, implementation, density, batch):
        return self._speedup_over("dense", implementation, density, batch)

    track_speedup_over_dense.unit = "x faster than dense NumPy"

    def track_speedup_over_onnxruntime(self, implementation, density, batch):
        return self._speedup_over("onnxruntime", implementation, density, batch)

    track_speedup_over_onnxruntime.unit = "x faster than onnxruntime (dense)"
