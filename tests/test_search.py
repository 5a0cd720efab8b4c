"""The compression pipeline's search (kernels._search) and the budgets of
``kernels.compress.compress``: the goal's verdicts, the bracketing and
bisection of the strength, the per-layer precision choice, the test split
left untouched until the report, and a miss reported as a miss by the
function, the table and the command line."""

import json

import numpy as np
import pytest
from _support import run_main

from kernels import _search
from kernels.compress import (
    Dataset,
    _budget_report,
    compress,
    format_result,
    load_digits,
    validation_split,
)
from kernels.nn import SparseMLP
from kernels.train import MLP

# A search the pipeline runs in a few seconds.
TINY = dict(
    hidden=(16, 8), epochs=8, fine_tune_epochs=2, dense_epochs=10, latency_budget=0.001
)
TINY_ARGS = [
    "--hidden", "16,8", "--epochs", "8", "--fine-tune-epochs", "2",
    "--dense-epochs", "10", "--quiet",
]  # fmt: skip


def candidate(accuracy, file_bytes):
    return _search.Candidate((8,), None, accuracy, file_bytes)


def test_the_goal_takes_exactly_one_budget():
    with pytest.raises(ValueError, match="exactly one"):
        _search.Goal(0.9)
    with pytest.raises(ValueError, match="exactly one"):
        _search.Goal(0.9, max_drop=1.0, target_bytes=100)


def test_an_accuracy_budget_prefers_fewer_bytes_within_it():
    goal = _search.Goal(0.95, max_drop=1.0)
    inside, edge, outside = (
        candidate(0.96, 900),
        candidate(0.94, 500),
        candidate(0.9, 100),
    )
    assert goal.accepts(inside) and goal.accepts(edge) and not goal.accepts(outside)
    ranked = sorted([outside, inside, edge], key=goal.rank)
    assert ranked == [edge, inside, outside]


def test_a_confidence_asks_the_bound_to_clear_the_budget():
    goal = _search.Goal(0.95, max_drop=1.0, confidence=1.0)
    near = _search.Candidate((8,), None, 0.945, 100, spread=0.004)
    far = _search.Candidate((8,), None, 0.945, 100, spread=0.006)
    assert goal.accepts(near) and not goal.accepts(far)
    assert _search.Goal(0.95, max_drop=1.0).accepts(far)


def test_a_size_budget_prefers_accuracy_within_it():
    goal = _search.Goal(0.95, target_bytes=600)
    small, fits, big = candidate(0.5, 100), candidate(0.9, 600), candidate(0.99, 601)
    assert not goal.accepts(big) and goal.accepts(fits)
    assert sorted([big, small, fits], key=goal.rank) == [fits, small, big]


@pytest.mark.parametrize("boundary", [3e-5, 1.2e-3, 4e-3, 0.0123, 0.3])
def test_the_search_brackets_then_bisects_the_boundary(boundary):
    points = _search.search_strength(lambda b: b, lambda b: b <= boundary, 4e-3)
    passing = [b for b in points if b <= boundary]
    failing = [b for b in points if b > boundary]
    assert passing and failing
    # the resolution after three bisections of a factor of 2
    assert min(failing) / max(passing) == pytest.approx(2 ** (1 / 8))
    assert len(points) <= 14


def test_the_search_stops_at_its_bounds_and_its_limit():
    always = _search.search_strength(lambda b: b, lambda b: True, 4e-3)
    assert max(always) <= 1.0 and max(always) * 2 > 1.0
    never = _search.search_strength(lambda b: b, lambda b: False, 4e-3, limit=5)
    assert len(never) == 5 and min(never) == pytest.approx(4e-3 / 16)
    with pytest.raises(ValueError, match="bounds"):
        _search.search_strength(lambda b: b, lambda b: True, 2.0)


def small_problem(seed=0):
    rng = np.random.default_rng(seed)
    network = MLP.initial([6, 8, 3], seed=seed)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    y = network.predict(X)  # the float network is right on every sample
    return network, X, y


