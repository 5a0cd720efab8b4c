"""The compression pipeline's product (kernels.compress): the digits model
that ``python -m kernels demo`` builds, against the dense model it
replaces.

``setup_cache`` runs the demo's pipeline once (seed 0, its default
options; about 10 s on the development VM) and keeps the arrays of the
deployed ``SparseMLP`` and of the dense baseline (its standardisation
folded into the first layer, so both take the raw 64-pixel input).

* ``Inference``: ``forward`` of one sample (batch 1, a 1-D input) and of a
  batch of 64, "<backend>" for the compressed model on each of our
  backends, "dense" for the NumPy a user would write on the dense model;
  ``track_speedup_over_dense``.  BLAS on one thread.
* ``Compression``: ``track_compression_ratio`` (dense float32 bytes over
  the deployed bytes) and ``track_accuracy_drop`` (percentage points of
  test accuracy lost against the dense baseline): the figures issue 5
  sets floors on (100x at no more than 1 point).
"""

import io

import numpy as np

from .common import AVAILABLE, median_seconds, single_thread_blas

try:
    from kernels import compress as pipeline
    from kernels.nn import SparseMLP
    from kernels.train import MLP
except ImportError:  # a commit from before kernels.compress
    pipeline = None

IMPLEMENTATIONS = ("cython", "numba", "numpy", "dense")
BATCHES = (1, 64)


def _build():
    if pipeline is None:
        raise NotImplementedError("kernels.compress is not in this commit")
    single_thread_blas()
    data = pipeline.load_digits()
    trained = pipeline.train_dense(data)  # the demo's baseline, trained once
    result = pipeline.compress(data, dense=trained, latency_budget=0.01)
    _, _, mean, scale = pipeline.standardised(data)
    dense = pipeline._fold_standardiser(trained[0], mean, scale)
    buffer = io.BytesIO()
    result.model.save(buffer)
    return {
        "model": buffer.getvalue(),
        "weights": dense.weights,
        "biases": dense.biases,
        "X": data.X_test,
        "ratio": result.compression_ratio,
        "drop": 100 * (result.dense_accuracy - result.accuracy),
    }


class Inference:
    params = (IMPLEMENTATIONS, BATCHES)
    param_names = ("implementation", "batch")
    timeout = 300

    def setup_cache(self):
        return _build()

    def setup(self, cache, implementation, batch):
        if implementation != "dense" and implementation not in AVAILABLE:
            raise NotImplementedError(f"backend {implementation!r} not available")
        single_thread_blas()
        X = cache["X"]
        self.x = np.ascontiguousarray(X[0] if batch == 1 else X[:batch])
        self.dense = MLP(cache["weights"], cache["biases"])
        if implementation == "dense":
            self.call = lambda: self.dense.logits(self.x)
        else:
            model = SparseMLP.load(io.BytesIO(cache["model"]), backend=implementation)
            self.call = lambda: model.forward(self.x)
        self.call()

    def time_forward(self, cache, implementation, batch):
        self.call()

    def track_speedup_over_dense(self, cache, implementation, batch):
        dense = median_seconds(lambda: self.dense.logits(self.x))
        return dense / median_seconds(self.call)

    track_speedup_over_dense.unit = "x"


class Compression:
    timeout = 300

    def setup_cache(self):
        return _build()

    def track_compression_ratio(self, cache):
        return cache["ratio"]

    track_compression_ratio.unit = "x"

    def track_accuracy_drop(self, cache):
        return cache["drop"]

    track_accuracy_drop.unit = "points"
