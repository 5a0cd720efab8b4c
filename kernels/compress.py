"""The compression pipeline (ALGORITHMS.md section 3): train sparse, prune,
quantise, deploy, measure.

``compress(data)`` runs the whole job on a ``Dataset``:

1. standardise the features (mean and standard deviation of the training
   set), later folded into the first layer so the deployed model takes raw
   inputs;
2. train the dense baseline (Adam, no penalty) for the comparison;
3. train with a sparsity penalty (``kernels.train.train_mlp``: SGD with
   the decaying step and prox l1 by default; the source's cumulative l1
   penalty is the alternative, less accurate at equal compression on
   digits, see ``bench/compression_study.py``);
4. remove dead neurons (``remove_dead_neurons``), then fine-tune the
   surviving weights with the sparsity pattern fixed (Adam);
5. quantise the survivors (``bits`` from 8 down to 2, one float16 scale
   per row, packed two or four per byte on 4 or 2 bits), store each layer
   in the layout of fewest bytes (dense, CSR, delta-index CSR or bitmask,
   ``kernels.packed``), and keep the smallest precision whose training
   accuracy stays within ``max_accuracy_drop`` of the float network
   (``deploy``);
6. measure on the held-out data: accuracy, bytes per layer, the three
   size ratios against the original dense network (``SparseMLP.sizes``:
   parameters, value bits, and the model file's bytes, the compression
   ratio), and batch-1 and batch-64 inference time of the compressed
   model against the dense one in NumPy.
"""

import functools
import os
import time
from dataclasses import dataclass, field

import numpy as np

from kernels.benchmarks.timing import interleaved_medians, single_thread_blas
from kernels.nn import SparseMLP, size_ratios
from kernels.train import MLP, OPTIMIZERS, PENALTIES, train_mlp

