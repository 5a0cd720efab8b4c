"""The compression pipeline (ALGORITHMS.md section 3): train sparse, prune,
quantise, deploy, measure.

``compress(data)`` runs the whole job on a ``Dataset``, for a goal: the
most compressed model within ``max_drop`` points of the dense model's
accuracy, or the most accurate one within ``target_bytes``, judged on a
validation split of the training set (``validation_split``):

1. hold out the validation split; standardise the features (mean and
   standard deviation of the rest), later folded into the first layer so
   the deployed model takes raw inputs;
2. train the dense baseline (Adam, no penalty) for the comparison;
3. for each strength of the search (``kernels._search.search_strength``,
   log scale: bracket, then bisection), train sparse
   (``kernels.train.train_mlp``: SGD with the decaying step and prox l1
   by default, or gradual magnitude pruning, ``sparsifier="gmp"``);
   remove dead neurons (``remove_dead_neurons``); fine-tune the survivors
   with the sparsity pattern fixed (Adam), kept when the validation split
   says it helps;
4. choose each layer's precision (int 8 to 2 bits, one float16 scale per
   row, packed two or four per byte on 4 or 2 bits; float16; float32) and
   its layout of fewest bytes (dense, CSR, delta-index CSR or bitmask,
   ``kernels.packed``) against the goal (``kernels._search.
   choose_deployment``); the best acceptable deployment of every strength
   tried wins;
5. measure on the test split, once: accuracy and the goal's verdict
   (``CompressionResult.met``, ``budget``), bytes per layer, the three
   size ratios against the original dense network (``SparseMLP.sizes``:
   parameters, value bits, and the model file's bytes, the compression
   ratio), and batch-1 and batch-64 inference time of the compressed
   model against the dense one in NumPy.

``deploy`` is the one-network step of earlier versions (one bit width,
float fallbacks judged on given data), kept for callers that choose
their own network.
"""

import functools
import math
import numbers
import os
import time
from dataclasses import dataclass, field

import numpy as np

from kernels import _search
from kernels.benchmarks.timing import interleaved_medians, single_thread_blas
from kernels.nn import SparseMLP, size_ratios
from kernels.train import MLP, OPTIMIZERS, PENALTIES, train_mlp

__all__ = [
    "Dataset",
    "CompressionResult",
    "SearchPoint",
    "compress",
    "validation_split",
    "deploy",
    "load_dataset",
    "load_digits",
    "remove_dead_neurons",
    "OPTIMIZERS",
    "PENALTIES",
]

BITS = (8, 6, 5, 4, 3, 2)
DATA_KEYS = ("X_train", "y_train", "X_test", "y_test")


# Data ------------------------------------------------------------------------


@dataclass
class Dataset:
    """Training and held-out data: X float32 (n, d), y class indices into
    ``classes`` (the labels, sorted)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray
    name: str = "data"

    @property
    def n_features(self):
        """Inputs per sample."""
        return self.X_train.shape[1]

    @property
    def n_classes(self):
        """The number of classes."""
        return len(self.classes)


def _stratified_split(y, test_size, seed):
    """Indices (train, test): each class split test_size / (1 - test_size)
    at random, so both sides keep the class proportions."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        k = int(round(test_size * len(members)))
        test.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(seed=0, test_size=0.25):
    """The 8x8 digits shipped with the package (``kernels/data``), pixel
    values 0..16 as float32, split 75/25 stratified with ``seed``."""
    path = os.path.join(os.path.dirname(__file__), "data", "digits.npz")
    with np.load(path, allow_pickle=False) as archive:
        X, y = archive["X"].astype(np.float32), archive["y"].astype(np.intp)
    train, test = _stratified_split(y, test_size, seed)
    return Dataset(X[train], y[train], X[test], y[test], np.arange(10), name="digits")


