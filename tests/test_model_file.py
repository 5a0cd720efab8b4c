"""The SparseMLP model file, format version 2 (docs/model-file.md,
kernels._model_file): a round trip of every layer kind, layout and codec;
the header and layer table read back from the specification's offsets;
and damaged or hostile files (every byte flipped, truncation at every
offset, lying sizes with a valid CRC, paths that are not files), which are
a ValueError and never a wrong model, a crash or a large allocation."""

import io
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from test_nn import THRESHOLD, dense_weights, inputs, model

from kernels.nn import SparseMLP
from kernels.packed import CODECS

HEADER = struct.Struct("<4sHHIIIIBBHI")
ENTRY = struct.Struct("<BBBBBBBBII")
LAYOUTS = ("dense", "bitmask", "csr", "delta4", "delta8")
KINDS = {"packed": 0, "csr": 1, "bsr": 2, "int8": 3}
LAYOUT_CODES = {"dense": 0, "csr": 1, "delta4": 2, "delta8": 2, "bitmask": 3}
ACTIVATION_CODES = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def saved(net):
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


def load_bytes(data):
    return SparseMLP.load(io.BytesIO(data))


def with_crc(data):
    """``data`` with the CRC32 field recomputed as the specification says
    (over the whole file with the field's four bytes taken as zero)."""
    data = bytearray(data)
    data[12:16] = bytes(4)
    data[12:16] = struct.pack("<I", zlib.crc32(bytes(data)))
    return bytes(data)


def packed_model(layout, codec, classes=None, bias=True):
    weights, biases = dense_weights(bias=bias)
    bits = {"int8": 8, "int4": 4, "int2": 2}.get(codec)
    return SparseMLP.from_dense(
        weights,
        biases,
        threshold=THRESHOLD,
        fmt=layout,
        codec=codec,
        bits=bits,
        classes=classes,
    )


CASES = [(layout, codec) for layout in LAYOUTS for codec in CODECS if codec != "int"]


def assert_same_model(loaded, net):
    X = inputs(25, seed=3)
    np.testing.assert_array_equal(loaded.forward(X), net.forward(X))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.summary() == net.summary()
    assert loaded.sizes() == net.sizes()
    for a, b in zip(loaded.layers, net.layers, strict=True):
        assert type(a.weight) is type(b.weight) and a.format == b.format
        assert a.activation == b.activation
        assert (a.bias is None) == (b.bias is None)


# Round trip ------------------------------------------------------------------


@pytest.mark.parametrize("layout, codec", CASES)
def test_round_trip_of_every_layout_and_codec(layout, codec, tmp_path):
    net = packed_model(layout, codec)
    path = tmp_path / "model.bin"
    net.save(path)
    assert path.stat().st_size == net.sizes()["file_bytes"]
    loaded = SparseMLP.load(path)
    assert_same_model(loaded, net)
    for a, b in zip(loaded.layers, net.layers, strict=True):
        assert (a.weight.layout, a.weight.codec) == (b.weight.layout, b.weight.codec)
        np.testing.assert_array_equal(a.weight.values, b.weight.values)
        np.testing.assert_array_equal(a.weight.structure, b.weight.structure)


@pytest.mark.parametrize("fmt", ["csr", "bsr", "int8"])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_of_the_matrix_classes(fmt, bias):
    net = model(fmt, bias=bias)
    assert_same_model(load_bytes(saved(net)), net)


@pytest.mark.parametrize(
    "classes",
    [None, [3, -1, 4, 2**40], [0.5, -1.0, 2.5, 1e300], ["a", "b", "ç", "日本"]],
)
def test_class_labels(classes):
    net = packed_model("auto", "int4", classes=classes)
    loaded = load_bytes(saved(net))
    if classes is None:
        assert loaded.classes is None
    else:
        assert loaded.classes.tolist() == list(classes)
        assert loaded.classes.dtype.kind == np.asarray(classes).dtype.kind


def test_a_mixed_model_and_no_biases():
    weights, _ = dense_weights()
    net = SparseMLP.from_dense(
        weights,
        None,
        threshold=THRESHOLD,
        fmt=["bitmask", "delta4", "csr"],
        codec=["int2", "float16", "float32"],
        bits=[2, None, None],
    )
    assert_same_model(load_bytes(saved(net)), net)


def test_the_weights_are_views_of_the_mapped_file(tmp_path):
    net = packed_model("csr", "int8")
    path = tmp_path / "model.bin"
    net.save(path)
    loaded = SparseMLP.load(path)
    for layer in loaded.layers:
        assert not layer.weight.values.flags.owndata
        assert not layer.weight.values.flags.writeable


# The bytes, read from the specification's offsets ----------------------------


def test_header_and_layer_table_follow_the_specification():
    net = packed_model("auto", "int4", classes=["x", "yy", "z", "w"])
    data = saved(net)
    magic, version, n_layers, length, crc, weights, biases, *labels = (
        HEADER.unpack_from(data)
    )
    assert (magic, version, n_layers, length) == (b"EKMF", 2, 3, len(data))
    assert crc == zlib.crc32(data[:12] + bytes(4) + data[16:])
    sizes = net.sizes()
    assert (weights, biases) == (sizes["dense_weights"], sizes["dense_biases"])
    kind, width, count, size = labels
    assert (kind, width, count) == (3, 0, 4) and size == len(b"x\0yy\0z\0w\0")
    assert data[32 + 16 * 3 :][:size] == b"x\0yy\0z\0w\0"
    for i, layer in enumerate(net.layers):
        entry = ENTRY.unpack_from(data, 32 + 16 * i)
        code, layout, values, index, bits, flags, activation, zero, m, n = entry
        assert code == KINDS["packed"] and zero == 0 and flags >> 5 == 0
        assert layout == LAYOUT_CODES[layer.weight.layout]
        assert index == {"delta4": 4, "delta8": 8, "csr": 1}.get(layer.weight.layout, 0)
        assert (values, bits) == (3, 4)  # int4, on 4 bits
        assert activation == ACTIVATION_CODES[layer.activation]
        assert (m, n) == layer.weight.shape
        assert (flags >> 3) & 3 == 1  # the bias in float16
        assert flags & 4  # the scales in float16


