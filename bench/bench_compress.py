"""The compression pipeline's product (kernels.compress): the digits model
that ``python -m kernels demo`` builds, against the dense model it
replaces (``kernels.benchmarks.compress``).

``setup_cache`` runs the demo's pipeline once (seed 0, its default
options; about 10 s on the development VM) and keeps the arrays of the
deployed ``SparseMLP`` and of the dense baseline (its standardisation
folded into the first layer, so both take the raw 64-pixel input).

* ``Inference``: ``forward`` of one sample (batch 1, a 1-D input) and of a
  batch of 64, "<backend>" for the compressed model on each of our
  backends, "dense" for the NumPy a user would write on the dense model;
  ``time_kernel`` and ``track_speedup_over_dense``.  BLAS on one thread.
* ``Compression``: ``track_compression_ratio`` (dense float32 bytes over
  the deployed bytes) and ``track_accuracy_drop`` (percentage points of
  test accuracy lost against the dense baseline): the figures issue 5
  sets floors on (100x at no more than 1 point).
"""

from kernels.benchmarks import BACKENDS, compress

from .common import CaseBenchmark, speedup_over_peer


class Inference(CaseBenchmark):
    params = ((*BACKENDS, "dense"), (1, 64))
    param_names = ("implementation", "batch")
    timeout = 300

    def setup_cache(self):
        return compress.demo_models()

    def case(self, models, implementation, batch):
        return compress.inference(models, batch), implementation

    track_speedup_over_dense = speedup_over_peer("dense", "x")


class Compression:
    timeout = 300

    def setup_cache(self):
        return compress.demo_models()

    def track_compression_ratio(self, cache):
        return cache["ratio"]

    track_compression_ratio.unit = "x"

    def track_accuracy_drop(self, cache):
        return cache["drop"]

    track_accuracy_drop.unit = "points"
