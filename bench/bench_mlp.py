"""Sparse MLP inference (kernels.nn.SparseMLP) against the dense model in
NumPy and in onnxruntime: the cases of ``kernels.benchmarks.nn``.

The network is LeNet-300-100 (784-300-100-10, ReLU on the hidden layers,
logits out) with random float32 weights pruned by magnitude to
``density`` in every layer; all implementations compute the same function
of a (batch, 784) float32 input, checked once against the dense float64
model:

* ours, "<backend>-<format>": ``SparseMLP.from_dense(..., fmt=format)``,
  format "csr" or "int8", ``forward(X, backend=..., threads=1)`` on the
  batch-major X (its transposing copies included);
* "dense": the NumPy a user would write, ``H = H @ W.T + b`` and an
  in-place ReLU per layer, on the pruned weights stored dense;
* "onnxruntime": the same dense model as an ONNX graph in an
  InferenceSession on one thread; skipped when onnx or onnxruntime is not
  installed.

Reported: ``time_kernel``, ``peakmem_kernel`` (setup included), and
``track_speedup_over_dense`` / ``track_speedup_over_onnxruntime``
(baseline time / this implementation's time, same input).  One thread
everywhere: BLAS pinned with threadpoolctl.
"""

from kernels.benchmarks import BACKENDS, nn

from .common import CaseBenchmark, speedup_over_peer, split_implementation

PEERS = ("dense", "onnxruntime")
OURS = tuple(f"{backend}-{fmt}" for backend in BACKENDS for fmt in ("csr", "int8"))


class MLPForward(CaseBenchmark):
    """LeNet-300-100 forward pass, one thread."""

    params = ((*OURS, *PEERS), (0.1, 0.05, 0.01), (1, 64))
    param_names = ("implementation", "density", "batch")

    def case(self, implementation, density, batch):
        backend, fmt = split_implementation(implementation)
        return nn.mlp_forward(fmt or "csr", density, batch), backend

    track_speedup_over_dense = speedup_over_peer("dense", "x faster than dense NumPy")
    track_speedup_over_onnxruntime = speedup_over_peer(
        "onnxruntime", "x faster than onnxruntime (dense)"
    )
