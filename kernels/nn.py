"""Sparse multi-layer perceptrons for inference (ALGORITHMS.md section 3).

A ``SparseLinear`` layer is a sparse weight matrix (``CSRMatrix``,
``BSRMatrix`` or int8 ``QuantizedCSR``) of shape (out_features,
in_features), as PyTorch stores it, an optional bias and an activation.  A
``SparseMLP`` chains layers into a classifier that runs one ``spmm`` kernel
call per layer:

* Activations stay feature-major, (features, batch), between layers, so
  that each loaded non-zero updates a contiguous row of the batch and no
  layer transposes anything: the input is transposed once into a buffer,
  the output once out of the last one.
* The buffers are kept for the last ``CACHED_BATCH_SIZES`` batch sizes, so
  that after the first call for a batch size ``forward`` allocates only
  the array it returns.  A call takes its buffers out of the cache while it
  runs, so concurrent calls from several threads never share one
  (``clear_buffers`` frees them).
* A layer is one call of a layer kernel (``csr_layer``, ``bsr_layer``,
  ``qcsr_layer`` of ``kernels.sparse``'s backends): the product, the bias
  and the activation (an integer code) in one pass, each output row
  finished while it is in cache.  For one sample the input is used in
  place, without a copy, when it already has the model's dtype.
* One sample (1-D input) on the cython backend and one thread skips all of
  that: the model compiles its layers once, on first use, into an
  ``MLPPlan`` of ``kernels._cy.sparse`` that runs the whole network in one
  C call (the same row loops and epilogues as the layer kernels, so the
  same bits), with its scratch on the C stack.  A small network's call
  costs about a microsecond, where the layer-by-layer path costs several
  in per-call overhead alone.  ``predict`` takes the argmax in the same
  call.  The numba and numpy backends keep the layer-by-layer path.  The
  plan reads the layers' arrays in place, as the layer kernels do: weight
  values or biases modified in place are seen by the next call of either
  path (``kernels.sparse`` says which modifications are unsafe).

Models are built from dense weights (``SparseMLP.from_dense``, with
magnitude pruning and quantisation), from a fitted scikit-learn
``MLPClassifier`` (``SparseMLP.from_sklearn``), or loaded from the single
``.npz`` file that ``SparseMLP.save`` writes (no pickle; loading validates
everything, see ``SparseMLP.load``).  Loading and predicting need neither
scipy nor numba.
"""

import numbers
import os
import struct
import threading
import zipfile
import zlib

import numpy as np

from kernels import _checks
from kernels._backend import get_backend, kernels_for
from kernels._reference.sparse import ACTIVATIONS as _KERNEL_ACTIVATIONS
from kernels.sparse import (
    PARALLEL_MIN_WORK,
    BSRMatrix,
    CSRMatrix,
    QuantizedCSR,
    _n_threads,
)

__all__ = ["SparseLinear", "SparseMLP"]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
FORMATS = ("csr", "bsr", "int8")
FORMAT_VERSION = 1
CACHED_BATCH_SIZES = 4

_FORMAT_OF = {CSRMatrix: "csr", BSRMatrix: "bsr", QuantizedCSR: "int8"}
_LAYER_KERNEL = {
    CSRMatrix: "csr_layer",
    BSRMatrix: "bsr_layer",
    QuantizedCSR: "qcsr_layer",
}
_SKLEARN_ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "identity": "identity",
}


def _activation(value, name="activation"):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in ACTIVATIONS:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, ACTIVATIONS))}, got {value!r}"
        )
    return value


