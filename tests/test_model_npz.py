"""The .npz model files of format_version 1 (kernels._model_npz), which
``SparseMLP.load`` still reads: a round trip through the version 1 writer
kept here (the keys as files in the field have them), and damaged and
hostile archives, which are a ValueError and never a wrong model."""

import functools
import io
import zipfile

import numpy as np
import pytest
from test_nn import SIZES, THRESHOLD, dense_weights, inputs, model

from kernels.nn import SparseMLP


def write_version_1(net):
    """The bytes of ``net`` as SparseMLP.save wrote them in format_version 1."""
    arrays = {
        "format_version": np.array(1, dtype=np.int64),
        "n_layers": np.array(len(net.layers), dtype=np.int64),
    }
    for i, layer in enumerate(net.layers):
        key, W = f"layer{i}_", layer.weight
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
        bias = np.empty(0, dtype=layer.dtype) if layer.bias is None else layer.bias
        arrays[key + "bias"] = bias
        arrays[key + "activation"] = np.array(layer.activation)
    arrays["classes"] = np.empty(0) if net.classes is None else net.classes
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


saved = write_version_1


def raw_arrays(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def rewritten(arrays, **changes):
    """The bytes of an .npz of ``arrays`` with ``changes`` (None deletes)."""
    arrays = dict(arrays)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load_bytes(data):
    return SparseMLP.load(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ("csr", "bsr", "int8"))
@pytest.mark.parametrize("classes", [None, [3, 1, 4, 1.5], ["a", "b", "c", "d"]])
def test_version_1_round_trip(fmt, classes, tmp_path):
    net = SparseMLP(model(fmt).layers, classes=classes)
    path = tmp_path / "model.npz"
    path.write_bytes(write_version_1(net))
    loaded = SparseMLP.load(path)
    X = inputs(30, seed=5)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    for a, b in zip(loaded.layers, net.layers, strict=True):
        assert type(a.weight) is type(b.weight) and a.weight.dtype == b.weight.dtype
    # a version 1 file does not know the dense network: the layers' shapes
    dense = sum(m * n for n, m in zip(SIZES[:-1], SIZES[1:], strict=True))
    assert loaded.sizes()["dense_weights"] == dense


def test_file_keys():
    weights, biases = dense_weights()
    biases[1] = None
    net = SparseMLP.from_dense(
        weights,
        biases,
        fmt=["csr", "bsr", "int8"],
        threshold=THRESHOLD,
        classes=["x", "y", "z", "w"],
    )
    arrays = raw_arrays(saved(net))
    common = {"kind", "shape", "data", "indices", "indptr", "bias", "activation"}
    expected = {"format_version", "n_layers", "classes"}
    expected |= {f"layer0_{k}" for k in common}
    expected |= {f"layer1_{k}" for k in common | {"blocksize"}}
    expected |= {f"layer2_{k}" for k in common | {"scales", "bits"}}
    assert set(arrays) == expected
    assert arrays["format_version"] == 1 and arrays["n_layers"] == 3
    assert arrays["layer2_kind"].dtype.kind == "U" and arrays["layer2_kind"] == "int8"
    assert arrays["layer2_data"].dtype == np.int8
    assert arrays["layer1_bias"].shape == (0,)  # no bias
    loaded = load_bytes(saved(net))
    assert loaded.layers[1].bias is None
    assert loaded.layers[2].bias.dtype == np.float32


# Files: damaged and hostile input --------------------------------------------


@functools.cache
def reference_file():
    net = SparseMLP(model("int8").layers, classes=["a", "b", "c", "d"])
    return net, saved(net)


def test_truncated_file():
    net, data = reference_file()
    for size in (0, 1, 10, 100, len(data) // 2, len(data) - 22, len(data) - 1):
        with pytest.raises(ValueError, match="not a readable SparseMLP file"):
            load_bytes(data[:size])


def test_flipped_bytes_never_give_a_wrong_answer():
    """Every member's CRC is checked: a flipped byte is a ValueError, or
    lands in zip metadata that does not change the model."""
    net, data = reference_file()
    X = inputs(8, seed=7)
    expected = net.predict_proba(X)
    members = []  # the byte range of each member's content (npy header + array)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            offset = info.header_offset
            name_size, extra_size = np.frombuffer(
                data[offset + 26 : offset + 30], "<u2"
            )
            start = offset + 30 + int(name_size) + int(extra_size)
            members.append(range(start, start + info.compress_size))
    for position in range(0, len(data), 17):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        try:
            loaded = load_bytes(bytes(damaged))
        except ValueError:
            continue
        assert not any(position in member for member in members), position
        np.testing.assert_array_equal(loaded.predict_proba(X), expected)
        np.testing.assert_array_equal(loaded.classes, net.classes)


def test_not_an_archive(tmp_path):
    with pytest.raises(ValueError, match="not a readable"):
        load_bytes(b"hello, this is not a zip file" * 10)
    buffer = io.BytesIO()
    np.save(buffer, np.arange(10))
    with pytest.raises(ValueError, match="not a readable"):
        load_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("format_version.npy", b"\x93NUMPY garbage garbage")
    with pytest.raises(ValueError, match="not a readable"):
        load_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match="unexpected member"):
        load_bytes(buffer.getvalue())
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ValueError, match=str(path.name)):
        SparseMLP.load(path)
    with pytest.raises(FileNotFoundError):
        SparseMLP.load(tmp_path / "missing.npz")