__all__ = [
    "Dataset",
    "CompressionResult",
    "compress",
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
    candidates = [("int", bits), ("float16", None), ("float32", None)]
    if X_check is not None:
        reference = network.accuracy(X_check, y_check)
    for codec, codec_bits in candidates:
        model = SparseMLP.from_dense(
            network.weights,
            network.biases,
            fmt="auto",
            codec=codec,
            bits=codec_bits,
            classes=classes,
            dense_size=dense_size,
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


@dataclass
class CompressionResult:
    """What ``compress`` measured; ``as_dict()`` is what ``--json`` prints."""

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

    @property
    def compression_ratio(self):
        """The dense float32 network's bytes over the model file's bytes
        (``sizes["byte_ratio"]``, ALGORITHMS.md section 3)."""
        return self.dense_bytes / self.file_bytes

    def as_dict(self):
        """The result as a dict of plain values (what --json prints)."""
        return {
            "data": self.settings.get("data"),
            "dense_accuracy": self.dense_accuracy,
            "sparse_accuracy": self.sparse_accuracy,
            "tuned_accuracy": self.tuned_accuracy,
            "accuracy": self.accuracy,
            "compression_ratio": self.compression_ratio,
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


@_on_one_blas_thread
def compress(
    data,
    hidden=(300, 100),
    *,
    optimizer="sgd",
    lam=None,
    penalty="l1",
    beta=1.5e-2,
    group_beta=0.0,
    step=None,
    step_decay=0.1,
    epochs=100,
    batch_size=32,
    fine_tune_epochs=100,
    fine_tune_step=3e-3,
    dense_epochs=30,
    bits=8,
    max_accuracy_drop=0.005,
    seed=0,
    progress=None,
    latency_budget=0.5,
    dense=None,
):
    """Run the pipeline of this module's docstring on ``data`` (a
    ``Dataset``) and return a ``CompressionResult``.

    Training options as ``kernels.train.train_mlp`` (``epochs`` is the IFO
    budget of the sparse training in passes over the data); the dense
    baseline trains ``dense_epochs`` with Adam, the fine-tuning
    ``fine_tune_epochs`` with Adam (step ``fine_tune_step``) on the
    surviving weights of the network without its dead neurons (0: none).
    ``progress(phase, ifos, budget, loss)`` is called after every epoch of
    each phase ("dense", "sparse", "fine-tune").  ``dense``: an already
    trained dense ``MLP`` on standardised inputs to reuse (a sweep trains
    it once), with its test accuracy, as a pair.  BLAS runs on one thread
    throughout (``kernels.benchmarks.timing.single_thread_blas``).
    """
    started = time.perf_counter()
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    hidden = [int(h) for h in hidden]
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be one or more positive widths, got {hidden}")
    X, X_test, mean, scale = standardised(data)

    def phase(name):
        if progress is None:
            return None
        return lambda ifos, budget, loss: progress(name, ifos, budget, loss)

    if dense is None:
        dense = train_dense(data, hidden, dense_epochs, seed, phase("dense"))
    dense_net, dense_accuracy = dense

    trained = train_mlp(
        X,
        data.y_train,
        hidden,
        optimizer=optimizer,
        lam=lam,
        penalty=penalty,
        beta=beta,
        group_beta=group_beta,
        step=step,
        step_decay=step_decay,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=phase("sparse"),
    )
    network, ifos, train_seconds = trained.network, trained.ifos, trained.seconds
    history = trained.history
    sparse_accuracy = network.accuracy(X_test, data.y_test)
    network, removed = remove_dead_neurons(network)
    if fine_tune_epochs and network.nnz:
        tuned = train_mlp(
            X,
            data.y_train,
            network=network,
            optimizer="adam",
            step=fine_tune_step,
            fine_tune=True,
            epochs=fine_tune_epochs,
            batch_size=batch_size,
            seed=seed + 1,
            progress=phase("fine-tune"),
        )
        network = tuned.network
        ifos += tuned.ifos
        train_seconds += tuned.seconds
    tuned_accuracy = network.accuracy(X_test, data.y_test)

    sizes = [data.n_features, *hidden, data.n_classes]
    dense_nnz = sum(m * n for n, m in zip(sizes[:-1], sizes[1:], strict=True))
    dense_size = (dense_nnz, sum(sizes[1:]))
    pruned = _fold_standardiser(network, mean, scale)
    model, fmt = deploy(
        pruned,
        data.classes,
        bits,
        data.X_train,
        data.y_train,
        max_accuracy_drop,
        dense_size=dense_size,
    )
    accuracy = float(np.mean(model.predict(data.X_test) == data.classes[data.y_test]))
    model_sizes = model.sizes()
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
        "optimizer": optimizer,
        "lam": lam,
        "penalty": penalty,
        "beta": beta,
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
    return CompressionResult(
        model=model,
        dense_accuracy=dense_accuracy,
        sparse_accuracy=sparse_accuracy,
        tuned_accuracy=tuned_accuracy,
        accuracy=accuracy,
        nnz=model.nnz,
        bytes=model.nbytes,
        dense_bytes=model_sizes["dense_bytes"],
        dense_nnz=dense_nnz,
        file_bytes=model_sizes["file_bytes"],
        sizes=model_sizes,
        fmt=fmt,
        bits=bits,
        hidden=[layer.out_features for layer in model.layers[:-1]],
        removed=removed,
        layers=layers,
        latency=latency,
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        ifos=ifos,
        settings=settings,
        history=history,
    )


@_on_one_blas_thread
def train_dense(data, hidden=(300, 100), epochs=30, seed=0, progress=None):
    """The dense baseline on standardised inputs: (MLP, test accuracy)."""
    X, X_test, _, _ = standardised(data)
    result = train_mlp(
        X,
        data.y_train,
        hidden,
        optimizer="adam",
        epochs=epochs,
        seed=seed,
        progress=progress,
    )
    return result.network, result.network.accuracy(X_test, data.y_test)


def _bits_note(result):
    return f", {result.bits} bits" if result.fmt.startswith("int") else ""


def format_result(result):
    """The result table printed by ``python -m kernels demo`` and
    ``compress``."""
    r = result
    lines = [
        f"data: {r.settings['data']}; network {r.settings['hidden']} hidden, "
        f"optimizer {r.settings['optimizer']}"
        + ("" if r.settings["lam"] is None else f" (lam={r.settings['lam']})")
        + f", penalty {r.settings['penalty']} (beta={r.settings['beta']:g}"
        + (
            f", group_beta={r.settings['group_beta']:g}"
            if r.settings["group_beta"]
            else ""
        )
        + ")",
        "",
        "| model | test accuracy | non-zeros | file bytes | compression |",
        "|---|---:|---:|---:|---:|",
        f"| dense float32 | {100 * r.dense_accuracy:.2f}% | {r.dense_nnz:,} | "
        f"{r.dense_bytes:,} | 1.0x |",
        f"| sparse float32, trained | {100 * r.sparse_accuracy:.2f}% | | | |",
        f"| sparse float32, fine-tuned | {100 * r.tuned_accuracy:.2f}% | | | |",
        f"| deployed ({r.fmt}{_bits_note(r)}) | {100 * r.accuracy:.2f}% | "
        f"{r.nnz:,} | {r.file_bytes:,} | {r.compression_ratio:.1f}x |",
        "",
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
        f"training: {r.ifos:,} IFOs in {r.train_seconds:.1f} s; whole run "
        f"{r.seconds:.1f} s",
    ]
    return "\n".join(lines)