def _stable_sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, accurate for both signs."""
    return np.exp(-np.logaddexp(0, -z))


class SparseLinear:
    """One layer: ``activation(W @ x + bias)``.

    ``weight`` is a ``CSRMatrix``, ``BSRMatrix`` or ``QuantizedCSR`` of shape
    (out_features, in_features) with finite values; ``bias`` is None or
    ``out_features`` finite values, stored in the weight's compute dtype
    (float32 for ``QuantizedCSR``; no copy when it already is one);
    ``activation`` is "relu", "tanh", "sigmoid" or "identity".
    """

    __slots__ = ("_weight", "_bias", "_activation", "_kernel", "_kernel_args", "_code")

    def __init__(self, weight, bias=None, activation="identity"):
        if type(weight) not in _FORMAT_OF:
            raise TypeError(
                "weight must be a CSRMatrix, BSRMatrix or QuantizedCSR, got "
                f"{type(weight).__name__} (SparseMLP.from_dense builds layers "
                "from dense arrays)"
            )
        if isinstance(weight, QuantizedCSR):
            _checks.require_finite(weight.scales, "weight.scales")
        else:
            _checks.require_finite(weight.data, "weight.data")
        self._weight = weight
        self._activation = _activation(activation)
        self._bias = None
        if bias is not None:
            bias = _checks.as_float_array(bias, "bias", weight.dtype)
            if bias.shape != (weight.shape[0],):
                raise ValueError(
                    f"bias must have shape ({weight.shape[0]},) (one value per "
                    f"output feature), got shape {bias.shape}"
                )
            _checks.require_finite(bias, "bias")
            self._bias = bias
        # what the layer kernel takes: the weight's arrays and a bias (zeros
        # when there is none), and the activation's code
        self._kernel = _LAYER_KERNEL[type(weight)]
        full_bias = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias
        self._kernel_args = (*weight._arrays, full_bias)
        self._code = _KERNEL_ACTIVATIONS.index(self._activation)

    @property
    def weight(self):
        return self._weight

    @property
    def bias(self):
        return self._bias

    @property
    def activation(self):
        return self._activation

    @property
    def in_features(self):
        return self._weight.shape[1]

    @property
    def out_features(self):
        return self._weight.shape[0]

    @property
    def dtype(self):
        """The dtype the layer computes in (float32 for int8 weights)."""
        return self._weight.dtype

    @property
    def format(self):
        """The weight's format: "csr", "bsr" or "int8"."""
        return _FORMAT_OF[type(self._weight)]

    @property
    def nnz(self):
        """Stored weights (for BSR, the zeros inside blocks included)."""
        return self._weight.nnz

    @property
    def density(self):
        return self._weight.density

    @property
    def nbytes(self):
        """Bytes of the weight (values, indices, pointers, scales) + bias."""
        bias = 0 if self._bias is None else self._bias.nbytes
        return self._weight.nbytes + bias

    def __repr__(self):
        return (
            f"SparseLinear(out_features={self.out_features}, "
            f"in_features={self.in_features}, format={self.format!r}, "
            f"nnz={self.nnz}, bias={self._bias is not None}, "
            f"activation={self._activation!r})"
        )


def _class_labels(classes, n_outputs):
    """``classes`` as a 1-D array of numbers, strings or bytes (an object
    array of str, or of numbers, is converted), one per class."""
    classes = np.asarray(classes)
    if classes.dtype == object:
        items = classes.tolist() if classes.ndim == 1 else None
        if items is not None and all(isinstance(c, str) for c in items):
            classes = np.array(items, dtype=str)
        elif items is not None and all(isinstance(c, numbers.Real) for c in items):
            classes = np.array(items)
        else:
            raise TypeError(
                "classes must hold numbers or strings (object arrays of "
                "other things cannot be saved without pickle)"
            )
    if classes.dtype.kind not in "biufSU":
        raise TypeError(
            f"classes must hold numbers or strings, got dtype {classes.dtype}"
        )
    expected = max(n_outputs, 2)
    if classes.shape != (expected,):
        raise ValueError(
            f"classes must have shape ({expected},) (one label per class for a "
            f"network with {n_outputs} output{'s' if n_outputs != 1 else ''}), "
            f"got shape {classes.shape}"
        )
    return classes


def _check_backend(backend):
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a backend name (str), got {backend!r}")
    return backend


def _check_threads(threads):
    return None if threads is None else _checks.integer(threads, "threads", minimum=1)


