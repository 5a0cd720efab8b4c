"""Fast CPU kernels for embedded machine learning.

Proximal shrinkage (``kernels.prox``), sparse matrix products for
inference (``kernels.sparse``), the fused proximal gradient step of
variance-reduced training (``kernels.update``) and the variance-reduced
solvers for linear models (``kernels.solvers``, with scikit-learn-style
estimators in ``kernels.linear_model``), each over three interchangeable
backends: "cython", "numba" and the "numpy" reference.  The compression
pipeline built from them: ``kernels.train`` (sparse MLP training) and
``kernels.compress`` (train, prune, quantise, deploy, measure; ``python -m
kernels demo``).

``import kernels`` imports NumPy and the compiled modules only: scikit-learn,
scipy and numba are imported by the functions that need them.
"""

from kernels._backend import (
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)
from kernels.nn import SparseLinear, SparseMLP
from kernels.prox import (
    cumulative_l1,
    keep_top_k,
    project_box,
    project_l1_ball,
    prox_elastic_net,
    prox_group_l1,
    prox_l0,
    prox_l1,
    prox_sparse_group_l1,
)
from kernels.sparse import (
    BSRMatrix,
    CSRMatrix,
    QuantizedCSR,
    spmm,
    spmv,
    spmv_t,
)
from kernels.update import CumulativeL1, prox_gradient_step

__version__ = "0.1.0"

# Imported on first use (PEP 562): their module imports scikit-learn, which
# would make ``import kernels`` several times slower on a board.
_LAZY = {
    "SparseLogisticRegression": "kernels.linear_model",
    "SparseLinearRegression": "kernels.linear_model",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "prox_l1",
    "prox_elastic_net",
    "prox_group_l1",
    "prox_sparse_group_l1",
    "prox_l0",
    "keep_top_k",
    "project_l1_ball",
    "project_box",
    "cumulative_l1",
    "CSRMatrix",
    "BSRMatrix",
    "QuantizedCSR",
    "spmv",
    "spmv_t",
    "spmm",
    "SparseLinear",
    "SparseMLP",
    "prox_gradient_step",
    "CumulativeL1",
    "SparseLogisticRegression",
    "SparseLinearRegression",
]