def read_samples(path, key_sets):
    """{key: array} of the first set of keys in ``key_sets`` that the .npz
    file ``path`` holds in full (no pickle), each (X, y) pair checked: X a
    2-D real array with rows and finite values, y 1-D with one label per
    row.  ``key_sets``: tuples of keys, X_* and y_* keys in pairs.  Any
    problem, a missing or unreadable file included, is a ValueError naming
    the file."""
    name = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            for keys in key_sets:
                if set(keys) <= set(archive.files):
                    arrays = {key: archive[key] for key in keys}
                    break
            else:
                missing = [k for k in key_sets[0] if k not in archive.files]
                wanted = " (or ".join(" and ".join(keys) for keys in key_sets)
                raise ValueError(
                    f"missing {', '.join(missing)}"
                    if len(key_sets) == 1
                    else f"needs {wanted}" + ")" * (len(key_sets) - 1)
                )
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name}: not a data file: {exc}") from None
    except Exception as exc:  # a corrupt archive raises many types
        raise ValueError(f"{name}: not a valid .npz file ({exc})") from None
    for x_key in (key for key in arrays if key.startswith("X")):
        y_key = "y" + x_key[1:]
        X, y = arrays[x_key], arrays[y_key]
        if X.ndim != 2 or X.dtype.kind not in "iuf":
            raise ValueError(
                f"{name}: {x_key} must be a 2-D real array, got "
                f"dtype {X.dtype} and shape {X.shape}"
            )
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(
                f"{name}: {y_key} must be 1-D with one label per row of {x_key} "
                f"({len(X)}), got shape {y.shape}"
            )
        if len(X) == 0:
            raise ValueError(f"{name}: {x_key} has no rows")
        if not np.isfinite(X).all():
            raise ValueError(f"{name}: {x_key} holds NaN or inf")
    return arrays


def load_dataset(path):
    """A ``Dataset`` from an .npz file holding ``X_train``, ``y_train``,
    ``X_test``, ``y_test`` (no pickle): X real 2-D arrays with the same
    number of columns and finite values, y 1-D labels (integers or
    strings) of matching lengths, every test label seen in training.
    Anything else is a ValueError naming the file and the problem."""
    name = os.fspath(path)
    arrays = read_samples(path, [DATA_KEYS])
    if arrays["X_train"].shape[1] != arrays["X_test"].shape[1]:
        raise ValueError(
            f"{name}: X_train has {arrays['X_train'].shape[1]} columns but X_test "
            f"{arrays['X_test'].shape[1]}"
        )
    try:
        classes, y_train = np.unique(arrays["y_train"], return_inverse=True)
    except TypeError:
        raise ValueError(
            f"{name}: y_train holds labels that cannot be sorted"
        ) from None
    if len(classes) < 2:
        raise ValueError(f"{name}: y_train must hold at least two classes")
    y_test = np.searchsorted(classes, arrays["y_test"])
    unseen = (y_test >= len(classes)) | (
        classes[np.minimum(y_test, len(classes) - 1)] != arrays["y_test"]
    )
    if unseen.any():
        raise ValueError(
            f"{name}: y_test holds labels not in y_train, such as "
            f"{arrays['y_test'][unseen][0]!r}"
        )
    return Dataset(
        arrays["X_train"].astype(np.float32),
        y_train.reshape(-1).astype(np.intp),
        arrays["X_test"].astype(np.float32),
        y_test.astype(np.intp),
        classes,
        name=os.path.basename(name),
    )


# Pruning and deployment -------------------------------------------------------


