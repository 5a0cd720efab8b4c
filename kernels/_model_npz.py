"""The first SparseMLP model file, format_version 1: an uncompressed .npz
archive of plain arrays (what ``SparseMLP.save`` wrote before the binary
format of kernels._model_file), read and validated as any untrusted input.
No pickle, and neither scipy nor numba.

Keys (integers are int64, strings 0-d unicode arrays): ``format_version``
(1), ``n_layers``, ``classes`` (the labels, or an empty array when there
are none) and, per layer i, ``layer{i}_kind`` ("csr", "bsr" or "int8"),
``layer{i}_shape`` (out_features, in_features), ``layer{i}_data`` (the
float values, the (n_blocks, r, c) BSR blocks, or the int8 values),
``layer{i}_indices``, ``layer{i}_indptr``, ``layer{i}_blocksize`` (bsr
only), ``layer{i}_scales`` and ``layer{i}_bits`` (int8 only),
``layer{i}_bias`` (an empty array when there is none) and
``layer{i}_activation``.  Every key is always present.
"""

import struct
import zipfile
import zlib

import numpy as np

from kernels.nn import ACTIVATIONS, FORMATS, SparseLinear
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

FORMAT_VERSION = 1


def read(file, name, limit):
    """(layers, classes) of the .npz model file ``file`` (readable and
    seekable), validated; ``limit``: the largest layer dimension accepted
    (kernels._model_file derives it from the file's size).  A ValueError
    for anything wrong with it."""
    arrays = _read_archive(file, name)
    return _model_arrays(arrays, limit)


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
            declared = _declared_members(file)
            if declared != 0xFFFF and declared != len(archive.infolist()):
                raise ValueError(
                    f"the archive declares {declared} members but lists "
                    f"{len(archive.infolist())}"
                )
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


def _declared_members(file):
    """The member count the archive's end-of-central-directory record
    declares (zipfile reads the directory's entries and ignores it; 0xFFFF
    means a zip64 record holds it)."""
    file.seek(0, 2)
    size = file.tell()
    file.seek(max(0, size - 65557))
    tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise ValueError("no end-of-central-directory record")
    return struct.unpack("<H", tail[at + 10 : at + 12])[0]


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


def _model_arrays(arrays, limit):
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
    layers = [_layer(fields, f"layer{i}_", limit) for i in range(n_layers)]
    classes = fields.get("classes")
    if classes.shape == (0,):
        classes = None
    unexpected = fields.unexpected()
    if unexpected:
        raise ValueError(f"unexpected keys {unexpected}")
    return layers, classes


def _layer(fields, key, limit):
    kind = fields.string(key + "kind", FORMATS)
    shape = fields.array(key + "shape", _INDICES, 1)
    if shape.shape != (2,):
        raise ValueError(f"{key}shape must have 2 entries, got {shape.shape[0]}")
    if shape.min() < 0 or shape.max() > limit:
        raise ValueError(
            f"{key}shape {tuple(shape)} is outside [0, {limit}] (a dimension a "
            "file of this size cannot hold)"
        )
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
