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
* One sample (1-D input) on one thread skips all of that: the model asks
  the backend of the call for a one-sample plan of its layers (the
  backend's ``MLPPlan``, built once, on first use, and kept, one per
  backend), which runs the whole network in one call: the same row loops
  and epilogues as that backend's layer kernels, so the same bits.  On the
  cython backend that is one C call with its scratch on the C stack,
  about a microsecond for a small network, where the layer-by-layer path
  costs several in per-call overhead alone; on numba, one compiled call
  that reads the layers through a table of their addresses; on numpy,
  the reference layer kernels in turn.  ``predict`` takes the argmax in
  the same call.  A plan reads the layers' arrays in place, as the layer
  kernels do: weight values or biases modified in place are seen by the
  next call of either path (``kernels.sparse`` says which modifications
  are unsafe).

Models are built from dense weights (``SparseMLP.from_dense``, with
magnitude pruning and quantisation), from a fitted scikit-learn
``MLPClassifier`` (``SparseMLP.from_sklearn``), or loaded from the single
``.npz`` file that ``SparseMLP.save`` writes (no pickle; loading validates
everything, see ``SparseMLP.load``).  Loading and predicting need neither
scipy nor numba.
"""

import numbers
import threading

import numpy as np

from kernels import _checks
from kernels._backend import get_backend, kernels_for, resolve
from kernels._codes import ACTIVATION_NAMES
from kernels.packed import PackedMatrix, float_width
from kernels.sparse import (
    PARALLEL_MIN_WORK,
    BSRMatrix,
    CSRMatrix,
    QuantizedCSR,
    _n_threads,
)

__all__ = ["SparseLinear", "SparseMLP"]

ACTIVATIONS = ACTIVATION_NAMES  # by code: ACTIVATIONS[code] is its name
FORMATS = ("csr", "bsr", "int8")  # the matrix classes of kernels.sparse
# from_dense's fmt values that build a PackedMatrix: "auto" (the smallest)
# and its layouts ("csr" too, when a codec is given)
PACKED_FORMATS = ("auto", "dense", "bitmask", "delta4", "delta8")
CACHED_BATCH_SIZES = 4

_FORMAT_OF = {
    CSRMatrix: "csr",
    BSRMatrix: "bsr",
    QuantizedCSR: "int8",
    PackedMatrix: "packed",
}
_LAYER_KERNEL = {
    CSRMatrix: "csr_layer",
    BSRMatrix: "bsr_layer",
    QuantizedCSR: "qcsr_layer",
    PackedMatrix: "packed_layer",
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

    __slots__ = (
        "_weight",
        "_bias",
        "_activation",
        "_kernel",
        "_kernel_args",
        "_code",
        "_family",
    )

    def __init__(self, weight, bias=None, activation="identity"):
        if type(weight) not in _FORMAT_OF:
            raise TypeError(
                "weight must be a CSRMatrix, BSRMatrix, QuantizedCSR or "
                f"PackedMatrix, got {type(weight).__name__} (SparseMLP.from_dense "
                "builds layers from dense arrays)"
            )
        if isinstance(weight, (QuantizedCSR, PackedMatrix)):
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
        self._family = weight._family
        full_bias = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias
        self._kernel_args = (*weight._arrays, full_bias)
        self._code = ACTIVATIONS.index(self._activation)

    @property
    def weight(self):
        """The layer's weight matrix (CSRMatrix, BSRMatrix or QuantizedCSR)."""
        return self._weight

    @property
    def bias(self):
        """The bias (out_features values in the compute dtype), or None."""
        return self._bias

    @property
    def activation(self):
        """The activation's name: "identity", "relu", "tanh" or "sigmoid"."""
        return self._activation

    @property
    def in_features(self):
        """Inputs of the layer: the weight's columns."""
        return self._weight.shape[1]

    @property
    def out_features(self):
        """Outputs of the layer: the weight's rows."""
        return self._weight.shape[0]

    @property
    def dtype(self):
        """The dtype the layer computes in (float32 for int8 weights)."""
        return self._weight.dtype

    @property
    def format(self):
        """The weight's format: "csr", "bsr", "int8" or "packed"."""
        return _FORMAT_OF[type(self._weight)]

    @property
    def storage(self):
        """How the weight is stored, for reports: "csr float32", "bsr
        float64", "csr int8", or a PackedMatrix's layout and codec, such as
        "bitmask int4"."""
        W = self._weight
        if isinstance(W, PackedMatrix):
            bits = (
                f" ({W.bits} bits)"
                if W.bits and W.bits < 8 and (f"int{W.bits}" != W.codec)
                else ""
            )
            return f"{W.layout} {W.codec}{bits}"
        if isinstance(W, QuantizedCSR):
            return f"csr int8 ({W.bits} bits)" if W.bits < 8 else "csr int8"
        return f"{self.format} {W.dtype}"

    @property
    def nnz(self):
        """Stored weights (for BSR, the zeros inside blocks included)."""
        return self._weight.nnz

    @property
    def density(self):
        """The weight's stored entries per entry of the matrix."""
        return self._weight.density

    @property
    def stored_weights(self):
        """Non-zero weights stored (no explicit zeros, no fillers)."""
        W = self._weight
        if isinstance(W, PackedMatrix):
            return W.stored_weights
        return int(
            np.count_nonzero(W.values if isinstance(W, QuantizedCSR) else W.data)
        )

    @property
    def value_bits(self):
        """Bits of the stored values (every stored entry, at its width)."""
        W = self._weight
        if isinstance(W, PackedMatrix):
            return W.value_bits
        stored = W.values if isinstance(W, QuantizedCSR) else W.data
        return stored.size * stored.itemsize * 8

    @property
    def nbytes(self):
        """Bytes of the weight (values, indices, pointers, scales) + bias,
        as the model file stores them (a bias of exact float16 values in 2
        bytes each)."""
        bias = 0 if self._bias is None else float_width(self._bias) * self._bias.size
        return self._weight.nbytes + bias

    def __repr__(self):
        return (
            f"SparseLinear(out_features={self.out_features}, "
            f"in_features={self.in_features}, format={self.format!r}, "
            f"nnz={self.nnz}, bias={self._bias is not None}, "
            f"activation={self._activation!r})"
        )