def _standardiser(X):
    """(mean, scale) of the inputs' standardisation: each feature centred
    and divided by its standard deviation, floored at a tenth of the pooled
    one.  The floor matters because the scaling is folded into the first
    layer (``_fold_standardiser``): a rarely-varying feature (a border
    pixel) would otherwise get a weight many times the others in its row,
    and one large weight leaves the rest of the row a few quantisation
    levels."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    pooled = float(np.sqrt(np.mean(scale**2)))
    floor = 0.1 * pooled if pooled > 0 else 1.0
    return mean, np.maximum(scale, floor)


def standardised(data):
    """(X_train, X_test, mean, scale): ``data``'s inputs standardised by
    ``_standardiser`` of its training set, float32."""
    mean, scale = _standardiser(data.X_train)
    return (
        ((data.X_train - mean) / scale).astype(np.float32),
        ((data.X_test - mean) / scale).astype(np.float32),
        mean,
        scale,
    )


def _fold_standardiser(network, mean, scale):
    """The network on raw inputs: W (x - m) / s + b = (W / s) x + (b - (W / s) m).
    Zeros stay zeros."""
    W = network.weights[0].astype(np.float64) / scale
    b = network.biases[0] - W @ mean
    return MLP([W, *network.weights[1:]], [b, *network.biases[1:]])


def remove_dead_neurons(network):
    """The same function with fewer hidden units: a unit with no outgoing
    weight is dropped; a unit with no incoming weight outputs the constant
    relu(b_j), which is folded into the next layer's bias before the unit
    is dropped.  Repeated until no unit is dead (removing one can kill
    another).  Returns (network, removed), removed the number of units
    dropped per hidden layer.  The outputs are those of the input network
    up to float32 rounding of the folded biases."""
    weights = [W.copy() for W in network.weights]
    biases = [b.astype(np.float64) for b in network.biases]
    removed = [0] * (len(weights) - 1)
    changed = True
    while changed:
        changed = False
        for i in range(len(weights) - 1):
            incoming = np.any(weights[i] != 0, axis=1)
            outgoing = np.any(weights[i + 1] != 0, axis=0)
            constant = ~incoming & outgoing
            if constant.any():
                value = np.maximum(biases[i][constant], 0.0)
                biases[i + 1] += weights[i + 1][:, constant].astype(np.float64) @ value
            keep = incoming & outgoing
            if not keep.all():
                weights[i] = weights[i][keep]
                biases[i] = biases[i][keep]
                weights[i + 1] = weights[i + 1][:, keep]
                removed[i] += int((~keep).sum())
                changed = True
    return MLP(weights, biases), removed


def deploy(
    network,
    classes,
    bits=8,
    X_check=None,
    y_check=None,
    max_accuracy_drop=0.005,
    dense_size=None,
):
    """The smallest ``SparseMLP`` for the (pruned) ``network``: per layer
    the layout of fewest bytes (``fmt="auto"``), with values quantised on
    ``bits`` bits (one float16 scale per row; int2 / int4 / int8 packing),
    unless that costs more than ``max_accuracy_drop`` of accuracy on
    (X_check, y_check) against the float network; then float16 values
    under the same test, then float32.  ``dense_size``: the (weights,
    biases) of the original dense network the sizes are counted against.
    Returns (model, codec), the codec "int8", "int4", "int2" (with the
    model's ``bits``), "float16" or "float32"."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    if X_check is not None:
        reference = network.accuracy(X_check, y_check)
    for precision in (bits, "float16", "float32"):
        model = _search.deployment(
            network, classes, (precision,) * len(network.weights), dense_size
        )
        if X_check is None:
            break
        accuracy = np.mean(model.predict(X_check) == classes[y_check])
        if accuracy >= reference - max_accuracy_drop:
            break
    return model, model.layers[0].weight.codec


# Measuring ---------------------------------------------------------------------


def _latency(model, dense, X, budget):
    """Batch 1 (a 1-D sample) and batch 64: the compressed model's
    ``forward`` against the dense ``MLP``'s ``logits``, the NumPy a user
    would write (a product, the bias, an in-place ReLU per layer), BLAS on
    one thread."""
    rows = {}
    for batch in (1, 64):
        x = X[0] if batch == 1 else X[np.arange(batch) % len(X)]
        x = np.ascontiguousarray(x, np.float32)
        calls = {
            "compressed": functools.partial(model.forward, x),
            "dense": functools.partial(dense.logits, x),
        }
        for call in calls.values():
            call()  # warm-up: buffers of this batch size
        seconds = interleaved_medians(calls, budget=budget)
        ours, theirs = seconds["compressed"], seconds["dense"]
        rows[batch] = {"compressed": ours, "dense": theirs, "speedup": theirs / ours}
    return rows


# The pipeline ----------------------------------------------------------------

# Where the search of beta starts, and its bounds: the boundary of a 1-point
# budget measured at 0.006 (digits at 28x28) to 0.02 (digits 8x8) with the
# default training; the start is the geometric middle of the two.
SEARCH_START = 4e-3
SEARCH_BOUNDS = (1e-6, 1.0)
# The sparsifiers: "l1" searches the penalty's strength beta; "gmp"
# (gradual magnitude pruning) searches the kept fraction of each weight
# matrix, as its inverse (a strength that grows with the compression), from
# 1 / 16 of the weights.
SPARSIFIERS = ("l1", "gmp")
GMP_START = 16.0
GMP_BOUNDS = (1.0, 1e4)


@dataclass
class SearchPoint:
    """One strength the search trained: ``beta``, the network the sparse
    training gave (``sparse``), the network deployed (dead neurons
    removed, fine-tuned when that helped), both ``MLP`` on raw inputs, its
    best deployment (``kernels._search.Candidate``) and what it cost."""

    beta: float
    density: float
    sparse: object
    network: object
    removed: list
    best: object
    tried: list
    fine_tuned: bool
    ifos: int
    seconds: float
    history: list
    accepted: bool
    reference: float
    dense_bytes: int

    def as_dict(self):
        """The point as plain values (``--json``'s "search")."""
        dense_bytes = self.dense_bytes
        return {
            "beta": self.beta,
            "density": self.density,
            "nnz": self.best.model.nnz,
            "hidden": [layer.out_features for layer in self.best.model.layers[:-1]],
            "precision": self.best.label,
            "file_bytes": self.best.file_bytes,
            "compression_ratio": dense_bytes / self.best.file_bytes,
            "estimated_accuracy": self.best.accuracy,
            "acceptable": self.accepted,
            "fine_tuned": self.fine_tuned,
            "seconds": self.seconds,
        }


@dataclass
class CompressionResult:
    """What ``compress`` measured; ``as_dict()`` is what ``--json`` prints.
    ``budget``: the goal and whether the deployed model met it on the
    validation split (what the search saw) and on the test split (used
    once, for this report); ``met`` is the test split's verdict."""

    model: SparseMLP
    dense_accuracy: float
    sparse_accuracy: float
    tuned_accuracy: float
    accuracy: float
    nnz: int
    bytes: int
    dense_bytes: int
    dense_nnz: int
    file_bytes: int
    fmt: str
    bits: int
    hidden: list
    removed: list
    layers: list
    latency: dict
    seconds: float
    train_seconds: float
    ifos: int
    settings: dict
    sizes: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    budget: dict = field(default_factory=dict)
    search: list = field(default_factory=list)

    @property
    def compression_ratio(self):
        """The dense float32 network's bytes over the model file's bytes
        (``sizes["byte_ratio"]``, ALGORITHMS.md section 3)."""
        return self.dense_bytes / self.file_bytes

    @property
    def met(self):
        """Whether the deployed model met the goal on the test split."""
        return bool(self.budget.get("met", True))

    def as_dict(self):
        """The result as a dict of plain values (what --json prints)."""
        return {
            "data": self.settings.get("data"),
            "dense_accuracy": self.dense_accuracy,
            "sparse_accuracy": self.sparse_accuracy,
            "tuned_accuracy": self.tuned_accuracy,
            "accuracy": self.accuracy,
            "compression_ratio": self.compression_ratio,
            "budget": self.budget,
            "met": self.met,
            "sizes": self.sizes,
            "nnz": self.nnz,
            "dense_nnz": self.dense_nnz,
            "bytes": self.bytes,
            "dense_bytes": self.dense_bytes,
            "file_bytes": self.file_bytes,
            "format": self.fmt,
            "bits": self.bits,
            "hidden": self.hidden,
            "removed_neurons": self.removed,
            "layers": self.layers,
            "latency": {f"batch{k}": v for k, v in self.latency.items()},
            "search": self.search,
            "ifos": self.ifos,
            "train_seconds": self.train_seconds,
            "seconds": self.seconds,
            "settings": self.settings,
        }


def _on_one_blas_thread(function):
    """BLAS on one thread during ``function``: this pipeline's matrix
    products are small, and on a loaded machine OpenBLAS threads waiting for
    a busy core make them many times slower (measured: a 64-row dense
    forward pass 60 ms instead of 0.14 ms)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with single_thread_blas():
            return function(*args, **kwargs)

    return wrapper


def validation_split(data, validation=0.33, seed=0):
    """(fit, val): ``data`` with its training set split in two, stratified
    with ``seed``: ``fit`` trains on the larger part and keeps ``data``'s
    test set, ``val`` holds the smaller part as its test set (what the
    search judges models by).  ``validation`` the fraction held out, in
    (0, 0.5]; every class must keep a training sample."""
    if not (isinstance(validation, numbers.Real) and 0 < validation <= 0.5):
        raise ValueError(f"validation must be in (0, 0.5], got {validation!r}")
    train, held = _stratified_split(data.y_train, validation, seed)
    if len(held) == 0:
        raise ValueError(
            f"a validation split of {validation:g} of {len(data.y_train)} training "
            "samples holds no sample"
        )
    missing = np.setdiff1d(np.arange(data.n_classes), data.y_train[train])
    if missing.size:
        raise ValueError(
            f"class {data.classes[missing[0]]!r} has too few training samples to "
            "keep one after the validation split"
        )
    fit = Dataset(
        data.X_train[train], data.y_train[train], data.X_test, data.y_test,
        data.classes, data.name,
    )  # fmt: skip
    val = Dataset(
        data.X_train[train], data.y_train[train], data.X_train[held],
        data.y_train[held], data.classes, data.name,
    )  # fmt: skip
    return fit, val


def _check_goal(max_drop, target_bytes):
    if target_bytes is not None:
        if (
            not isinstance(target_bytes, numbers.Integral)
            or isinstance(target_bytes, bool)
            or target_bytes < 1
        ):
            raise ValueError(
                f"target_bytes must be a positive integer, got {target_bytes!r}"
            )
        return
    if not (
        isinstance(max_drop, numbers.Real)
        and not isinstance(max_drop, bool)
        and math.isfinite(max_drop)
        and 0 <= max_drop <= 100
    ):
        raise ValueError(f"max_drop must be in [0, 100] points, got {max_drop!r}")


@_on_one_blas_thread
def compress(
    data,
    hidden=(300, 100),
    *,
    max_drop=1.0,
    target_bytes=None,
    validation=0.33,
    confidence=0.0,
    optimizer="sgd",
    lam=None,
    penalty="l1",
    beta=None,
    group_beta=0.0,
    sparsifier="l1",
    density=None,
    step=None,
    step_decay=0.1,
    epochs=100,
    batch_size=32,
    fine_tune_epochs=100,
    fine_tune_step=3e-3,
    dense_epochs=30,
    bits=None,
    seed=0,
    progress=None,
    on_point=None,
    latency_budget=0.5,
    dense=None,
):
    """Run the pipeline of this module's docstring on ``data`` (a
    ``Dataset``) and return a ``CompressionResult``.

    The goal: the most compressed model (fewest model-file bytes) whose
    validation accuracy is at most ``max_drop`` percentage points below
    the dense model's, or with ``target_bytes`` the most accurate model
    whose file fits in that many bytes.  ``validation``: the fraction of
    the training set held out (stratified, with ``seed``) to judge models
    by; the test set is used once, for the report, whose ``budget`` says
    whether the goal held there (``result.met``).  ``confidence``: under
    an accuracy budget, how many standard errors of the validation
    estimate a model must clear the budget by (``kernels._search.Goal``;
    0: the estimate itself).  Measured on digits, seeds 0-4: validation
    0.2 met the 1-point budget on test on 1 seed of 5 (2 with confidence
    1), 0.33 on 4 (bench/budget_defaults.py, docs/compressing.md).

    ``beta`` None searches the l1 strength on a log scale
    (``kernels._search.search_strength``: from ``SEARCH_START``, doubling
    or halving to bracket the goal's boundary, then three bisections);
    a number trains that strength only.  ``sparsifier`` "gmp" prunes by
    magnitude on Zhu & Gupta's schedule instead (``kernels.train``'s
    ``density``), with ``penalty`` at strength ``beta`` beside it when
    ``beta`` is given (None: no penalty); ``density`` None searches the
    kept fraction of each weight matrix (from 1/16, halving or doubling,
    then bisections), a number trains that density only.  ``bits`` None chooses each
    layer's precision (int 8 to 2 bits, float16) on the validation split;
    a number keeps every layer on that many bits.

    Training options as ``kernels.train.train_mlp`` (``epochs`` is the IFO
    budget of each sparse training in passes over the data); the dense
    baseline trains ``dense_epochs`` with Adam, the fine-tuning
    ``fine_tune_epochs`` with Adam (step ``fine_tune_step``) on the
    surviving weights of the network without its dead neurons (0: none),
    kept only when it raises the validation accuracy.
    ``progress(phase, ifos, budget, loss)`` is called after every epoch of
    each phase ("dense", "sparse", "fine-tune"); ``on_point(point)`` after
    each strength the search trained (a ``SearchPoint``).  ``dense``: an
    already trained dense ``MLP`` on standardised inputs
    (``train_dense(data, ...)``, with the same ``validation`` and
    ``seed``) and its test accuracy, as a pair.  BLAS runs on one thread
    throughout (``kernels.benchmarks.timing.single_thread_blas``).
    """
    started = time.perf_counter()
    _check_goal(max_drop, target_bytes)
    if not (isinstance(confidence, numbers.Real) and confidence >= 0):
        raise ValueError(f"confidence must be a number >= 0, got {confidence!r}")
    if bits is not None and bits not in BITS:
        raise ValueError(f"bits must be one of {BITS} or None, got {bits!r}")
    if beta is not None and not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0 or None, got {beta!r}")
    if sparsifier not in SPARSIFIERS:
        raise ValueError(
            f"sparsifier must be one of {', '.join(SPARSIFIERS)}, got {sparsifier!r}"
        )
    if density is not None and not (
        isinstance(density, numbers.Real) and 0 < density <= 1
    ):
        raise ValueError(f"density must be in (0, 1] or None, got {density!r}")
    gmp = sparsifier == "gmp"
    hidden = [int(h) for h in hidden]
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be one or more positive widths, got {hidden}")
    fit, val = validation_split(data, validation, seed)
    X, X_test, mean, scale = standardised(fit)
    X_val = ((val.X_test - mean) / scale).astype(np.float32)

    def phase(name):
        if progress is None:
            return None
        return lambda ifos, budget, loss: progress(name, ifos, budget, loss)

    if dense is None:
        dense = train_dense(
            data, hidden, dense_epochs, seed, phase("dense"), validation
        )
    dense_net, dense_accuracy = dense
    reference = dense_net.accuracy(X_val, val.y_test)
    dense_val = dense_net.predict(X_val)
    goal = _search.Goal(
        reference,
        max_drop=None if target_bytes is not None else float(max_drop),
        target_bytes=target_bytes,
        confidence=confidence,
    )
    sizes = [data.n_features, *hidden, data.n_classes]
    dense_nnz = sum(m * n for n, m in zip(sizes[:-1], sizes[1:], strict=True))
    dense_size = (dense_nnz, sum(sizes[1:]))
    precisions = _search.PRECISIONS if bits is None else (bits,)
    dense_bytes = 4 * sum(dense_size)

    def evaluate(strength):
        point_started = time.perf_counter()
        kept = 1.0 / strength if gmp else None
        strength_l1 = (beta or 0.0) if gmp else strength
        trained = train_mlp(
            X,
            fit.y_train,
            hidden,
            optimizer=optimizer,
            lam=lam,
            penalty=penalty if strength_l1 or group_beta else None,
            beta=strength_l1,
            group_beta=group_beta,
            density=kept,
            step=step,
            step_decay=step_decay,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            progress=phase("sparse"),
        )
        network, ifos, history = trained.network, trained.ifos, trained.history
        sparse = _fold_standardiser(network, mean, scale)
        network, removed = remove_dead_neurons(network)
        fine_tuned = False
        if fine_tune_epochs and network.nnz:
            tuned = train_mlp(
                X,
                fit.y_train,
                network=network,
                optimizer="adam",
                step=fine_tune_step,
                fine_tune=True,
                epochs=fine_tune_epochs,
                batch_size=batch_size,
                seed=seed + 1,
                progress=phase("fine-tune"),
            )
            ifos += tuned.ifos
            if tuned.network.accuracy(X_val, val.y_test) >= network.accuracy(
                X_val, val.y_test
            ):
                network, fine_tuned = tuned.network, True
        raw = _fold_standardiser(network, mean, scale)
        best, tried = _search.choose_deployment(
            raw,
            data.classes,
            (val.X_test, val.y_test, dense_val),
            (data.X_train, data.y_train),
            goal,
            dense_size,
            precisions,
        )
        point = SearchPoint(
            strength_l1, kept, sparse, raw, removed, best, tried, fine_tuned, ifos,
            time.perf_counter() - point_started, history, goal.accepts(best),
            reference, dense_bytes,
        )  # fmt: skip
        if on_point is not None:
            on_point(point)
        return point

    fixed = density if gmp else beta
    start, bounds = (GMP_START, GMP_BOUNDS) if gmp else (SEARCH_START, SEARCH_BOUNDS)
    if fixed is not None:
        strength = 1.0 / fixed if gmp else fixed
        points = {strength: evaluate(strength)}
    elif goal.max_drop is not None:
        points = _search.search_strength(
            evaluate, lambda p: goal.accepts(p.best), start, bounds=bounds
        )
    else:  # a size budget: weak strengths do not fit
        points = _search.search_strength(
            evaluate, lambda p: not goal.accepts(p.best), start, bounds=bounds
        )
    chosen = min(points.values(), key=lambda p: goal.rank(p.best))
    model = chosen.best.model
    accuracy = float(np.mean(model.predict(data.X_test) == data.classes[data.y_test]))
    model_sizes = model.sizes()
    budget = _budget_report(
        goal, chosen.best, accuracy, dense_accuracy, len(val.y_test)
    )
    dense_test = dense_net.predict(X_test)
    disagree = np.count_nonzero(model.predict(data.X_test) != data.classes[dense_test])
    budget["test_spread"] = 100 * math.sqrt(disagree) / len(data.y_test)
    budget["test_samples"] = len(data.y_test)
    dense_raw = _fold_standardiser(dense_net, mean, scale)
    latency = _latency(model, dense_raw, data.X_test, latency_budget)
    layers = [
        {
            "shape": list(layer.weight.shape),
            "format": layer.storage,
            "nnz": layer.nnz,
            "bytes": layer.nbytes,
            "weight_bytes": layer.weight.nbytes,
            "bias_bytes": layer.nbytes - layer.weight.nbytes,
        }
        for layer in model.layers
    ]
    settings = {
        "data": data.name,
        "hidden": hidden,
        "max_drop": goal.max_drop,
        "target_bytes": target_bytes,
        "validation": validation,
        "optimizer": optimizer,
        "lam": lam,
        "penalty": penalty,
        "beta": chosen.beta,
        "sparsifier": sparsifier,
        "density": chosen.density,
        "searched": fixed is None,
        "group_beta": group_beta,
        "step": step,
        "step_decay": step_decay,
        "epochs": epochs,
        "batch_size": batch_size,
        "fine_tune_epochs": fine_tune_epochs,
        "fine_tune_step": fine_tune_step,
        "dense_epochs": dense_epochs,
        "bits": bits,
        "seed": seed,
    }
    first = model.layers[0].weight
    return CompressionResult(
        model=model,
        dense_accuracy=dense_accuracy,
        sparse_accuracy=chosen.sparse.accuracy(data.X_test, data.y_test),
        tuned_accuracy=chosen.network.accuracy(data.X_test, data.y_test),
        accuracy=accuracy,
        nnz=model.nnz,
        bytes=model.nbytes,
        dense_bytes=dense_bytes,
        dense_nnz=dense_nnz,
        file_bytes=model_sizes["file_bytes"],
        sizes=model_sizes,
        fmt=chosen.best.label,
        bits=first.bits if first.codec.startswith("int") else None,
        hidden=[layer.out_features for layer in model.layers[:-1]],
        removed=chosen.removed,
        layers=layers,
        latency=latency,
        seconds=time.perf_counter() - started,
        train_seconds=sum(p.seconds for p in points.values()),
        ifos=sum(p.ifos for p in points.values()),
        settings=settings,
        history=chosen.history,
        budget=budget,
        search=[p.as_dict() for p in points.values()],
    )


def _budget_report(goal, candidate, accuracy, dense_accuracy, validation_samples):
    """The goal and the verdicts: on the validation split (what the search
    saw) and on the test split (``met``)."""
    test_drop = 100 * (dense_accuracy - accuracy)
    validation_drop = 100 * (goal.reference - candidate.accuracy)
    if goal.max_drop is not None:
        met = test_drop <= goal.max_drop + 1e-9
    else:
        met = candidate.file_bytes <= goal.target_bytes
    return {
        "goal": goal.describe(),
        "max_drop": goal.max_drop,
        "target_bytes": goal.target_bytes,
        "dense_validation_accuracy": goal.reference,
        "estimated_accuracy": candidate.accuracy,
        "validation_drop": validation_drop,
        "validation_spread": 100 * candidate.spread,
        "validation_samples": validation_samples,
        "test_drop": test_drop,
        "validation_met": goal.accepts(candidate),
        "met": bool(met),
    }


@_on_one_blas_thread
def train_dense(
    data, hidden=(300, 100), epochs=30, seed=0, progress=None, validation=0.33
):
    """The dense baseline on standardised inputs, trained on the part of
    the training set that ``compress`` trains on (``validation_split``
    with ``validation`` and ``seed``): (MLP, test accuracy)."""
    fit, _ = validation_split(data, validation, seed)
    X, X_test, _, _ = standardised(fit)
    result = train_mlp(
        X,
        fit.y_train,
        hidden,
        optimizer="adam",
        epochs=epochs,
        seed=seed,
        progress=progress,
    )
    return result.network, result.network.accuracy(X_test, fit.y_test)


def budget_line(result):
    """One line: the goal and whether the test split met it, "MISS" first
    when it did not."""
    b = result.budget
    where = (
        f"test accuracy {0.0 - b['test_drop']:+.2f} ± {b.get('test_spread', 0):.2f} "
        f"points against the dense model on {b.get('test_samples', '?')} samples "
        f"(validation estimate {0.0 - b['validation_drop']:+.2f} "
        f"± {b['validation_spread']:.2f} on {b['validation_samples']} samples)"
    )
    if b["target_bytes"] is not None:
        where = f"model file {result.file_bytes:,} bytes; " + where
    if result.met and b["validation_met"]:
        return f"budget met: {b['goal']}; {where}"
    if result.met:
        return (
            f"MISS on the validation split: no model found {b['goal']}; "
            f"the nearest is reported; {where}"
        )
    return f"MISS: the goal was {b['goal']}; {where}"


def format_point(point):
    """One line per strength the search trained (the progress output)."""
    best = point.best
    verdict = "ok" if point.accepted else "no"
    strength = (
        f"beta {point.beta:.3g}: "
        if point.density is None
        else f"density {point.density:.3g}: "
    )
    return (
        strength + f"{best.model.nnz:,} weights, {best.label}, "
        f"{best.file_bytes:,} B ({point.dense_bytes / best.file_bytes:.0f}x), "
        f"estimated validation accuracy {100 * best.accuracy:.2f}% "
        f"({100 * (best.accuracy - point.reference) + 0.0:+.2f} "
        f"± {100 * best.spread:.2f}) {verdict}, "
        f"{point.seconds:.1f} s"
    )


def _sparsifier_text(s):
    searched = ", searched" if s["searched"] else ""
    penalty = f", penalty {s['penalty']} (beta={s['beta']:.3g}"
    if s["sparsifier"] != "gmp":
        return penalty + searched
    text = f", gradual magnitude pruning (density={s['density']:.3g}{searched}"
    return text + (")" + penalty if s["beta"] else "")


def format_result(result):
    """The result table printed by ``python -m kernels demo`` and
    ``compress``."""
    r = result
    s = r.settings
    lines = [
        f"data: {s['data']}; network {s['hidden']} hidden, "
        f"optimizer {s['optimizer']}"
        + ("" if s["lam"] is None else f" (lam={s['lam']})")
        + _sparsifier_text(s)
        + (f", group_beta={s['group_beta']:g}" if s["group_beta"] else "")
        + ")",
        "",
        "| model | test accuracy | non-zeros | file bytes | compression |",
        "|---|---:|---:|---:|---:|",
        f"| dense float32 | {100 * r.dense_accuracy:.2f}% | {r.dense_nnz:,} | "
        f"{r.dense_bytes:,} | 1.0x |",
        f"| sparse float32, trained | {100 * r.sparse_accuracy:.2f}% | | | |",
        f"| sparse float32, deployed network | {100 * r.tuned_accuracy:.2f}% | | | |",
        f"| deployed ({r.fmt}) | {100 * r.accuracy:.2f}% | "
        f"{r.nnz:,} | {r.file_bytes:,} | {r.compression_ratio:.1f}x |",
        "",
        budget_line(r),
        f"against the dense network: {size_ratios(r.sizes)} (model file, all-in)",
        "",
        "| layer | shape | format | non-zeros | weight bytes | bias bytes |",
        "|---|---|---|---:|---:|---:|",
    ]
    for i, layer in enumerate(r.layers):
        m, n = layer["shape"]
        lines.append(
            f"| {i} | {m} x {n} | {layer['format']} | {layer['nnz']:,} | "
            f"{layer['weight_bytes']:,} | {layer['bias_bytes']:,} |"
        )
    lines += [
        "",
        f"hidden units kept: {r.hidden} (removed {r.removed}); arrays "
        f"{r.bytes:,} bytes, model file {r.file_bytes:,} bytes",
        "",
        "| inference | compressed | dense NumPy | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for batch, row in r.latency.items():
        lines.append(
            f"| batch {batch} | {1e6 * row['compressed']:.1f} us | "
            f"{1e6 * row['dense']:.1f} us | {row['speedup']:.1f}x |"
        )
    lines += [
        "",
        f"training: {len(r.search)} strength(s), {r.ifos:,} IFOs in "
        f"{r.train_seconds:.1f} s; whole run {r.seconds:.1f} s",
    ]
    return "\n".join(lines)