def test_the_precision_choice_meets_the_budget_with_fewest_bytes():
    network, X, y = small_problem()
    classes = np.arange(3)
    goal = _search.Goal(1.0, max_drop=2.0)
    best, tried = _search.choose_deployment(
        network, classes, (X[:100], y[:100], y[:100]), (X, y), goal
    )
    assert goal.accepts(best)
    assert best.file_bytes == min(c.file_bytes for c in tried if goal.accepts(c))
    # the estimate: each candidate's accuracy is what it keeps on both sets
    for c in tried:
        kept = min(
            np.mean(c.model.predict(X[:100]) == y[:100]),
            np.mean(c.model.predict(X) == y),
        )
        assert c.accuracy == pytest.approx(kept)
    # the spread: from the samples where it and the dense model disagree
    for c in tried:
        disagree = np.count_nonzero(c.model.predict(X[:100]) != y[:100])
        assert c.spread == pytest.approx(np.sqrt(disagree) / 100)
    # every uniform precision was tried, and some mixed ones
    uniform = {c.precisions[0] for c in tried if len(set(c.precisions)) == 1}
    assert uniform == set(_search.PRECISIONS)


def test_the_estimate_never_credits_a_surplus_over_the_dense_model():
    network, X, y = small_problem()
    goal = _search.Goal(0.9, max_drop=0.0)  # the dense model: 90%
    best, tried = _search.choose_deployment(
        network, np.arange(3), (X[:100], y[:100], y[:100]), (X, y), goal
    )
    assert max(c.accuracy for c in tried) == pytest.approx(0.9)


def test_a_size_budget_too_small_returns_the_smallest_as_a_miss():
    network, X, y = small_problem()
    goal = _search.Goal(1.0, target_bytes=10)
    best, tried = _search.choose_deployment(
        network, np.arange(3), (X[:100], y[:100], y[:100]), (X, y), goal
    )
    assert not goal.accepts(best)
    assert best.file_bytes == min(c.file_bytes for c in tried)


def test_the_validation_split_is_stratified_and_disjoint():
    data = load_digits()
    fit, val = validation_split(data, 0.2, seed=3)
    assert len(fit.y_train) + len(val.y_test) == len(data.y_train)
    assert np.array_equal(fit.X_test, data.X_test)
    counts = np.bincount(val.y_test) / len(val.y_test)
    np.testing.assert_allclose(counts, np.bincount(data.y_train) / 1347, atol=0.02)
    for bad in (0, 0.6, -1, float("nan")):
        with pytest.raises(ValueError, match="validation"):
            validation_split(data, bad)


@pytest.fixture(scope="module")
def searched():
    return compress(load_digits(), **TINY)


@pytest.mark.slow
def test_the_search_finds_the_most_compressed_point_within_the_budget(searched):
    r = searched
    assert r.settings["searched"] and len(r.search) >= 4
    betas = [p["beta"] for p in r.search]
    assert len(set(betas)) == len(betas)
    acceptable = [p for p in r.search if p["acceptable"]]
    assert acceptable and any(not p["acceptable"] for p in r.search)
    best = min(acceptable, key=lambda p: p["file_bytes"])
    assert r.settings["beta"] == best["beta"] and r.file_bytes == best["file_bytes"]
    assert r.budget["validation_met"]
    assert r.budget["validation_drop"] <= 1.0 + 1e-9
    assert r.met == (r.budget["test_drop"] <= 1.0 + 1e-9)
    assert r.budget["test_drop"] == pytest.approx(100 * (r.dense_accuracy - r.accuracy))


@pytest.mark.slow
def test_the_search_never_looks_at_the_test_split(searched):
    data = load_digits()
    rng = np.random.default_rng(0)
    scrambled = Dataset(
        data.X_train, data.y_train, rng.permutation(data.X_test),
        rng.permutation(data.y_test), data.classes, data.name,
    )  # fmt: skip
    other = compress(scrambled, **TINY)
    assert other.search == [
        dict(p, seconds=q["seconds"])
        for p, q in zip(searched.search, other.search, strict=True)
    ]
    assert other.model.to_bytes() == searched.model.to_bytes()


@pytest.mark.slow
def test_a_size_budget_gives_the_most_accurate_model_that_fits(searched):
    target = searched.file_bytes * 3
    r = compress(load_digits(), target_bytes=target, **TINY)
    assert r.file_bytes <= target and r.met and r.budget["validation_met"]
    fitting = [p for p in r.search if p["file_bytes"] <= target]
    assert r.budget["estimated_accuracy"] == max(
        p["estimated_accuracy"] for p in fitting
    )