def test_file_size_is_the_arrays_plus_header_table_labels_and_padding():
    net = packed_model("auto", "int8")
    data = saved(net)
    arrays = sum(layer.nbytes for layer in net.layers)
    fixed = 32 + 16 * len(net.layers)
    padding = len(data) - fixed - arrays
    assert 0 <= padding <= (15 + 3 * 3) * len(net.layers), padding


# Damaged files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    net = packed_model("auto", "int4", classes=["a", "b", "c", "d"])
    return net, saved(net)


def test_every_flipped_byte_is_refused(reference):
    net, data = reference
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        with pytest.raises(ValueError, match="invalid SparseMLP file"):
            load_bytes(bytes(damaged))


def test_truncation_at_every_offset_and_extra_bytes_are_refused(reference):
    net, data = reference
    for size in range(len(data)):
        with pytest.raises(ValueError, match="invalid SparseMLP file"):
            load_bytes(data[:size])
    with pytest.raises(ValueError, match="declares"):
        load_bytes(data + b"\0")
    with pytest.raises(ValueError, match="follow the last layer"):
        longer = data[:8] + struct.pack("<I", len(data) + 16) + data[12:] + bytes(16)
        load_bytes(with_crc(longer))


def entry_offset(i):
    return 32 + 16 * i


def patched(data, offset, fmt, value):
    data = bytearray(data)
    struct.pack_into(fmt, data, offset, value)
    return with_crc(bytes(data))


@pytest.mark.parametrize(
    "offset, fmt, value, match",
    [
        (4, "<H", 1, "format version 1 is not supported"),
        (4, "<H", 3, "format version 3"),
        (6, "<H", 0, "n_layers"),
        (6, "<H", 60000, "n_layers|layer table"),
        (6, "<H", 2, "bitmask|follow|chain|past"),
        (24, "<B", 9, "label kind"),
        (26, "<H", 65535, "labels"),
        (28, "<I", 2**32 - 1, "labels"),
        (entry_offset(0) + 0, "<B", 7, "kind"),
        (entry_offset(0) + 1, "<B", 9, "layout"),
        (entry_offset(0) + 2, "<B", 9, "values|codec"),
        (entry_offset(0) + 4, "<B", 9, "bits"),
        (entry_offset(0) + 5, "<B", 0xE0, "reserved"),
        (entry_offset(0) + 6, "<B", 9, "activation"),
        (entry_offset(0) + 7, "<B", 1, "reserved"),
        (entry_offset(0) + 8, "<I", 2**32 - 1, "larger than a file"),
        (entry_offset(0) + 12, "<I", 2**32 - 1, "larger than a file"),
        (entry_offset(1) + 8, "<I", 3, "values must lie|chain|past"),
        (entry_offset(2) + 12, "<I", 9, "chain|past"),
    ],
)
def test_lying_fields_with_a_valid_crc(reference, offset, fmt, value, match):
    """A file whose CRC is right but whose fields lie: a ValueError naming
    the problem, and no allocation beyond a small multiple of the file."""
    net, data = reference
    hostile = patched(data, offset, fmt, value)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            load_bytes(hostile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(data) + 2**20, peak


def test_a_huge_layer_in_a_consistent_header_allocates_nothing(reference):
    """The largest shape a small file may declare is checked against the
    arrays it would need before anything is read."""
    net, data = reference
    limit = 64 * len(data) + 65536
    for m, n in ((limit, 8), (16, limit), (limit, limit)):
        hostile = patched(data, entry_offset(0) + 8, "<I", m)
        hostile = patched(hostile, entry_offset(0) + 12, "<I", n)
        tracemalloc.start()
        try:
            with pytest.raises(ValueError):
                load_bytes(hostile)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * len(data) + 2**20, (m, n, peak)


def test_paths_that_are_not_regular_files(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        SparseMLP.load(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        SparseMLP.load(fifo)  # would block forever if opened
    with pytest.raises(FileNotFoundError):
        SparseMLP.load(tmp_path / "missing.bin")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.bin"):
        SparseMLP.load(empty)
    with (
        open(empty, encoding="utf-8") as text,
        pytest.raises(TypeError, match="binary"),
    ):
        SparseMLP.load(text)


def test_packed_matrix_values_are_validated_on_load():
    """Bytes that pass the CRC but break the structure (a bitmask padding
    bit, a column index past n) are refused by the matrix's checks."""
    weights, biases = dense_weights(sizes=(13, 4))
    for layout in ("bitmask", "csr"):
        net = SparseMLP.from_dense(
            weights, biases, fmt=layout, codec="int8", bits=8, threshold=THRESHOLD
        )
        data = bytearray(saved(net))
        W = net.layers[0].weight
        structure = W.structure.tobytes()
        at = bytes(data).index(structure, 32 + 16)
        if layout == "bitmask":
            data[at + 1] |= 0x80  # column 15 of a 13-column row
        else:
            data[at] = 13  # column 13 of a 13-column layer
        with pytest.raises(ValueError, match="invalid SparseMLP file"):
            load_bytes(with_crc(bytes(data)))