class SparseMLP:
    """A classifier of chained ``SparseLinear`` layers.

    ``layers``: one or more layers, each layer's ``in_features`` the
    previous one's ``out_features``, all computing in one dtype.
    ``classes``: None (``predict`` returns class indices) or one label per
    output (two for a single-output network, a binary logistic classifier
    as scikit-learn's).  ``backend`` and ``threads``: the defaults of
    every call (``kernels.sparse.spmm`` explains them), also settable as
    attributes and overridable per call.
    """

    def __init__(self, layers, classes=None, backend=None, threads=None):
        try:
            layers = tuple(layers)
        except TypeError:
            raise TypeError(
                f"layers must be a sequence of SparseLinear, got "
                f"{type(layers).__name__}"
            ) from None
        if not layers:
            raise ValueError("layers must hold at least one SparseLinear")
        for i, layer in enumerate(layers):
            if not isinstance(layer, SparseLinear):
                raise TypeError(
                    f"layers[{i}] must be a SparseLinear, got {type(layer).__name__}"
                )
        for i, (before, after) in enumerate(zip(layers, layers[1:], strict=False)):
            if before.out_features != after.in_features:
                raise ValueError(
                    f"layers do not chain: layers[{i}] has {before.out_features} "
                    f"outputs but layers[{i + 1}] has {after.in_features} inputs"
                )
            if before.dtype != after.dtype:
                raise ValueError(
                    f"layers must compute in one dtype: layers[{i}] is "
                    f"{before.dtype} and layers[{i + 1}] {after.dtype} (int8 "
                    "layers compute in float32)"
                )
        self._layers = layers
        self._classes = (
            None if classes is None else _class_labels(classes, self.out_features)
        )
        self.backend = backend
        self.threads = threads
        self._nnz = sum(layer.nnz for layer in layers)
        self._in_features = layers[0].in_features
        self._dtype = layers[0].dtype
        self._buffers = {}
        self._lock = threading.Lock()
        self._plan = None  # the compiled one-sample plan, built on first use
        # predict's threshold for a single output: p > 0.5, or logit > 0
        self._cut = 0.5 if layers[-1].activation == "sigmoid" else 0.0
        # what predict returns for class index i: labels[i], an np.intp
        # index when there are no classes (indexing costs less than np.intp())
        self._labels = (
            np.arange(max(self.out_features, 2), dtype=np.intp)
            if self._classes is None
            else self._classes
        )

    @property
    def backend(self):
        """The default backend of this model's calls (None: the process
        default, ``kernels.get_backend()``)."""
        return self._backend

    @backend.setter
    def backend(self, backend):
        self._backend = _check_backend(backend)

    @property
    def threads(self):
        """The default ``threads`` of this model's calls (None: automatic)."""
        return self._threads

    @threads.setter
    def threads(self, threads):
        self._threads = _check_threads(threads)

    @property
    def layers(self):
        return self._layers

    @property
    def classes(self):
        return self._classes

    @property
    def in_features(self):
        return self._layers[0].in_features

    @property
    def out_features(self):
        return self._layers[-1].out_features

    @property
    def dtype(self):
        return self._layers[0].dtype

    @property
    def nnz(self):
        return self._nnz

    @property
    def nbytes(self):
        """Bytes of every layer's weights and biases: the deployed model."""
        return sum(layer.nbytes for layer in self._layers)

    # Inference -----------------------------------------------------------

    def _take_buffers(self, batch):
        """Feature-major buffers for a batch: the input (in, batch) and one
        (out_l, batch) per layer, from the cache or new."""
        with self._lock:
            buffers = self._buffers.pop(batch, None)
        if buffers is None:
            dtype = self.dtype
            buffers = [np.empty((self.in_features, batch), dtype=dtype)] + [
                np.empty((layer.out_features, batch), dtype=dtype)
                for layer in self._layers
            ]
        return buffers

    def _return_buffers(self, batch, buffers):
        with self._lock:
            self._buffers[batch] = buffers  # the most recently used last
            while len(self._buffers) > CACHED_BATCH_SIZES:
                del self._buffers[next(iter(self._buffers))]

    def clear_buffers(self):
        """Free the cached activation buffers (the next call of each batch
        size allocates them again)."""
        with self._lock:
            self._buffers.clear()

    def _sample_plan(self, backend, threads):
        """The compiled one-sample plan (``kernels._cy.sparse.MLPPlan``)
        when a call with these ``backend`` and ``threads`` arguments runs on
        the cython backend in one thread, else None (the general path then
        validates the arguments).  Built on first use and kept: it depends
        only on the layers, which do not change.  Two threads building it at
        once build two equal plans, and one is kept."""
        if backend is None:
            backend = self._backend
            if backend is None:
                backend = get_backend()
        if backend != "cython":
            return None
        if threads is None:
            threads = self._threads
        if threads is None:
            if self._nnz >= PARALLEL_MIN_WORK:
                return None  # the general path runs big layers on every CPU
        elif type(threads) is not int or threads != 1:
            return None
        plan = self._plan
        if plan is None:
            plan = self._plan = kernels_for("sparse", "cython").MLPPlan(
                (layer.format, layer.weight.shape, layer._kernel_args, layer._code)
                for layer in self._layers
            )
        return plan

    def forward(self, X, backend=None, threads=None):
        """The last layer's output (the logits when its activation is
        "identity") for ``X`` of shape (batch, in_features), or
        (in_features,) for one sample: shape (batch, out_features) or
        (out_features,), in the model's dtype.  X may be of any real dtype.

        Allocates only the returned array once this batch size's buffers are
        cached.  O(nnz * batch) in the kernels, one layer kernel call per
        layer, plus one transposing copy in (none for one sample of the
        model's dtype, C-contiguous: it is read in place) and one out.

        One sample, a 1-D float32 or float64 ndarray (any stride) or a
        batch of one of shape (1, in_features), on the cython backend and
        one thread (``threads`` 1, or None for fewer than
        ``kernels.sparse.PARALLEL_MIN_WORK`` stored weights): one call of
        the compiled plan for the whole network, the same result, about
        1 us for a network of a few hundred weights.
        """
        if type(X) is np.ndarray and X.ndim == 1:
            plan = self._plan
            if not (
                # the usual call, checked inline: a function call is a fifth
                # of the plan's own time on a small network
                plan is not None
                and backend is None
                and threads is None
                and self._threads is None
                and self._nnz < PARALLEL_MIN_WORK
                and (self._backend or get_backend()) == "cython"
            ):
                plan = self._sample_plan(backend, threads)
            if plan is not None:
                Y = plan.forward(X)
                if Y is not None:
                    return Y
        elif type(X) is np.ndarray and X.ndim == 2 and X.shape[0] == 1:
            # a batch of one sample: the plan on its row, as shape (1, m)
            plan = self._sample_plan(backend, threads)
            if plan is not None:
                Y = plan.forward(X[0])
                if Y is not None:
                    return Y.reshape(1, -1)
        X = _checks.real_array(X, "X")
        n = self._in_features
        if X.ndim not in (1, 2) or X.shape[-1] != n:
            raise ValueError(
                f"X must have shape (batch, {self.in_features}) or "
                f"({self.in_features},), got shape {X.shape}"
            )
        backend = self._backend if backend is None else _check_backend(backend)
        threads = self._threads if threads is None else threads
        batch = 1 if X.ndim == 1 else X.shape[0]
        buffers = self._take_buffers(batch)
        if batch == 1 and X.dtype == self._dtype and X.flags.c_contiguous:
            H = X.reshape(n, 1)  # a view: the kernels only read it
        else:
            H = buffers[0]
            np.copyto(H, X.T if X.ndim == 2 else X[:, None], casting="unsafe")
        kernels = kernels_for("sparse", backend)
        n_threads = _n_threads(threads, self._nnz * batch)
        for layer, out in zip(self._layers, buffers[1:], strict=True):
            # out = activation(W @ H + bias): the layer kernel, called
            # directly (H and out are C-contiguous and of the weight's dtype;
            # the per-call checks of kernels.sparse.spmm would cost more than
            # a small layer's product at batch 1)
            getattr(kernels, layer._kernel)(
                *layer._kernel_args, H, layer._code, out, n_threads
            )
            H = out
        result = H[:, 0].copy() if X.ndim == 1 else H.T.copy()
        self._return_buffers(batch, buffers)
        return result

    def predict_proba(self, X, backend=None, threads=None):
        """Class probabilities, shape (batch, n_classes) (or (n_classes,)):
        the softmax of ``forward``'s output (max-subtracted, so it never
        overflows).  A single-output network is a binary logistic
        classifier, as scikit-learn's: [1 - p, p] with p = sigmoid(output)
        (p = output when the last activation already is "sigmoid").

        One sample of a multi-output network on the compiled plan (as
        ``forward``): the plan returns z - max(z), then exp and the
        normalisation are the same NumPy calls, so the same bits.  (The
        binary case takes ``forward``'s plan call and the general rest.)"""
        if type(X) is np.ndarray and X.ndim == 1 and self.out_features > 1:
            plan = self._sample_plan(backend, threads)
            if plan is not None:
                P = plan.forward_minus_max(X)
                if P is not None:
                    np.exp(P, out=P)
                    P /= np.add.reduce(P)
                    return P
        Z = self.forward(X, backend, threads)
        batch = Z.reshape(-1, Z.shape[-1])  # a view: (batch, outputs)
        if self.out_features == 1:
            z = batch[:, 0]
            if self._layers[-1].activation == "sigmoid":
                p, q = z, 1 - z
            else:
                p, q = _stable_sigmoid(z), _stable_sigmoid(-z)
            P = np.stack([q, p], axis=1)
            return P[0] if Z.ndim == 1 else P
        with np.errstate(over="ignore"):  # inf - max = inf, exp(-inf) = 0
            batch -= batch.max(axis=1, keepdims=True)
        np.exp(batch, out=batch)
        batch /= batch.sum(axis=1, keepdims=True)
        return Z

    def predict(self, X, backend=None, threads=None):
        """The most probable class of each sample (of the sample, for 1-D
        X): the label from ``classes``, or the class index when there are
        none.  A single-output network predicts class 1 when p > 0.5.

        One sample on the compiled plan (as ``forward``): the argmax is
        taken in the same call, and no array is allocated."""
        if type(X) is np.ndarray and X.ndim == 1:
            plan = self._sample_plan(backend, threads)
            if plan is not None:
                index = plan.classify(X, self._cut)
                if index >= 0:
                    return self._labels[index]
        Z = self.forward(X, backend, threads)
        if self.out_features == 1:
            index = (Z[..., 0] > self._cut).astype(np.intp)
        else:
            index = np.argmax(Z, axis=-1)
        return index if self._classes is None else self._classes[index]

    # Construction --------------------------------------------------------

    @classmethod
    def from_dense(
        cls,
        weights,
        biases=None,
        activation="relu",
        output_activation="identity",
        threshold=None,
        density=None,
        fmt="csr",
        blocksize=(4, 4),
        bits=8,
        classes=None,
        dtype=None,
        backend=None,
        threads=None,
    ):
        """A model from dense weights, pruned and converted layer by layer.

        ``weights``: one (out_features, in_features) array per layer, as
        PyTorch stores them; ``biases``: None, or one bias (or None) per
        layer.  ``activation`` applies to the hidden layers,
        ``output_activation`` to the last one.

        Pruning (``CSRMatrix.from_dense``): by magnitude, keeping
        ``|w| > threshold`` (None: 0, the non-zeros), or exactly
        ``round(density * size)`` weights of largest magnitude.  ``fmt``:
        "csr", "bsr" (the pruned CSR in (r, c) blocks of ``blocksize``,
        which must divide the layer's shape) or "int8" (the pruned CSR
        quantised on ``bits`` bits, ``QuantizedCSR.from_csr``).
        ``threshold``, ``density``, ``fmt``, ``blocksize`` and ``bits`` are
        each one value for every layer or a list of one per layer.

        ``dtype`` (float32 or float64) of the weights and biases; None:
        float32 if a layer is int8 (which computes in float32), else the
        weights' common dtype.  ``classes``, ``backend`` and ``threads`` as
        for ``SparseMLP``.
        """
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
                f"biases must be None or hold one entry per layer ({n}), got "
                f"{len(biases)}"
            )
        fmts = _per_layer(fmt, n, "fmt")
        for i, f in enumerate(fmts):
            if f not in FORMATS:
                raise ValueError(
                    f"fmt must be one of {', '.join(map(repr, FORMATS))}, got "
                    f"{f!r} for layer {i}"
                )
        if dtype is not None:
            dtype = _checks.float_dtype(dtype, "dtype")
        elif "int8" in fmts:
            dtype = np.dtype(np.float32)
        else:
            dtype = np.result_type(*weights)
        options = zip(
            weights,
            biases,
            _per_layer(threshold, n, "threshold"),
            _per_layer(density, n, "density"),
            fmts,
            _per_layer(blocksize, n, "blocksize", pair=True),
            _per_layer(bits, n, "bits"),
            strict=True,
        )
        layers = []
        for i, (W, bias, t, d, f, bs, b) in enumerate(options):
            try:
                weight = _sparse_weight(W, t, d, f, bs, b, dtype)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"layer {i}: {exc}") from exc
            act = output_activation if i == n - 1 else activation
            layers.append(SparseLinear(weight, bias, act))
        return cls(layers, classes=classes, backend=backend, threads=threads)

    @classmethod
    def from_sklearn(
        cls,
        mlp,
        fmt="csr",
        threshold=0.0,
        density=None,
        blocksize=(4, 4),
        bits=8,
        dtype=None,
        backend=None,
        threads=None,
    ):
        """A model from a fitted scikit-learn ``MLPClassifier`` (duck-typed:
        scikit-learn is not imported), pruned and converted as
        ``from_dense`` does (``threshold=0``, the default, keeps every
        non-zero weight).

        The hidden activation maps "logistic" to "sigmoid"; the last layer
        outputs logits (activation "identity") and ``predict_proba``
        applies scikit-learn's softmax (multiclass) or logistic (binary)
        output; ``classes_`` become ``classes``.  Multilabel classifiers
        and regressors are not supported (ValueError).
        """
        if not (hasattr(mlp, "hidden_layer_sizes") and hasattr(mlp, "activation")):
            raise TypeError(
                "mlp must be a fitted scikit-learn MLPClassifier, got "
                f"{type(mlp).__name__}"
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
        return cls.from_dense(
            [np.asarray(W).T for W in coefs],
            list(intercepts),
            activation=activation,
            output_activation="identity",
            threshold=threshold,
            density=density,
            fmt=fmt,
            blocksize=blocksize,
            bits=bits,
            classes=classes,
            dtype=dtype,
            backend=backend,
            threads=threads,
        )

    # Files ---------------------------------------------------------------

    def save(self, path):
        """Write the model to ``path`` (a path or a writable binary file) as
        one uncompressed .npz archive of plain arrays: no pickle, and no
        ".npz" appended to the name.

        Keys (integers are int64, strings 0-d unicode arrays):
        ``format_version`` (1), ``n_layers``, ``classes`` (the labels, or
        an empty array when there are none) and, per layer i,
        ``layer{i}_kind`` ("csr", "bsr" or "int8"), ``layer{i}_shape``
        (out_features, in_features), ``layer{i}_data`` (the float values,
        the (n_blocks, r, c) BSR blocks, or the int8 values),
        ``layer{i}_indices``, ``layer{i}_indptr``, ``layer{i}_blocksize``
        (bsr only), ``layer{i}_scales`` and ``layer{i}_bits`` (int8 only),
        ``layer{i}_bias`` (an empty array when there is none) and
        ``layer{i}_activation``.  Every key is always written, so that a
        removed key is detected rather than read as "no bias" or "no
        labels".
        """
        arrays = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
            "n_layers": np.array(len(self._layers), dtype=np.int64),
        }
        for i, layer in enumerate(self._layers):
            key = f"layer{i}_"
            W = layer.weight
            arrays[key + "kind"] = np.array(layer.format)
            arrays[key + "shape"] = np.array(W.shape, dtype=np.int64)
            if layer.format == "int8":
                arrays[key + "data"] = W.values
                arrays[key + "scales"] = W.scales
                arrays[key + "bits"] = np.array(W.bits, dtype=np.int64)
            else:
                arrays[key + "data"] = W.data
            if layer.format == "bsr":
                arrays[key + "blocksize"] = np.array(W.blocksize, dtype=np.int64)
            arrays[key + "indices"] = W.indices
            arrays[key + "indptr"] = W.indptr
            arrays[key + "bias"] = (
                np.empty(0, dtype=layer.dtype) if layer.bias is None else layer.bias
            )
            arrays[key + "activation"] = np.array(layer.activation)
        arrays["classes"] = np.empty(0) if self._classes is None else self._classes
        if hasattr(path, "write"):
            np.savez(path, **arrays)
        else:
            with open(path, "wb") as file:
                np.savez(file, **arrays)

    @classmethod
    def load(cls, path, backend=None, threads=None):
        """A model saved by ``save``, from a path or a readable, seekable
        binary file, validated as any input: a file that is not a zip
        archive, is truncated or corrupt (every member's CRC is checked),
        holds pickled or unexpected data, lacks a key, has a key of the wrong
        dtype or shape, an unsupported ``format_version``, an invalid sparse
        structure (the full O(nnz) check), non-finite weights, layers that do
        not chain, an unknown activation or a bias of the wrong length is a
        ValueError naming the file.  A path that cannot be opened raises
        the usual OSError.  Needs neither scipy nor numba.
        """
        if hasattr(path, "read"):
            name = getattr(path, "name", repr(path))
            arrays = _read_archive(path, name)
        else:
            name = os.fspath(path)
            with open(path, "rb") as file:
                arrays = _read_archive(file, name)
        try:
            layers, classes = _model_arrays(arrays)
            return cls(layers, classes=classes, backend=backend, threads=threads)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: invalid SparseMLP file: {exc}") from exc

    # Reports -------------------------------------------------------------

    def summary(self):
        """A table of the layers (shape as out x in, format, stored weights,
        density, bytes, activation) and a total line comparing the model's
        bytes with the dense float32 model's (weights and biases)."""
        rows = [("layer", "shape", "format", "nnz", "density", "bytes", "activation")]
        dense = 0
        for i, layer in enumerate(self._layers):
            m, n = layer.weight.shape
            dense += 4 * (m * n + (m if layer.bias is not None else 0))
            rows.append(
                (
                    str(i),
                    f"{m} x {n}",
                    layer.format,
                    f"{layer.nnz:,}",
                    f"{100 * layer.density:.2f}%",
                    f"{layer.nbytes:,}",
                    layer.activation,
                )
            )
        rows.append(("total", "", "", f"{self.nnz:,}", "", f"{self.nbytes:,}", ""))
        widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
        right = (False, False, False, True, True, True, False)
        lines = [
            "  ".join(
                cell.rjust(w) if r else cell.ljust(w)
                for cell, w, r in zip(row, widths, right, strict=True)
            ).rstrip()
            for row in rows
        ]
        ratio = dense / self.nbytes
        sizes = self._sizes()
        header = f"SparseMLP {sizes}, {self.dtype}"
        footer = (
            f"dense float32: {dense:,} bytes; this model: {self.nbytes:,} bytes; "
            f"compression {ratio:.2f}x"
        )
        return "\n".join([header, *lines, footer])

    def _sizes(self):
        widths = [self.in_features] + [layer.out_features for layer in self._layers]
        return " -> ".join(map(str, widths))

    def __repr__(self):
        sizes = self._sizes()
        formats = ", ".join(layer.format for layer in self._layers)
        return (
            f"SparseMLP({sizes}, formats=[{formats}], nnz={self.nnz}, "
            f"nbytes={self.nbytes})"
        )


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
        return QuantizedCSR.from_csr(csr, bits=bits)
    return csr


