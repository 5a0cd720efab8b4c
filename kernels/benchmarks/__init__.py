"""The benchmark cases of the library and the loops that time them: the one
definition that both ``python -m kernels bench`` (the side-by-side table,
which a board prints from the installed package, no checkout needed) and
the asv suite in bench/ run.

A case (``Case``) is one kernel of ours on one input, with its peers: the
NumPy expression a user would write instead, scipy.sparse, the dense
model, onnxruntime.  One module per family builds them:

* ``kernels.benchmarks.prox``: the proximal operators (``kernels.prox``);
* ``kernels.benchmarks.sparse``: SpMV and SpMM (``kernels.sparse``);
* ``kernels.benchmarks.nn``: LeNet-300-100 inference (``kernels.nn``);
* ``kernels.benchmarks.update``: the fused step (``kernels.update``);
* ``kernels.benchmarks.compress``: the demo's compressed model
  (``kernels.compress``).

``kernels.benchmarks.timing`` holds the timing loops (repeated samples,
medians, interleaving), the copy bandwidth and BLAS pinning that the
whole project uses.

This is public API, with stable names: asv runs the benchmarks of the
working tree against builds of other commits, so bench/ uses this package
and nothing private.  Importing it is cheap; scipy, onnx and onnxruntime
are imported by the peers that need them.

Use::

    from kernels.benchmarks import prox, timing

    case = prox.prox_l1(10**6, "float32")
    inputs = case.setup()
    call = case.bind("cython", inputs)      # or a peer: "numpy-expression"
    case.warm_up(call, inputs)              # JIT compilation happens here
    seconds = timing.median_seconds(call)
"""

from kernels.benchmarks import timing
from kernels.benchmarks.case import BACKENDS, EXPRESSION, Case, Peer, expression

__all__ = ["BACKENDS", "EXPRESSION", "Case", "Peer", "expression", "timing"]
