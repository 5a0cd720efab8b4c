"""Benchmark cases of sparse MLP inference (``kernels.nn.SparseMLP``)
against the dense model in NumPy and in onnxruntime.

The network is LeNet-300-100 (784-300-100-10, ReLU on the hidden layers,
logits out) with random float32 weights (He-scaled normal) and biases,
pruned by magnitude to ``density`` in every layer (``lenet_weights``).
Every implementation computes the same function of a (batch, 784) float32
input, the pruned model:

* ours: ``SparseMLP.from_dense(weights, biases, activation="relu",
  density=density, fmt=fmt)``, fmt "csr" or "int8" (``QuantizedCSR``
  weights), ``forward(X, backend=..., threads=1)`` on the batch-major X
  (its transposing copies included);
* peer ``"dense"``: the NumPy a user would write, ``H = H @ W.T + b`` and
  an in-place ReLU per layer, on the pruned weights stored dense
  (``dense_forward``);
* peer ``"onnxruntime"``: the same dense model as an ONNX graph (Gemm with
  transB=1 + Relu per layer, built with onnx.helper) in an
  InferenceSession with intra_op_num_threads=1 and inter_op_num_threads=1,
  default graph optimisations (needs onnx and onnxruntime).

Bytes moved: the model's arrays and the activations (input, the hidden
layers written and read, the logits).
"""

import itertools
import math
import types

import numpy as np

from kernels.benchmarks.case import Case, Peer

__all__ = ["LENET", "dense_forward", "lenet_weights", "mlp_forward"]

LENET = (784, 300, 100, 10)


def lenet_weights(density, seed=0):
    """float32 weights (out, in) and biases of LeNet-300-100, He-scaled
    normal, each weight matrix pruned to its ``round(density * size)``
    entries of largest magnitude, as ``SparseMLP.from_dense`` prunes (with
    continuous random values there are no ties)."""
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for n_in, n_out in itertools.pairwise(LENET):
        W = rng.standard_normal((n_out, n_in), dtype=np.float32)
        W *= np.float32(math.sqrt(2.0 / n_in))
        keep = round(density * W.size)
        magnitude = np.abs(W).reshape(-1)
        W[np.abs(W) < np.partition(magnitude, W.size - keep)[W.size - keep]] = 0
        weights.append(W)
        biases.append(rng.standard_normal(n_out, dtype=np.float32) * np.float32(0.1))
    return weights, biases


def dense_forward(X, weights, biases):
    """The dense model as a user writes it in NumPy: X @ W.T + b, ReLU."""
    H = X
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        H = H @ W.T + b
        if i < len(weights) - 1:
            np.maximum(H, 0, out=H)
    return H


def _onnx_session(weights, biases):
    """The dense model in onnxruntime, one thread: Gemm (transB=1) + Relu
    per layer, an ONNX graph built with onnx.helper."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, source = [], [], "X"
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        initializers += [
            numpy_helper.from_array(W, f"W{i}"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        last = i == len(weights) - 1
        gemm = "Y" if last else f"gemm{i}"
        inputs = [source, f"W{i}", f"b{i}"]
        nodes.append(helper.make_node("Gemm", inputs, [gemm], transB=1))
        if not last:
            source = f"relu{i}"
            nodes.append(helper.make_node("Relu", [gemm], [source]))
    graph = helper.make_graph(
        nodes,
        "lenet_300_100",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", LENET[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", LENET[-1]])],
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


def _check_logits(weights, biases, tolerance):
    """The check of a forward pass: the logits within ``tolerance`` of the
    dense float64 model's, relative to their largest magnitude."""
    weights64 = [W.astype(np.float64) for W in weights]
    biases64 = [b.astype(np.float64) for b in biases]

    def check(inputs, result):
        expected = dense_forward(inputs.X.astype(np.float64), weights64, biases64)
        error = np.max(np.abs(result - expected)) / np.max(np.abs(expected))
        if not error <= tolerance:
            raise AssertionError(f"wrong logits, relative error {error:.3g}")

    return check


def mlp_forward(fmt, density, batch):
    """LeNet-300-100's forward pass of a random (batch, 784) float32 input:
    our ``SparseMLP`` in format ``fmt`` ("csr" or "int8") on one thread,
    pruned to ``density``."""
    from kernels.nn import SparseMLP

    weights, biases = lenet_weights(density)
    model = SparseMLP.from_dense(
        weights, biases, activation="relu", density=density, fmt=fmt
    )
    activations = batch * (LENET[0] + 2 * sum(LENET[1:-1]) + LENET[-1]) * 4

    def setup():
        X = np.random.default_rng(1).standard_normal((batch, LENET[0]), np.float32)
        return types.SimpleNamespace(X=X, model=model)

    def prepare_onnx(a):
        session, feed = _onnx_session(weights, biases), {"X": a.X}
        return lambda: session.run(None, feed)[0]

    sizes = "-".join(map(str, LENET))
    # int8: a half quantisation step per weight, through three layers
    tolerance = 5e-2 if fmt == "int8" else 1e-3
    return Case(
        kernel=f"mlp {sizes} {100 * density:g}% {fmt}",
        shape=(batch, LENET[0]),
        dtype="float32",
        setup=setup,
        ours=lambda a, b: a.model.forward(a.X, backend=b, threads=1),
        peers={
            "dense": Peer(
                "dense NumPy",
                lambda a: lambda: dense_forward(a.X, weights, biases),
            ),
            "onnxruntime": Peer(
                "onnxruntime dense", prepare_onnx, ("onnx", "onnxruntime")
            ),
        },
        bytes_moved=model.nbytes + activations,
        copy_of=None,
        check=_check_logits(weights, biases, tolerance),
    )