# Loading ---------------------------------------------------------------------

# What reading a damaged or hostile archive can raise, besides ValueError.
_ARCHIVE_ERRORS = (
    ValueError,
    TypeError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    KeyError,
    IndexError,
    OverflowError,
    MemoryError,
    NotImplementedError,  # an unknown compression method
    RuntimeError,  # an "encrypted" member
    struct.error,
    zlib.error,
)


def _read_archive(file, name):
    """Every member of the .npz archive ``file`` as {key: array}, with the
    CRC of every member checked first, no pickle, native byte order."""
    arrays = {}
    try:
        with zipfile.ZipFile(file) as archive:
            corrupt = archive.testzip()
            if corrupt is not None:
                raise ValueError(f"member {corrupt!r} is corrupt (bad CRC)")
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                if key == info.filename or key in arrays:
                    raise ValueError(f"unexpected member {info.filename!r}")
                with archive.open(info) as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                    if member.read(1):
                        raise ValueError(
                            f"member {info.filename!r} has data after its array"
                        )
                if not array.dtype.isnative:
                    array = array.astype(array.dtype.newbyteorder("="))
                arrays[key] = array
    except _ARCHIVE_ERRORS as exc:
        raise ValueError(
            f"{name} is not a readable SparseMLP file (an .npz archive): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return arrays


class _Fields:
    """Typed access to the arrays of a model file, remembering which keys
    were read so that unexpected ones can be reported."""

    def __init__(self, arrays):
        self._arrays = arrays
        self._used = set()

    def get(self, key):
        if key not in self._arrays:
            raise ValueError(f"missing key {key!r}")
        self._used.add(key)
        return self._arrays[key]

    def integer(self, key):
        value = self.get(key)
        if value.shape != () or value.dtype.kind not in "iu":
            raise ValueError(
                f"{key} must be a 0-d integer array, got dtype {value.dtype} "
                f"and shape {value.shape}"
            )
        return int(value)

    def string(self, key, choices):
        value = self.get(key)
        if value.shape != () or value.dtype.kind != "U" or str(value) not in choices:
            raise ValueError(
                f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return str(value)

    def array(self, key, dtypes, ndim):
        value = self.get(key)
        if value.dtype not in [np.dtype(d) for d in dtypes] or value.ndim != ndim:
            names = ", ".join(np.dtype(d).name for d in dtypes)
            raise ValueError(
                f"{key} must be a {ndim}-d array of {names}, got dtype "
                f"{value.dtype} and shape {value.shape}"
            )
        return value

    def unexpected(self):
        return sorted(set(self._arrays) - self._used)


_FLOATS = (np.float32, np.float64)
_INDICES = (np.int32, np.int64)


def _model_arrays(arrays):
    """The layers and classes of a model file's arrays, validated."""
    fields = _Fields(arrays)
    if "format_version" not in arrays:
        raise ValueError("missing key 'format_version': not a SparseMLP file")
    version = fields.integer("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"format_version {version} is not supported (this version of "
            f"kernels reads format_version {FORMAT_VERSION})"
        )
    n_layers = fields.integer("n_layers")
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    layers = [_layer(fields, f"layer{i}_") for i in range(n_layers)]
    classes = fields.get("classes")
    if classes.shape == (0,):
        classes = None
    unexpected = fields.unexpected()
    if unexpected:
        raise ValueError(f"unexpected keys {unexpected}")
    return layers, classes


def _layer(fields, key):
    kind = fields.string(key + "kind", FORMATS)
    shape = fields.array(key + "shape", _INDICES, 1)
    if shape.shape != (2,):
        raise ValueError(f"{key}shape must have 2 entries, got {shape.shape[0]}")
    if kind == "int8":
        weight = QuantizedCSR(
            fields.array(key + "data", (np.int8,), 1),
            fields.array(key + "indices", (np.uint8, np.uint16, np.int32), 1),
            fields.array(key + "indptr", _INDICES, 1),
            fields.array(key + "scales", (np.float32,), 1),
            shape,
            bits=fields.integer(key + "bits"),
        )
    elif kind == "bsr":
        data = fields.array(key + "data", _FLOATS, 3)
        blocksize = fields.array(key + "blocksize", _INDICES, 1)
        if tuple(blocksize) != data.shape[1:]:
            raise ValueError(
                f"{key}blocksize {tuple(blocksize)} does not match the blocks "
                f"of {key}data, of shape {data.shape}"
            )
        weight = BSRMatrix(
            data,
            fields.array(key + "indices", _INDICES, 1),
            fields.array(key + "indptr", _INDICES, 1),
            shape,
        )
    else:
        weight = CSRMatrix(
            fields.array(key + "data", _FLOATS, 1),
            fields.array(key + "indices", _INDICES, 1),
            fields.array(key + "indptr", _INDICES, 1),
            shape,
        )
    bias = fields.array(key + "bias", (weight.dtype,), 1)
    activation = fields.string(key + "activation", ACTIVATIONS)
    return SparseLinear(weight, bias if bias.size else None, activation)
