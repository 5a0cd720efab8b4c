"""The SparseMLP model file: writing and reading, validated.

``write(model, path)`` stores a ``kernels.nn.SparseMLP`` as one uncompressed
.npz archive of plain arrays; ``read(path)`` returns its layers and
classes, after validating the file as any untrusted input (see
``SparseMLP.load``).  No pickle, and neither scipy nor numba.
"""

import os
import struct
import zipfile
import zlib

import numpy as np

from kernels.nn import ACTIVATIONS, FORMATS, SparseLinear
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

FORMAT_VERSION = 1


def write(model, path):
    """Write ``model`` to ``path`` (a path or a writable binary file); the
    keys are listed in ``SparseMLP.save``."""
    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "n_layers": np.array(len(model.layers), dtype=np.int64),
    }
    for i, layer in enumerate(model.layers):
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
    arrays["classes"] = np.empty(0) if model.classes is None else model.classes
    if hasattr(path, "write"):
        np.savez(path, **arrays)
    else:
        with open(path, "wb") as file:
            np.savez(file, **arrays)


def read(path, build):
    """``build(layers, classes)`` for the layers and classes of the model
    file ``path`` (a path or a readable, seekable binary file), validated:
    a ValueError naming the file for anything wrong with it, what ``build``
    raises (TypeError, ValueError) included (``SparseMLP.load`` lists what
    is checked)."""
    if hasattr(path, "read"):
        name = getattr(path, "name", repr(path))
        arrays = _read_archive(path, name)
    else:
        name = os.fspath(path)
        with open(path, "rb") as file:
            arrays = _read_archive(file, name)
    try:
        return build(*_model_arrays(arrays))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: invalid SparseMLP file: {exc}") from exc


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
