"""Benchmark cases of the compression pipeline's product
(``kernels.compress``): the digits model that ``python -m kernels demo``
builds, against the dense model it replaces.

``demo_models()`` runs the demo's pipeline once (seed 0, its default
options, the search included; about 30 s on the development VM) and
returns the deployed ``SparseMLP`` as a model file's bytes, the dense
baseline's arrays (its standardisation folded into the first layer, so
that both take the raw 64-pixel input), the test inputs and the
pipeline's figures.
``inference(models, batch)`` is ``forward`` of the deployed model on one
sample (batch 1, a 1-D input) or a batch, against the peer ``"dense"``,
the dense ``MLP``'s ``logits``: the NumPy a user would write (a product,
the bias, an in-place ReLU per layer).  Bytes moved, as for
``kernels.benchmarks.nn``: the model's arrays and the activations.
"""

import io
import types

import numpy as np

from kernels.benchmarks.case import Case, Peer

__all__ = ["demo_models", "inference"]


def demo_models(latency_budget=0.01):
    """The demo's pipeline, run once on the embedded digits: a dict of
    "model" (the deployed model file's bytes), "weights" and "biases" (the
    dense baseline on raw inputs), "X" (the test inputs), "ratio" (the
    compression ratio) and "drop" (percentage points of test accuracy lost
    against the dense baseline)."""
    from kernels import compress as pipeline

    data = pipeline.load_digits()
    trained = pipeline.train_dense(data)  # the demo's baseline, trained once
    result = pipeline.compress(data, dense=trained, latency_budget=latency_budget)
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


def inference(models, batch):
    """``forward`` of the deployed model of ``models`` (``demo_models()``)
    on the first test sample (``batch`` 1, 1-D) or the first ``batch``
    test samples, against the dense baseline's ``logits``."""
    from kernels.nn import SparseMLP
    from kernels.train import MLP

    X = models["X"]
    x = np.ascontiguousarray(X[0] if batch == 1 else X[:batch])
    model = SparseMLP.load(io.BytesIO(models["model"]))
    dense = MLP(models["weights"], models["biases"])
    widths = [model.in_features, *(layer.out_features for layer in model.layers)]
    samples = 1 if x.ndim == 1 else len(x)
    activations = samples * 4 * (widths[0] + 2 * sum(widths[1:-1]) + widths[-1])
    return Case(
        kernel="compressed digits model",
        shape=x.shape,
        dtype=x.dtype.name,
        setup=lambda: types.SimpleNamespace(x=x, model=model, dense=dense),
        ours=lambda a, b: a.model.forward(a.x, backend=b),
        peers={"dense": Peer("dense NumPy", lambda a: lambda: a.dense.logits(a.x))},
        bytes_moved=model.nbytes + activations,
        copy_of=None,
    )
