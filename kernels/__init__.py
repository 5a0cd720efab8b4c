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
"""

from kernels._backend import (
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)
from kernels.linear_model import SparseLinearRegression, SparseLogisticRegression
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
