"""The compression pipeline's product (kernels.compress): the digits model
that ``python -m kernels demo`` builds, against the dense model it
replaces (``kernels.benchmarks.compress``).

``setup_cache`` runs the demo's pipeline once (seed 0, its default
options, the search included; about 30 s on the development VM) and
keeps the arrays of the deployed ``SparseMLP`` and of the dense baseline
(its standardisation folded into the first layer, so both take the raw
64-pixel input).

* ``Inference``: ``forward`` of one sample (batch 1, a 1-D input) and of a
  batch of 64, "<backend>" for the compressed model on each of our
  backends, "dense" for the NumPy a user would write on the dense model;
  ``time_kernel`` and ``track_speedup_over_dense``.  BLAS on one thread.
* ``Compression``: ``track_compression_ratio`` (dense float32 bytes over
  the deployed bytes) and ``track_accuracy_drop`` (percentage points of
  test accuracy lost against the dense baseline): the figures issue 5
  sets floors on (100x at no more than 1 point).
* ``ModelFile``: ``track_file_bytes``, the bytes of the model file the
  demo deploys ("compressed": whatever ``SparseMLP.save`` writes, in the
  format of the commit measured) against the dense baseline's ("dense":
  its float32 weights and biases in an uncompressed .npz, ``np.savez``,
  the file a user of the dense model ships).

The three classes share one ``setup_cache`` (asv keys it by the function,
so the pipeline runs once per commit, not once per class).
"""

import io

import numpy as np

from kernels.benchmarks import BACKENDS, compress

from .common import CaseBenchmark, speedup_over_peer


def demo_models(self):
    """The ``setup_cache`` of every class here: the demo's models."""
    return compress.demo_models()


class Inference(CaseBenchmark):
    params = ((*BACKENDS, "dense"), (1, 64))
    param_names = ("implementation", "batch")
    timeout = 300
    setup_cache = demo_models

    def case(self, models, implementation, batch):
        return compress.inference(models, batch), implementation

    track_speedup_over_dense = speedup_over_peer("dense", "x")


class Compression:
    timeout = 300
    setup_cache = demo_models

    def track_compression_ratio(self, cache):
        return cache["ratio"]

    track_compression_ratio.unit = "x"

    def track_accuracy_drop(self, cache):
        return cache["drop"]

    track_accuracy_drop.unit = "points"


class ModelFile:
    """The deployed model's file against the dense baseline's."""

    params = (("compressed", "dense"),)
    param_names = ("model",)
    timeout = 300
    setup_cache = demo_models

    def track_file_bytes(self, cache, model):
        if model == "compressed":
            return len(cache["model"])
        buffer = io.BytesIO()
        np.savez(buffer, *cache["weights"], *cache["biases"])
        return len(buffer.getvalue())

    track_file_bytes.unit = "bytes"
