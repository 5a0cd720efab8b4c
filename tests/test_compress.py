"""kernels.compress and the demo / compress / predict commands: dead-neuron
removal and the folded standardisation compute the same function, the data
loaders validate, the pipeline end to end on a small configuration (its
figures consistent with the model it returns, the saved model predicting
identically), and the command line's output and errors."""

import json
import os

import numpy as np
import pytest
from _support import run_main, run_python

from kernels.compress import (
    Dataset,
    _fold_standardiser,
    _standardiser,
    compress,
    deploy,
    load_dataset,
    load_digits,
    remove_dead_neurons,
)
from kernels.nn import SparseMLP
from kernels.train import MLP

# A configuration the pipeline runs in about a second: one strength, no
# search, and a budget it always meets (tests/test_search.py tests those).
SMALL = dict(
    hidden=(32, 16),
    beta=5e-3,
    max_drop=5.0,
    epochs=15,
    fine_tune_epochs=3,
    dense_epochs=30,
    latency_budget=0.002,
)
SMALL_ARGS = [
    "--hidden", "32,16", "--beta", "5e-3", "--max-drop", "5", "--epochs", "15",
    "--fine-tune-epochs", "3", "--dense-epochs", "30", "--quiet",
]  # fmt: skip


def masked_network(seed=0):
    """A 6-5-4-3 network with dead units of every kind: unit 0 of layer 1
    has no incoming weight (it outputs the constant relu(0.7)), unit 1 no
    outgoing weight; unit 2 of layer 2 has no incoming weight and a negative
    bias (constant 0), unit 3 of layer 2 reads only the constant unit 0, so
    it becomes constant once that unit is folded away."""
    rng = np.random.default_rng(seed)
    W0 = rng.standard_normal((5, 6))
    W1 = rng.standard_normal((4, 5))
    W2 = rng.standard_normal((3, 4))
    b0, b1, b2 = rng.standard_normal(5), rng.standard_normal(4), rng.standard_normal(3)
    W0[0] = 0.0
    b0[0] = 0.7
    W1[:, 1] = 0.0
    W1[2] = 0.0
    b1[2] = -0.3
    W1[3] = 0.0
    W1[3, 0] = 1.5  # unit 3 of layer 2 reads only the constant unit 0
    W0[4, ::2] = 0.0  # plain sparsity, not dead
    return MLP([W0, W1, W2], [b0, b1, b2])


def test_removing_dead_neurons_keeps_the_function():
    net = masked_network()
    X = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    pruned, removed = remove_dead_neurons(net)
    # layer 1 loses units 0 (constant) and 1 (no output); layer 2 loses unit
    # 2 (no input) and then unit 3, whose only input was the constant unit
    assert pruned.sizes == [6, 3, 2, 3]
    assert removed == [2, 2]
    np.testing.assert_allclose(pruned.logits(X), net.logits(X), rtol=1e-5, atol=1e-5)


def test_a_network_without_dead_units_is_unchanged():
    net = MLP.initial([4, 3, 2], seed=3)
    pruned, removed = remove_dead_neurons(net)
    assert removed == [0]
    for a, b in zip(pruned.params, net.params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_fully_dead_layer_leaves_the_constant_output():
    net = MLP.initial([4, 3, 2], seed=3)
    net.weights[0][:] = 0.0
    net.biases[0][:] = [1.0, -1.0, 2.0]
    X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    pruned, removed = remove_dead_neurons(net)
    assert pruned.sizes == [4, 0, 2] and removed == [3]
    np.testing.assert_allclose(pruned.logits(X), net.logits(X), rtol=1e-6)


def test_the_folded_standardisation_takes_raw_inputs():
    data = load_digits()
    mean, scale = _standardiser(data.X_train)
    net = MLP.initial([64, 8, 10], seed=0)
    net.weights[0][:, ::3] = 0.0
    folded = _fold_standardiser(net, mean, scale)
    X = data.X_test[:20]
    standardised = ((X - mean) / scale).astype(np.float32)
    np.testing.assert_allclose(
        folded.logits(X), net.logits(standardised), rtol=1e-4, atol=1e-4
    )
    assert folded.nnz == net.nnz


def test_digits_split_is_stratified_disjoint_and_seeded():
    a, b = load_digits(seed=0), load_digits(seed=1)
    assert a.X_train.shape == (1347, 64) and a.X_test.shape == (450, 64)
    assert a.X_train.dtype == np.float32
    train_counts = np.bincount(a.y_train) / len(a.y_train)
    test_counts = np.bincount(a.y_test) / len(a.y_test)
    np.testing.assert_allclose(train_counts, test_counts, atol=0.01)
    rows = {tuple(r) for r in a.X_train.astype(int)}
    # digits has a few duplicated images; nearly all test rows are unseen
    assert sum(tuple(r) in rows for r in a.X_test.astype(int)) < 10
    assert not np.array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.y_test, load_digits(seed=0).y_test)


