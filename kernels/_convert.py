"""Building a SparseMLP's layers: from dense weights (pruning, quantising,
blocking, layer by layer) and from a fitted scikit-learn MLPClassifier.
``SparseMLP.from_dense`` and ``SparseMLP.from_sklearn`` document the
arguments."""

import numpy as np

from kernels import _checks
from kernels.nn import FORMATS, PACKED_FORMATS, SparseLinear
from kernels.packed import PackedMatrix
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

_SKLEARN_ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "identity": "identity",
}


def dense_layers(
    weights,
    biases,
    activation,
    output_activation,
    threshold,
    density,
    fmt,
    blocksize,
    bits,
    dtype,
    codec=None,
):
    """The ``SparseLinear`` layers of ``SparseMLP.from_dense``."""
    weights = list(weights)
    n = len(weights)
    if n == 0:
        raise ValueError("weights must hold at least one array")
    weights = [
        _checks.as_float_array(W, f"weights[{i}]") for i, W in enumerate(weights)
    ]
    biases = [None] * n if biases is None else list(biases)
    if len(biases) != n:
        raise ValueError(
            f"biases must be None or hold one entry per layer ({n}), got {len(biases)}"
        )
    fmts = _per_layer(fmt, n, "fmt")
    codecs = _per_layer(codec, n, "codec")
    choices = FORMATS + PACKED_FORMATS
    for i, f in enumerate(fmts):
        if f not in choices:
            raise ValueError(
                f"fmt must be one of {', '.join(map(repr, choices))}, got "
                f"{f!r} for layer {i}"
            )
    packed = [
        f in PACKED_FORMATS or c is not None for f, c in zip(fmts, codecs, strict=True)
    ]
    if dtype is not None:
        dtype = _checks.float_dtype(dtype, "dtype")
        if dtype != np.float32 and any(packed):
            raise ValueError(f"the deployment formats compute in float32, not {dtype}")
    elif "int8" in fmts or any(packed):
        dtype = np.dtype(np.float32)
    else:
        dtype = _common_dtype(weights)
    options = zip(
        weights,
        biases,
        _per_layer(threshold, n, "threshold"),
        _per_layer(density, n, "density"),
        fmts,
        _per_layer(blocksize, n, "blocksize", pair=True),
        _per_layer(bits, n, "bits"),
        codecs,
        packed,
        strict=True,
    )
    layers = []
    for i, (W, bias, t, d, f, bs, b, c, p) in enumerate(options):
        try:
            if p:
                weight = _packed_weight(W, t, d, f, b, c)
                if bias is not None and weight.codec != "float32":
                    bias = _half_rounded(bias)
            else:
                weight = _sparse_weight(W, t, d, f, bs, b, dtype)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {i}: {exc}") from exc
        act = output_activation if i == n - 1 else activation
        layers.append(SparseLinear(weight, bias, act))
    return layers


def _common_dtype(weights):
    """The one dtype of ``weights`` (already float32 or float64): layers of
    float32 and float64 are a ValueError rather than a silent upcast of the
    float32 ones (``dtype`` chooses)."""
    dtypes = [W.dtype for W in weights]
    if any(d != dtypes[0] for d in dtypes):
        first = next(i for i, d in enumerate(dtypes) if d != dtypes[0])
        raise ValueError(
            f"weights must share one dtype, got weights[0] in {dtypes[0]} and "
            f"weights[{first}] in {dtypes[first]} (integer weights become "
            "float64): pass dtype=np.float32 or dtype=np.float64 to convert them"
        )
    return dtypes[0]


def sklearn_network(mlp):
    """(weights, biases, hidden activation, classes) of a fitted
    scikit-learn ``MLPClassifier``, checked (``SparseMLP.from_sklearn``)."""
    if not (hasattr(mlp, "hidden_layer_sizes") and hasattr(mlp, "activation")):
        raise TypeError(
            f"mlp must be a fitted scikit-learn MLPClassifier, got {type(mlp).__name__}"
        )
    coefs = getattr(mlp, "coefs_", None)
    intercepts = getattr(mlp, "intercepts_", None)
    if coefs is None or intercepts is None:
        raise ValueError(
            f"this {type(mlp).__name__} is not fitted (it has no coefs_): "
            "call fit first"
        )
    output = getattr(mlp, "out_activation_", None)
    classes = getattr(mlp, "classes_", None)
    if output not in ("softmax", "logistic") or classes is None:
        raise ValueError(
            f"only classifiers (MLPClassifier) can be converted: "
            f"{type(mlp).__name__} with out_activation_={output!r} is not "
            "supported"
        )
    n_outputs = np.shape(coefs[-1])[-1]
    if output == "logistic" and n_outputs != 1:
        raise ValueError(
            f"multilabel classifiers ({n_outputs} independent logistic "
            "outputs) are not supported"
        )
    activation = _SKLEARN_ACTIVATIONS.get(mlp.activation)
    if activation is None:
        raise ValueError(
            f"mlp.activation={mlp.activation!r} is not supported (relu, "
            "tanh, logistic or identity)"
        )
    return [np.asarray(W).T for W in coefs], list(intercepts), activation, classes


def _per_layer(value, n, name, pair=False):
    """One value per layer: ``value`` repeated, or ``value`` itself when it
    is a list of n (for ``pair``, a value is a pair such as (4, 4))."""
    single = np.ndim(value) == (1 if pair else 0) or value is None
    if single:
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(
            f"{name} must be one value or a list of one per layer ({n}), got "
            f"{len(values)} values"
        )
    return values


def _sparse_weight(W, threshold, density, fmt, blocksize, bits, dtype):
    csr = CSRMatrix.from_dense(
        W,
        threshold=0.0 if threshold is None else threshold,
        density=density,
        dtype=dtype,
    )
    if fmt == "bsr":
        return BSRMatrix.from_csr(csr, blocksize)
    if fmt == "int8":
        return QuantizedCSR.from_csr(csr, bits=8 if bits is None else bits)
    return csr


def _packed_weight(W, threshold, density, fmt, bits, codec):
    if codec is None:
        codec = "float32" if bits is None else "int"
    return PackedMatrix.from_dense(
        W,
        layout=fmt,
        codec=codec,
        bits=bits,
        threshold=0.0 if threshold is None else threshold,
        density=density,
    )


def _half_rounded(bias):
    """The bias rounded to the nearest float16 values, as float32."""
    bias = _checks.as_float_array(bias, "bias", np.float32)
    with np.errstate(over="ignore"):
        half = bias.astype(np.float16).astype(np.float32)
    return half if np.isfinite(half).all() else bias