def size_ratios(sizes):
    """The three ratios of ``SparseMLP.sizes`` as one line of text."""
    return (
        f"{sizes['parameter_ratio']:.1f}x fewer parameters, "
        f"{sizes['bit_ratio']:.1f}x fewer value bits, "
        f"{sizes['byte_ratio']:.1f}x fewer bytes"
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
    return _checks.threads(threads)


class _BatchBuffers:
    """The feature-major activation buffers of a model, kept for the last
    ``CACHED_BATCH_SIZES`` batch sizes: the input (in, batch) and one
    (out_l, batch) per layer.  A call takes a batch size's buffers out
    while it runs, so concurrent calls never share one."""

    def __init__(self, model):
        self._model = model
        self._cache = {}
        self._lock = threading.Lock()

    def take(self, batch):
        """The buffers for ``batch``, from the cache or new."""
        with self._lock:
            buffers = self._cache.pop(batch, None)
        if buffers is None:
            model = self._model
            buffers = [np.empty((model.in_features, batch), dtype=model.dtype)] + [
                np.empty((layer.out_features, batch), dtype=model.dtype)
                for layer in model.layers
            ]
        return buffers

    def give_back(self, batch, buffers):
        with self._lock:
            self._cache[batch] = buffers  # the most recently used last
            while len(self._cache) > CACHED_BATCH_SIZES:
                del self._cache[next(iter(self._cache))]

    def clear(self):
        with self._lock:
            self._cache.clear()

    def __len__(self):
        """The number of batch sizes whose buffers are cached."""
        return len(self._cache)


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

    def __init__(
        self, layers, classes=None, backend=None, threads=None, dense_size=None
    ):
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
        self.dense_size = dense_size
        self._nnz = sum(layer.nnz for layer in layers)
        self._in_features = layers[0].in_features
        self._dtype = layers[0].dtype
        self._buffers = _BatchBuffers(self)
        # the one-sample plans, one per backend name, built on first use
        self._plans = {}
        self._plan_layers = tuple(
            (layer.format, layer.weight.shape, layer._kernel_args, layer._code)
            for layer in layers
        )
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
    def dense_size(self):
        """(weights, biases) of the dense network this model was compressed
        from, which the size ratios are counted against (``sizes``); by
        default the dense network of this model's own shapes.  Stored in
        the model file, so that a board can report the ratios."""
        return self._dense_size

    @dense_size.setter
    def dense_size(self, value):
        if value is None:
            value = (
                sum(layer.in_features * layer.out_features for layer in self._layers),
                sum(
                    layer.out_features
                    for layer in self._layers
                    if layer.bias is not None
                ),
            )
        try:
            weights, biases = value
        except (TypeError, ValueError):
            raise TypeError(
                f"dense_size must be a pair (weights, biases), got {value!r}"
            ) from None
        self._dense_size = (
            _checks.integer(weights, "dense_size weights", minimum=0),
            _checks.integer(biases, "dense_size biases", minimum=0),
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
        """The layers, a tuple of SparseLinear."""
        return self._layers

    @property
    def classes(self):
        """The class labels predict returns, or None (class indices)."""
        return self._classes

    @property
    def in_features(self):
        """Inputs of the network: the first layer's in_features."""
        return self._layers[0].in_features

    @property
    def out_features(self):
        """Outputs of the network: the last layer's out_features."""
        return self._layers[-1].out_features

    @property
    def dtype(self):
        """float32 or float64: the dtype the network computes in and returns."""
        return self._layers[0].dtype

    @property
    def nnz(self):
        """Stored weights over all layers."""
        return self._nnz

    @property
    def nbytes(self):
        """Bytes of every layer's weights and biases: the deployed model."""
        return sum(layer.nbytes for layer in self._layers)

    # Inference -----------------------------------------------------------

    def clear_buffers(self):
        """Free the cached activation buffers (the next call of each batch
        size allocates them again)."""
        self._buffers.clear()

    def _sample_plan(self, backend, threads):
        """The one-sample plan of the backend a call with these ``backend``
        and ``threads`` arguments runs on, when it runs on one thread, else
        None (the general path then validates the arguments).  Built by that
        backend (its ``MLPPlan``) on first use and kept: it depends only on
        the layers, which do not change.  Two threads building it at once
        build two equal plans, and one is kept."""
        if threads is None:
            threads = self._threads
        if threads is None:
            if self._nnz >= PARALLEL_MIN_WORK:
                return None  # the general path runs big layers on every CPU
        elif type(threads) is not int or threads != 1:
            return None
        name = resolve(self._backend if backend is None else backend)
        plan = self._plans.get(name)
        if plan is None:
            plan = kernels_for("sparse", name).MLPPlan(self._plan_layers)
            self._plans[name] = plan
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
        batch of one of shape (1, in_features), on one thread (``threads``
        1, or None for fewer than ``kernels.sparse.PARALLEL_MIN_WORK``
        stored weights): one call of the backend's one-sample plan for the
        whole network (``MLPPlan``), the same result; about 1 us for a
        network of a few hundred weights on the cython backend.
        """
        if type(X) is np.ndarray and X.ndim == 1:
            plan = None
            if (
                # the usual call, checked inline: a function call is a fifth
                # of a compiled plan's own time on a small network
                backend is None
                and threads is None
                and self._threads is None
                and self._nnz < PARALLEL_MIN_WORK
            ):
                plan = self._plans.get(self._backend or get_backend())
            if plan is None:
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
        n_threads = _n_threads(threads, self._nnz * batch)
        buffers = self._buffers.take(batch)
        if batch == 1 and X.dtype == self._dtype and X.flags.c_contiguous:
            H = X.reshape(n, 1)  # a view: the kernels only read it
        else:
            H = buffers[0]
            np.copyto(H, X.T if X.ndim == 2 else X[:, None], casting="unsafe")
        for layer, out in zip(self._layers, buffers[1:], strict=True):
            # out = activation(W @ H + bias): the layer kernel, called
            # directly (H and out are C-contiguous and of the weight's dtype;
            # the per-call checks of kernels.sparse.spmm would cost more than
            # a small layer's product at batch 1)
            getattr(kernels_for(layer._family, backend), layer._kernel)(
                *layer._kernel_args, H, layer._code, out, n_threads
            )
            H = out
        result = H[:, 0].copy() if X.ndim == 1 else H.T.copy()
        self._buffers.give_back(batch, buffers)
        return result

    def predict_proba(self, X, backend=None, threads=None):
        """Class probabilities, shape (batch, n_classes) (or (n_classes,)):
        the softmax of ``forward``'s output (max-subtracted, so it never
        overflows).  A single-output network is a binary logistic
        classifier, as scikit-learn's: [1 - p, p] with p = sigmoid(output)
        (p = output when the last activation already is "sigmoid").

        One sample of a multi-output network on the one-sample plan (as
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

        One sample on the one-sample plan (as ``forward``): the argmax is
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
        bits=None,
        classes=None,
        dtype=None,
        backend=None,
        threads=None,
        codec=None,
        dense_size=None,
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
        quantised on ``bits`` bits, default 8, ``QuantizedCSR.from_csr``):
        the matrix classes of ``kernels.sparse``.  The deployment formats
        (``kernels.packed.PackedMatrix``, float32 compute): "auto" (per
        layer, the layout of fewest bytes), "dense", "bitmask", "delta4",
        "delta8", or "csr" with a ``codec``; ``codec`` "float32",
        "float16", "int8", "int4", "int2", or None: integers on ``bits``
        bits when ``bits`` is given, else float32.  Their biases are
        rounded to float16 when the values are float16 or integers (the
        model file then stores them in 2 bytes; the values already carry a
        larger error).  ``threshold``, ``density``, ``fmt``, ``blocksize``,
        ``bits`` and ``codec`` are each one value for every layer or a list
        of one per layer.

        ``dtype`` (float32 or float64) of the weights and biases; None:
        float32 if a layer is int8 or a deployment format (which compute in
        float32), else the weights' common dtype.  ``classes``, ``backend``,
        ``threads`` and ``dense_size`` as for ``SparseMLP`` (None: the
        dense network of the layers' shapes, that of ``weights``).
        """
        from kernels import _convert

        layers = _convert.dense_layers(
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
            codec,
        )
        return cls(
            layers,
            classes=classes,
            backend=backend,
            threads=threads,
            dense_size=dense_size,
        )

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
        from kernels import _convert

        weights, biases, activation, classes = _convert.sklearn_network(mlp)
        return cls.from_dense(
            weights,
            biases,
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
        """Write the model file (docs/model-file.md) to ``path``, a path or a
        writable binary file: one buffer of a 32-byte header, a 16-byte
        entry per layer, the class labels and each layer's arrays, with a
        CRC32 over the whole; no pickle, and no suffix added to the name."""
        data = self.to_bytes()
        if hasattr(path, "write"):
            path.write(data)
        else:
            with open(path, "wb") as file:
                file.write(data)

    def to_bytes(self):
        """The model file as bytes (what ``save`` writes)."""
        from kernels import _model_file

        return _model_file.to_bytes(self)

    @classmethod
    def load(cls, path, backend=None, threads=None):
        """A model saved by ``save`` (or an .npz file of format_version 1,
        written before), from a path or a readable binary file, validated
        as any untrusted input: a bad magic, version or CRC32, a size that
        does not match the file, an array running past its end, an unknown
        code, an invalid sparse structure (the full O(stored entries)
        check), non-finite or out-of-range values, layers that do not chain
        or a layer larger than the file can describe is a ValueError naming
        the file; nothing is allocated from a size before it is checked
        against the file's length.  The weight arrays are views of the
        memory-mapped file (no copy).  A path that is not a regular file (a
        directory, a FIFO) is a ValueError, one that cannot be opened the
        usual OSError.  Needs neither scipy nor numba.
        """
        from kernels import _model_file

        def build(layers, classes, dense_size):
            return cls(
                layers,
                classes=classes,
                backend=backend,
                threads=threads,
                dense_size=dense_size,
            )

        return _model_file.read(path, build)

    # Reports -------------------------------------------------------------

    def sizes(self):
        """The one size accounting (ALGORITHMS.md section 3), against the
        original dense network (``dense_size``), as a dict:

        * ``dense_weights``, ``dense_biases``, ``dense_bytes`` (float32);
        * ``stored_weights``: non-zero weights stored; ``parameter_ratio``
          = dense weights / stored weights (as Sparse VD and the source
          count);
        * ``value_bits``: bits of the stored values; ``bit_ratio`` = dense
          bits (32 per weight) / value bits (as the source's scripts count:
          no index cost);
        * ``file_bytes``: the model file's bytes, all-in; ``byte_ratio`` =
          dense float32 bytes / file bytes (the honest one).
        """
        weights, biases = self._dense_size
        stored = sum(layer.stored_weights for layer in self._layers)
        bits = sum(layer.value_bits for layer in self._layers)
        file_bytes = len(self.to_bytes())
        dense_bytes = 4 * (weights + biases)
        return {
            "dense_weights": weights,
            "dense_biases": biases,
            "dense_bytes": dense_bytes,
            "stored_weights": stored,
            "value_bits": bits,
            "file_bytes": file_bytes,
            "parameter_ratio": weights / stored if stored else float("inf"),
            "bit_ratio": 32 * weights / bits if bits else float("inf"),
            "byte_ratio": dense_bytes / file_bytes,
        }

    def summary(self):
        """A table of the layers (shape as out x in, storage, stored
        weights, density, bytes of arrays, activation) and the three size
        ratios of ``sizes`` against the original dense network."""
        rows = [("layer", "shape", "storage", "nnz", "density", "bytes", "activation")]
        for i, layer in enumerate(self._layers):
            m, n = layer.weight.shape
            rows.append(
                (
                    str(i),
                    f"{m} x {n}",
                    layer.storage,
                    f"{layer.stored_weights:,}",
                    f"{100 * layer.density:.2f}%",
                    f"{layer.nbytes:,}",
                    layer.activation,
                )
            )
        sizes = self.sizes()
        rows.append(
            (
                "total",
                "",
                "",
                f"{sizes['stored_weights']:,}",
                "",
                f"{self.nbytes:,}",
                "",
            )
        )
        widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
        right = (False, False, False, True, True, True, False)
        lines = [
            "  ".join(
                cell.rjust(w) if r else cell.ljust(w)
                for cell, w, r in zip(row, widths, right, strict=True)
            ).rstrip()
            for row in rows
        ]
        header = f"SparseMLP {self._sizes()}, {self.dtype}"
        footer = (
            f"model file: {sizes['file_bytes']:,} bytes; against the dense "
            f"float32 network ({sizes['dense_weights']:,} weights, "
            f"{sizes['dense_bytes']:,} bytes): {size_ratios(sizes)}"
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