@pytest.fixture(scope="module")
def result():
    return compress(load_digits(), **SMALL)


def test_the_pipeline_reports_what_its_model_is(result, tmp_path):
    data = load_digits()
    model = result.model
    assert isinstance(model, SparseMLP)
    assert result.nnz == model.nnz < result.dense_nnz == 64 * 32 + 32 * 16 + 16 * 10
    assert result.bytes == model.nbytes
    assert result.dense_bytes == 4 * (result.dense_nnz + 32 + 16 + 10)
    sizes = model.sizes()
    assert result.sizes == sizes and model.dense_size == (result.dense_nnz, 58)
    assert result.file_bytes == sizes["file_bytes"] == len(model.to_bytes())
    assert result.compression_ratio == sizes["byte_ratio"]
    assert result.compression_ratio == result.dense_bytes / result.file_bytes
    predicted = model.predict(data.X_test)
    assert result.accuracy == np.mean(predicted == data.y_test)
    assert result.accuracy > 0.8 and result.dense_accuracy > 0.8
    assert [layer.out_features for layer in model.layers] == [*result.hidden, 10]
    assert sum(result.removed) == 32 + 16 - sum(result.hidden)
    assert sum(layer["bytes"] for layer in result.layers) == result.bytes
    path = tmp_path / "model.bin"
    model.save(path)
    assert os.path.getsize(path) == result.file_bytes
    loaded = SparseMLP.load(path)
    np.testing.assert_array_equal(loaded.predict(data.X_test), predicted)
    np.testing.assert_array_equal(
        loaded.forward(data.X_test), model.forward(data.X_test)
    )
    for batch in (1, 64):
        row = result.latency[batch]
        assert row["speedup"] == pytest.approx(row["dense"] / row["compressed"])
    summary = result.as_dict()
    for key in (
        "dense_accuracy",
        "accuracy",
        "compression_ratio",
        "sizes",
        "nnz",
        "bytes",
        "dense_bytes",
        "seconds",
    ):
        assert key in summary
    json.dumps(summary)


@pytest.mark.parametrize("bits", [8, 6, 5, 4, 3, 2])
def test_deploy_quantises_to_the_bits_asked(bits):
    net = masked_network()
    pruned, _ = remove_dead_neurons(net)
    model, fmt = deploy(pruned, np.arange(3), bits=bits)
    assert fmt == ("int2" if bits == 2 else "int4" if bits <= 4 else "int8")
    for layer in model.layers:
        qmax = 2 ** (bits - 1) - 1
        scales = layer.weight.scales.astype(np.float64)[:, None]
        q = layer.weight.to_dense() / np.where(scales > 0, scales, 1)
        np.testing.assert_allclose(q, np.round(q), atol=1e-4)
        assert np.abs(q).max() <= qmax + 1e-4
        assert layer.weight.bits == bits


def test_deploy_falls_back_to_float_when_quantising_costs_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    net = MLP.initial([6, 5, 3], seed=1)
    # one huge weight per row, on a feature that is always 0, leaves every
    # other weight of the row 0 after 4-bit quantisation
    net.weights[0][:, 0] = 1e3
    X[:, 0] = 0.0
    y = net.predict(X)
    model, fmt = deploy(
        net, np.arange(3), bits=4, X_check=X, y_check=y, max_accuracy_drop=0.0
    )
    assert fmt in ("float16", "float32")
    assert all(layer.weight.codec == fmt for layer in model.layers)
    np.testing.assert_array_equal(model.predict(X), y)
    for bits in (1, 9, 4.5):
        with pytest.raises(ValueError, match="bits"):
            deploy(net, np.arange(3), bits=bits)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def good_arrays(labels=("a", "b", "c")):
    rng = np.random.default_rng(0)
    y_train = np.array(labels)[rng.integers(0, 3, 60)]
    y_test = np.array(labels)[rng.integers(0, 3, 20)]
    return {
        "X_train": rng.standard_normal((60, 5)),
        "y_train": y_train,
        "X_test": rng.standard_normal((20, 5)),
        "y_test": y_test,
    }