@pytest.mark.slow
def test_a_size_budget_that_cannot_be_met_is_reported_as_a_miss():
    r = compress(load_digits(), target_bytes=50, **TINY)
    assert not r.met and not r.budget["validation_met"]
    assert r.as_dict()["met"] is False
    assert "MISS" in format_result(r) and "budget met" not in format_result(r)


def test_a_test_split_miss_is_reported_as_a_miss():
    goal = _search.Goal(0.95, max_drop=1.0)
    report = _budget_report(goal, candidate(0.95, 100), 0.90, 0.95, 300)
    assert report["validation_met"] and not report["met"]
    assert report["test_drop"] == pytest.approx(5.0)


run = run_main


@pytest.mark.slow
def test_the_command_line_exits_3_on_a_miss_and_says_so():
    status, out, _ = run(["demo", *TINY_ARGS, "--target-bytes", "50"])
    assert status == 3 and "MISS" in out
    status, out, _ = run(["demo", *TINY_ARGS, "--target-bytes", "50", "--json"])
    assert status == 3 and json.loads(out)["met"] is False


@pytest.mark.slow
def test_the_command_line_prints_one_line_per_point():
    argv = ["demo", *TINY_ARGS[:-1], "--beta", "1e-3", "--max-drop", "50"]
    status, _, err = run(argv)
    assert status == 0
    assert err.count("beta 0.001:") == 1


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-drop", "-1"),
        ("--target-bytes", "0"),
        ("--validation", "0.9"),
        ("--density", "0.5"),
    ],
)
def test_bad_budgets_are_one_line_errors(flag, value):
    status, out, err = run(["demo", flag, value])
    assert status == 1 and out == "" and flag in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_drop": -1}, "max_drop"),
        ({"max_drop": float("nan")}, "max_drop"),
        ({"target_bytes": 0}, "target_bytes"),
        ({"target_bytes": 1.5}, "target_bytes"),
        ({"bits": 7}, "bits"),
        ({"beta": -1.0}, "beta"),
        ({"validation": 0.0}, "validation"),
    ],
)
def test_compress_rejects_bad_budgets(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress(load_digits(), **TINY, **kwargs)


@pytest.mark.slow
def test_gradual_magnitude_pruning_reaches_its_density():
    from kernels.train import train_mlp

    data = load_digits()
    X = ((data.X_train - 8.0) / 8.0).astype(np.float32)
    result = train_mlp(
        X, data.y_train, (32, 16), optimizer="sgd", density=0.1, epochs=8
    )
    for W in result.network.weights:
        assert np.count_nonzero(W) == int(np.ceil(0.1 * W.size))
    nnz = [h["nnz"] for h in result.history]
    assert nnz == sorted(nnz, reverse=True) and nnz[0] > nnz[-1]  # the schedule
    with pytest.raises(ValueError, match="density"):
        train_mlp(X, data.y_train, (8,), density=0.0, epochs=1)
    with pytest.raises(ValueError, match="exclude"):
        train_mlp(X, data.y_train, network=result.network, fine_tune=True, density=0.5)


@pytest.mark.slow
def test_the_search_over_density_keeps_the_budget():
    r = compress(load_digits(), sparsifier="gmp", **TINY)
    assert r.settings["sparsifier"] == "gmp" and r.settings["searched"]
    densities = [p["density"] for p in r.search]
    assert len(densities) >= 3 and all(0 < d <= 1 for d in densities)
    assert r.settings["density"] in densities
    assert r.budget["validation_met"] == any(p["acceptable"] for p in r.search)
    assert "gradual magnitude pruning" in format_result(r)
    fixed = compress(load_digits(), sparsifier="gmp", density=0.2, **TINY)
    assert [p["density"] for p in fixed.search] == [0.2]
    with pytest.raises(ValueError, match="sparsifier"):
        compress(load_digits(), sparsifier="magic", **TINY)


def test_predict_on_digits_takes_the_split_of_its_seed(tmp_path):
    from kernels.compress import compress as run_compress

    path = str(tmp_path / "m.bin")
    run_compress(load_digits(seed=3), beta=1e-3, seed=3, **TINY).model.save(path)
    outputs = {}
    for seed in (0, 3):
        status, out, _ = run(["predict", path, "--seed", str(seed), "--json"])
        assert status == 0
        outputs[seed] = json.loads(out)["accuracy"]
    model = SparseMLP.load(path)
    data = load_digits(seed=3)
    assert outputs[3] == pytest.approx(
        np.mean(model.predict(data.X_test) == data.y_test)
    )