def test_every_key_is_required():
    net, data = reference_file()
    arrays = raw_arrays(data)
    for key in arrays:
        with pytest.raises(ValueError, match=f"missing key '{key}'"):
            load_bytes(rewritten(arrays, **{key: None}))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(format_version=np.array(2)), "format_version 2 is not supported"),
        (dict(format_version=np.array("1")), "format_version"),
        (dict(format_version=np.array([1])), "format_version"),
        (dict(n_layers=np.array(0)), "n_layers"),
        (dict(n_layers=np.array(4)), "missing key 'layer3_kind'"),
        (dict(n_layers=np.array(2)), "unexpected keys"),
        (dict(extra=np.zeros(3)), "unexpected keys"),
        (dict(layer0_kind=np.array("coo")), "layer0_kind"),
        (dict(layer0_activation=np.array("softmax")), "layer0_activation"),
        (dict(layer0_activation=np.array(["relu"])), "layer0_activation"),
        (dict(layer0_shape=np.array([16, 20, 1])), "layer0_shape"),
        (dict(layer0_shape=np.array([16.0, 20.0])), "layer0_shape"),
        (dict(layer2_shape=np.array([4, 9])), "do not chain"),
        (dict(layer0_bias=np.zeros(15, np.float32)), "bias"),
        (dict(layer0_bias=np.zeros(16)), "layer0_bias"),  # float64, not float32
        (dict(layer0_scales=np.full(16, np.nan, np.float32)), "scales"),
        (dict(layer0_scales=np.zeros(16)), "layer0_scales"),
        (dict(layer0_bits=np.array(4)), "values must lie in"),
        (dict(layer0_bits=np.array(9)), "bits"),
        (dict(classes=np.array(["a", "b"])), "classes"),
        (dict(classes=np.array([1 + 2j, 0, 0, 0])), "classes"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else None,
)
def test_invalid_content(changes, match):
    net, data = reference_file()
    with pytest.raises(ValueError, match=match):
        load_bytes(rewritten(raw_arrays(data), **changes))


def test_invalid_structure():
    """The whole sparse structure is checked, as the kernels trust it."""
    net, data = reference_file()
    arrays = raw_arrays(data)
    indices, indptr = arrays["layer0_indices"], arrays["layer0_indptr"]
    for bad_index in (20, 255):
        changed = indices.copy()
        changed[3] = bad_index
        with pytest.raises(ValueError, match=r"indices must lie in \[0, 20\)"):
            load_bytes(rewritten(arrays, layer0_indices=changed))
    changed = indptr.copy()
    changed[2], changed[3] = changed[3], changed[2]
    with pytest.raises(ValueError, match="indptr must never decrease"):
        load_bytes(rewritten(arrays, layer0_indptr=changed))
    with pytest.raises(ValueError, match="indptr"):
        load_bytes(rewritten(arrays, layer0_indptr=indptr[:-1]))
    with pytest.raises(ValueError, match="layer0_indices"):
        load_bytes(rewritten(arrays, layer0_indices=indices.astype(np.float64)))
    values = arrays["layer0_data"]
    with pytest.raises(ValueError, match="layer0_data"):
        load_bytes(rewritten(arrays, layer0_data=values.astype(np.int32)))
    changed = values.copy()
    changed[0] = -128
    with pytest.raises(ValueError, match="values must lie in"):
        load_bytes(rewritten(arrays, layer0_data=changed))


def test_invalid_float_and_block_layers():
    weights, biases = dense_weights()
    net = SparseMLP.from_dense(weights, biases, fmt=["bsr", "csr", "csr"])
    arrays = raw_arrays(saved(net))
    data = arrays["layer1_data"].copy()
    data[0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        load_bytes(rewritten(arrays, layer1_data=data))
    with pytest.raises(ValueError, match="blocksize"):
        load_bytes(rewritten(arrays, layer0_blocksize=np.array([2, 4])))
    with pytest.raises(ValueError, match="layer0_data"):
        load_bytes(rewritten(arrays, layer0_data=arrays["layer0_data"][:, 0]))
    mismatch = arrays["layer1_data"].astype(np.float32)
    with pytest.raises(ValueError, match="layer1_bias|one dtype"):
        load_bytes(rewritten(arrays, layer1_data=mismatch))
    layer2 = {k: v for k, v in arrays.items() if k.startswith("layer2_")}
    swapped = {k.replace("layer2_", "layer1_"): v for k, v in layer2.items()}
    with pytest.raises(ValueError, match="do not chain"):
        load_bytes(rewritten(arrays, **swapped))


def test_pickled_arrays_are_refused():
    net, data = reference_file()
    labels = np.array(["a", 1, 2.0, None], dtype=object)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_bytes(rewritten(raw_arrays(data), classes=labels))