def test_load_dataset_maps_any_labels(tmp_path):
    arrays = good_arrays()
    data = load_dataset(write_npz(tmp_path / "d.npz", **arrays))
    assert isinstance(data, Dataset)
    np.testing.assert_array_equal(data.classes, ["a", "b", "c"])
    np.testing.assert_array_equal(data.classes[data.y_test], arrays["y_test"])
    assert data.X_train.dtype == np.float32


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), "missing y_test"),
        (lambda a: a.update(X_test=a["X_test"][:, :4]), "columns"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "y_train"),
        (lambda a: a.update(X_train=a["X_train"][:, 0]), "2-D"),
        (lambda a: a["X_train"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda a: a["y_test"].__setitem__(0, "z"), "not in y_train"),
        (lambda a: a.update(y_train=np.zeros(60)), "two classes"),
        (lambda a: a.update(X_test=np.zeros((0, 5)), y_test=np.zeros(0)), "no rows"),
    ],
)
def test_load_dataset_rejects_bad_files(tmp_path, change, message):
    arrays = good_arrays()
    change(arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(write_npz(tmp_path / "d.npz", **arrays))


def test_load_dataset_rejects_pickles_and_non_archives(tmp_path):
    arrays = good_arrays()
    arrays["y_train"] = arrays["y_train"].astype(object)
    with pytest.raises(ValueError, match="d.npz"):
        load_dataset(write_npz(tmp_path / "d.npz", **arrays))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_dataset(str(junk))


# The command line -------------------------------------------------------------


run = run_main


@pytest.mark.slow
def test_demo_prints_the_table():
    status, out, err = run(["demo", *SMALL_ARGS])
    assert status == 0, err
    assert "| deployed (" in out and "compression" in out
    assert "budget met: at most 5 points below the dense model" in out
    assert "batch 1" in out and "batch 64" in out


def test_compress_json_then_predict_the_saved_model(tmp_path):
    arrays = good_arrays(labels=(3, 7, 9))
    data = write_npz(tmp_path / "d.npz", **arrays)
    model = str(tmp_path / "model.bin")
    status, out, err = run(
        ["compress", "--data", data, *SMALL_ARGS, "--json", "--out", model]
    )
    assert status == 0, err
    summary = json.loads(out)
    assert summary["model_file"] == model
    assert summary["bytes"] == SparseMLP.load(model).nbytes
    status, out, err = run(["predict", model, "--data", data, "--json"])
    assert status == 0, err
    predicted = json.loads(out)
    # the ratios against the original network, read back from the file
    assert predicted["sizes"] == summary["sizes"]
    assert predicted["accuracy"] == pytest.approx(summary["accuracy"])
    assert predicted["samples"] == 20


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compress", "--data", "missing.npz"], "no such file"),
        (["compress", "--hidden", "30,x"], "--hidden"),
        (["compress", "--lam", "0.5"], "--lam applies"),
        (["compress", "--optimizer", "svrg", "--lam", "2"], "--lam must"),
        (["compress", "--beta", "-1"], "--beta"),
        (["compress", "--out", "/no/such/dir/m.npz"], "no such directory"),
        (["predict", "missing.npz"], "no such model file"),
    ],
)
def test_bad_input_is_one_line_and_status_1(argv, message):
    status, out, err = run(argv)
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv", [["compress", "--bogus"], ["demo", "--bits", "9"], ["predict"]]
)
def test_usage_errors_are_one_line_and_status_2(argv):
    status, out, err = run(argv)
    assert status == 2
    assert err.count("\n") == 1 and "error:" in err


def test_predict_rejects_a_model_of_other_width(tmp_path, result):
    path = str(tmp_path / "model.npz")
    result.model.save(path)
    arrays = good_arrays()
    data = write_npz(tmp_path / "d.npz", **arrays)
    status, _, err = run(["predict", path, "--data", data])
    assert status == 1 and "64 features" in err


def test_plot_writes_the_figures(tmp_path):
    pytest.importorskip("matplotlib")
    directory = tmp_path / "figures"
    argv = [
        "demo", "--hidden", "8", "--epochs", "2", "--fine-tune-epochs", "0",
        "--dense-epochs", "1", "--max-drop", "100", "--beta", "1e-3", "--quiet",
        "--json", "--plot", str(directory),
    ]  # fmt: skip
    status, out, err = run(argv)
    assert status == 0, err
    figures = json.loads(out)["figures"]
    assert sorted(os.path.basename(f) for f in figures) == [
        "accuracy_vs_compression.png",
        "loss_vs_ifos.png",
    ]
    for path in figures:
        with open(path, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_predict_needs_neither_scipy_nor_numba(tmp_path, result):
    path = str(tmp_path / "model.npz")
    result.model.save(path)
    code = (
        "import sys\n"
        "for name in ('scipy', 'numba', 'sklearn', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "from kernels.__main__ import main\n"
        f"sys.exit(main(['predict', {path!r}, '--json']))\n"
    )
    completed = run_python(code)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["accuracy"] == pytest.approx(result.accuracy)
