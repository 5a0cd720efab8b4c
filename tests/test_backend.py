"""Backend registry and selection (kernels._backend), and the contract that
every backend implements every reference kernel with the same signature."""

import importlib
import inspect
import threading

import numpy as np
import pytest
from _support import ALLOW_NO_CYTHON, HIDE_NUMBA, run_python

import kernels
import kernels.prox
from kernels import _backend

AVAILABLE = kernels.available_backends()
X = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])


# One call of every public function of kernels.prox, by name.  The test
# below makes sure a new public function cannot be left out.
def _calls():
    x2 = X.reshape(1, 5)
    return {
        "prox_l1": lambda b: kernels.prox_l1(X, 1.0, backend=b),
        "prox_elastic_net": lambda b: kernels.prox_elastic_net(X, 1.0, 0.5, backend=b),
        "prox_group_l1": lambda b: kernels.prox_group_l1(x2, 1.0, "cols", backend=b),
        "prox_sparse_group_l1": lambda b: kernels.prox_sparse_group_l1(
            X, 0.1, 1.0, [2, 3], backend=b
        ),
        "prox_l0": lambda b: kernels.prox_l0(X, 0.5, backend=b),
        "keep_top_k": lambda b: kernels.keep_top_k(X, 2, backend=b),
        "project_l1_ball": lambda b: kernels.project_l1_ball(X, 1.0, backend=b),
        "project_box": lambda b: kernels.project_box(X, -1.0, 1.0, backend=b),
        "cumulative_l1": lambda b: kernels.cumulative_l1(
            X.copy(), np.zeros_like(X), 0.3, backend=b
        ),
    }


CALLS = _calls()


def test_every_public_function_is_exercised():
    assert set(CALLS) == set(kernels.prox.__all__)
    assert set(kernels.prox.__all__) <= set(kernels.__all__)


# A stand-in for a backend's kernel module that records which backend ran.
class _Spy:
    def __init__(self, module, name, log):
        self._module, self._name, self._log = module, name, log

    def __getattr__(self, attr):
        target = getattr(self._module, attr)
        if not callable(target):
            return target

        def spy(*args, **kwargs):
            self._log.append(self._name)
            return target(*args, **kwargs)

        return spy


@pytest.fixture
def spied(monkeypatch):
    """Every backend "available", each recording its name in the returned
    list when one of its kernels runs.  Backends not built here run the
    reference kernels under their own name, so the selection logic is tested
    whatever is installed."""
    log = []
    for name in _backend.BACKENDS:
        for family in _backend.FAMILIES:
            real = _backend._load(name, family) or importlib.import_module(
                f"kernels._reference.{family}"
            )
            monkeypatch.setitem(
                _backend._modules, (name, family), _Spy(real, name, log)
            )
    return log


@pytest.fixture
def numba_missing(monkeypatch):
    """The numba backend unavailable, as when Numba is not installed."""
    for family in _backend.FAMILIES:
        monkeypatch.setitem(_backend._modules, ("numba", family), None)
    monkeypatch.setitem(_backend._unavailable, "numba", "ImportError: no numba here")


def _ran(log, call):
    del log[:]
    call()
    assert log, "no kernel ran"
    assert len(set(log)) == 1, log
    return log[0]


# Availability ------------------------------------------------------------


def test_available_backends_in_preference_order():
    assert isinstance(AVAILABLE, list)
    assert "numpy" in AVAILABLE
    assert AVAILABLE == [b for b in _backend.BACKENDS if b in AVAILABLE]
    reasons = _backend.unavailable_reasons()
    assert set(reasons) == set(_backend.BACKENDS) - set(AVAILABLE)
    assert all(isinstance(r, str) and r for r in reasons.values())


def test_numba_backend_present_unless_hidden():
    """Under KERNELS_TEST_HIDE_NUMBA=1 Numba cannot be imported and the
    package works without it; otherwise, where Numba is installed, a numba
    backend that fails to import is a failure, not a silent fallback."""
    if HIDE_NUMBA:
        with pytest.raises(ImportError):
            import numba  # noqa: F401
        assert "numba" not in kernels.available_backends()
        assert "numba" in _backend.unavailable_reasons()["numba"]
        with pytest.raises(ValueError, match="backend='numba' is not available"):
            kernels.prox_l1(X, 1.0, backend="numba")
        for name in kernels.available_backends():
            np.testing.assert_array_equal(
                kernels.prox_l1(X, 1.0, backend=name), [-1.0, -0.0, 0.0, 0.0, 2.0]
            )
        np.testing.assert_array_equal(kernels.prox_l1(X, 1.0), [-1, 0, 0, 0, 2])
        return
    try:
        import numba  # noqa: F401
    except ImportError:
        pytest.skip("Numba is not installed here")
    assert "numba" in kernels.available_backends(), _backend.unavailable_reasons()


def test_cython_backend_present():
    """The compiled modules must be there (CI builds them), unless
    KERNELS_TEST_ALLOW_NO_CYTHON=1."""
    if ALLOW_NO_CYTHON and "cython" not in AVAILABLE:
        pytest.skip("KERNELS_TEST_ALLOW_NO_CYTHON=1 and the Cython modules are absent")
    assert "cython" in AVAILABLE, _backend.unavailable_reasons()


def test_package_works_without_numba_in_a_fresh_process():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, kernels\n"
        "assert 'numba' not in kernels.available_backends()\n"
        "for b in kernels.available_backends():\n"
        "    r = kernels.prox_l1(np.array([-2.0, 0.5, 3.0]), 1.0, backend=b)\n"
        "    assert r.tolist() == [-1.0, 0.0, 2.0], (b, r)\n"
        "print(kernels.get_backend(), kernels.available_backends())\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    default, _ = result.stdout.split(" ", 1)
    assert default == ("cython" if "cython" in AVAILABLE else "numpy")


def test_import_is_light_in_a_fresh_process(tmp_path):
    """``import kernels``, and a prediction from a saved model on the
    default backend, import none of the heavy packages (a board runs
    ``predict`` from a cold process); the estimators load scikit-learn on
    first use."""
    model = tmp_path / "model.npz"
    code = (
        "import sys, numpy as np, kernels\n"
        "from kernels.nn import SparseMLP\n"
        "heavy = ('sklearn', 'scipy', 'numba', 'matplotlib', 'onnx', "
        "'onnxruntime', 'threadpoolctl')\n"
        "def loaded(): return [m for m in heavy if sys.modules.get(m) is not None]\n"
        "assert not loaded(), loaded()\n"
        "w = [np.eye(3, dtype=np.float32), np.ones((2, 3), np.float32)]\n"
        f"SparseMLP.from_dense(w).save({str(model)!r})\n"
        f"net = SparseMLP.load({str(model)!r})\n"
        "assert net.predict(np.ones(3, np.float32)) in (0, 1)\n"
        "kernels.prox_l1(np.ones(3), 0.5)\n"
        "if kernels.get_backend() == 'cython': assert not loaded(), loaded()\n"
        "assert callable(kernels.SparseLogisticRegression)\n"
        "assert 'SparseLinearRegression' in dir(kernels)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


# Default, set_backend ------------------------------------------------------


def test_default_is_first_available():
    assert kernels.get_backend() == AVAILABLE[0]


def test_default_order_is_cython_numba_numpy(spied, monkeypatch):
    assert kernels.get_backend() == "cython"
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "cython"
    # the default is chosen once (set_backend(None) chooses again): here
    # availability changes under the registry's feet, never in real use
    for family in _backend.FAMILIES:
        monkeypatch.setitem(_backend._modules, ("cython", family), None)
    kernels.set_backend(None)
    assert kernels.available_backends() == ["numba", "numpy"]
    assert kernels.get_backend() == "numba"
    for family in _backend.FAMILIES:
        monkeypatch.setitem(_backend._modules, ("numba", family), None)
    kernels.set_backend(None)
    assert kernels.get_backend() == "numpy"


def test_set_backend(backend):
    kernels.set_backend(backend)
    assert kernels.get_backend() == backend
    np.testing.assert_array_equal(kernels.prox_l1(X, 1.0), [-1, 0, 0, 0, 2])
    kernels.set_backend(None)
    assert kernels.get_backend() == AVAILABLE[0]


def test_set_backend_routes_calls(spied):
    for name in _backend.BACKENDS:
        kernels.set_backend(name)
        assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == name


@pytest.mark.parametrize("bad", ["bogus", "num py", ""])
def test_set_backend_unknown_name(bad):
    kernels.set_backend("numpy")
    with pytest.raises(
        ValueError, match=r"backend must be one of 'cython', 'numba', 'numpy'"
    ):
        kernels.set_backend(bad)
    assert kernels.get_backend() == "numpy"


def test_set_backend_not_a_string():
    kernels.set_backend("numpy")
    with pytest.raises(TypeError, match="backend must be a backend name"):
        kernels.set_backend(3)
    assert kernels.get_backend() == "numpy"


def test_backend_names_ignore_case_and_spaces():
    kernels.set_backend(" NumPy ")
    assert kernels.get_backend() == "numpy"
    with kernels.use_backend("NUMPY"):
        assert kernels.get_backend() == "numpy"


def test_unavailable_backend_is_a_clear_error(numba_missing, monkeypatch):
    assert "numba" not in kernels.available_backends()
    assert _backend.unavailable_reasons()["numba"] == "ImportError: no numba here"
    pattern = r"backend='numba' is not available here: ImportError: no numba here"
    with pytest.raises(ValueError, match=pattern):
        kernels.set_backend("numba")
    with pytest.raises(ValueError, match=pattern):
        with kernels.use_backend("numba"):
            pass
    with pytest.raises(ValueError, match=pattern):
        kernels.prox_l1(X, 1.0, backend="numba")
    _set_environment(monkeypatch, "numba")
    with pytest.raises(ValueError, match="KERNELS_BACKEND='numba' is not available"):
        kernels.prox_l1(X, 1.0)


# use_backend -----------------------------------------------------------------


def test_use_backend_nests_and_restores(spied):
    assert kernels.get_backend() == "cython"
    with kernels.use_backend("numba") as name:
        assert name == "numba"
        assert kernels.get_backend() == "numba"
        assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "numba"
        with kernels.use_backend("numpy"):
            assert kernels.get_backend() == "numpy"
            assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "numpy"
        assert kernels.get_backend() == "numba"
    assert kernels.get_backend() == "cython"
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "cython"


def test_use_backend_restores_on_exception(backend):
    kernels.set_backend("numpy")
    with pytest.raises(ZeroDivisionError):
        with kernels.use_backend(backend):
            assert kernels.get_backend() == backend
            1 / 0  # noqa: B018
    assert kernels.get_backend() == "numpy"
    with pytest.raises(ZeroDivisionError):
        with kernels.use_backend(backend):
            with kernels.use_backend("numpy"):
                1 / 0  # noqa: B018
    assert kernels.get_backend() == "numpy"


def test_use_backend_unknown_name():
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'bogus'"):
        with kernels.use_backend("bogus"):
            pass
    assert kernels.get_backend() == AVAILABLE[0]


def test_use_backend_wins_over_set_backend(spied):
    kernels.set_backend("numpy")
    with kernels.use_backend("numba"):
        kernels.set_backend("cython")
        assert kernels.get_backend() == "numba"
    assert kernels.get_backend() == "cython"


def test_use_backend_is_local_to_its_thread(spied):
    seen = []
    with kernels.use_backend("numpy"):
        thread = threading.Thread(target=lambda: seen.append(kernels.get_backend()))
        thread.start()
        thread.join()
        assert kernels.get_backend() == "numpy"
    assert seen == ["cython"]


# KERNELS_BACKEND ---------------------------------------------------------------


def _set_environment(monkeypatch, value):
    """KERNELS_BACKEND = value, read again (set_backend(None))."""
    monkeypatch.setenv("KERNELS_BACKEND", value)
    kernels.set_backend(None)


def test_environment_variable(spied, monkeypatch):
    _set_environment(monkeypatch, "numba")
    assert kernels.get_backend() == "numba"
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "numba"
    _set_environment(monkeypatch, "  NumPy\n")
    assert kernels.get_backend() == "numpy"
    _set_environment(monkeypatch, "")
    assert kernels.get_backend() == "cython"


def test_environment_variable_read_once_until_set_backend_none(spied, monkeypatch):
    assert kernels.get_backend() == "cython"
    monkeypatch.setenv("KERNELS_BACKEND", "numpy")
    assert kernels.get_backend() == "cython"  # not read on every call
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "cython"
    kernels.set_backend("numba")
    kernels.set_backend(None)
    assert kernels.get_backend() == "numpy"
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "numpy"


def test_environment_variable_loses_to_explicit_choices(spied, monkeypatch):
    _set_environment(monkeypatch, "numba")
    with kernels.use_backend("numpy"):
        assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "numpy"
    kernels.set_backend("cython")
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0)) == "cython"
    kernels.set_backend(None)
    assert _ran(spied, lambda: kernels.prox_l1(X, 1.0, backend="numpy")) == "numpy"


def test_environment_variable_invalid(monkeypatch):
    _set_environment(monkeypatch, "bogus")
    with pytest.raises(
        ValueError, match="KERNELS_BACKEND must be one of .* got 'bogus'"
    ):
        kernels.get_backend()
    with pytest.raises(ValueError, match="KERNELS_BACKEND must be one of"):
        kernels.prox_l1(X, 1.0)
    np.testing.assert_array_equal(
        kernels.prox_l1(X, 1.0, backend="numpy"), [-1, 0, 0, 0, 2]
    )
    kernels.set_backend("numpy")
    assert kernels.get_backend() == "numpy"


@pytest.mark.parametrize("name", AVAILABLE)
def test_environment_variable_in_a_fresh_process(name):
    code = (
        "import numpy as np, kernels\n"
        "r = kernels.prox_l1(np.array([-2.0, 0.5, 3.0]), 1.0)\n"
        "assert r.tolist() == [-1.0, 0.0, 2.0], r\n"
        "print(kernels.get_backend())\n"
    )
    result = run_python(code, env={"KERNELS_BACKEND": name.upper()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_environment_variable_invalid_in_a_fresh_process():
    code = (
        "import numpy as np, kernels\n"  # importing does not fail
        "print(kernels.prox_l1(np.array([1.0]), 0.5, backend='numpy'))\n"
        "kernels.prox_l1(np.array([1.0]), 0.5)\n"
    )
    result = run_python(code, env={"KERNELS_BACKEND": "fortran"})
    assert result.returncode == 1
    assert result.stdout.strip() == "[0.5]"
    assert "ValueError: KERNELS_BACKEND must be one of" in result.stderr
    assert "'fortran'" in result.stderr


# backend= ----------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(CALLS))
def test_backend_keyword_wins(spied, monkeypatch, function):
    monkeypatch.setenv("KERNELS_BACKEND", "numba")
    kernels.set_backend("cython")
    for chosen in _backend.BACKENDS:
        with kernels.use_backend("numba" if chosen != "numba" else "numpy"):
            assert _ran(spied, lambda c=chosen: CALLS[function](c)) == chosen
        assert _ran(spied, lambda c=chosen: CALLS[function](c)) == chosen
    with kernels.use_backend("numpy"):
        assert _ran(spied, lambda: CALLS[function](None)) == "numpy"


@pytest.mark.parametrize("function", sorted(CALLS))
@pytest.mark.parametrize(
    "bad, error, pattern",
    [
        ("bogus", ValueError, r"backend must be one of 'cython', 'numba', 'numpy'"),
        ("num-py", ValueError, r"backend must be one of 'cython', 'numba', 'numpy'"),
        (0, TypeError, "backend must be a backend name"),
    ],
)
def test_backend_keyword_unknown(function, bad, error, pattern):
    with pytest.raises(error, match=pattern):
        CALLS[function](bad)


@pytest.mark.parametrize("function", sorted(CALLS))
def test_every_function_runs_on_every_backend(function, backend):
    expected = CALLS[function]("numpy")
    np.testing.assert_allclose(CALLS[function](backend), expected, rtol=1e-12)


# The contract ------------------------------------------------------------------


def _public_kernels(module):
    """The public functions defined in ``module`` (imported helpers and
    names with a leading underscore excluded)."""
    found = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj) or inspect.isclass(obj):
            continue
        if not callable(obj):
            continue
        origin = getattr(getattr(obj, "py_func", obj), "__module__", None)
        if origin == module.__name__:
            found[name] = obj
    return found


def _parameter_names(func):
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        # a Numba dispatcher that inspect cannot read: its Python function
        signature = inspect.signature(func.py_func)
    return [p.name for p in signature.parameters.values()]


@pytest.mark.parametrize("family", _backend.FAMILIES)
def test_reference_module_has_kernels(family):
    reference = importlib.import_module(f"kernels._reference.{family}")
    assert _public_kernels(reference)


@pytest.mark.parametrize("family", _backend.FAMILIES)
def test_contract_every_backend_implements_the_reference(family, backend):
    reference = _public_kernels(importlib.import_module(f"kernels._reference.{family}"))
    module = _backend._load(backend, family)
    implemented = _public_kernels(module)
    missing = sorted(set(reference) - set(implemented))
    extra = sorted(set(implemented) - set(reference))
    assert not missing, f"{module.__name__} lacks kernels {missing}"
    assert not extra, (
        f"{module.__name__} has public kernels not in the reference: {extra}"
    )
    for name, func in reference.items():
        assert _parameter_names(implemented[name]) == _parameter_names(func), (
            f"{module.__name__}.{name} has parameters "
            f"{_parameter_names(implemented[name])}, the reference "
            f"{_parameter_names(func)}"
        )
    if backend == "numba":
        from numba.core.dispatcher import Dispatcher

        # a kernel is compiled at module level, or is a module-level Python
        # function choosing between such kernels (serial or parallel)
        for name in reference:
            kernel = implemented[name]
            assert isinstance(kernel, Dispatcher) or (
                inspect.isfunction(kernel) and kernel.__module__ == module.__name__
            ), name


PLANS = ("MatvecPlan", "MLPPlan")


def _public_members(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize("plan", PLANS)
def test_contract_every_backend_has_the_plans(plan, backend):
    """The one-sample plans are part of every backend's sparse contract
    (kernels._reference.plans): the same classes, with the same public
    methods and properties, methods with the same parameters.  (That they
    are built from the same arguments and give their kernels' bits is
    tested in test_matvec_plan.py and test_mlp_plan.py, backend by
    backend.)"""
    reference = getattr(importlib.import_module("kernels._reference.sparse"), plan)
    module = _backend._load(backend, "sparse")
    implemented = getattr(module, plan, None)
    assert inspect.isclass(implemented), f"{module.__name__} lacks {plan}"
    assert _public_members(implemented) == _public_members(reference)
    for name in _public_members(reference):
        member = getattr(reference, name)
        if callable(member):
            assert _parameter_names(getattr(implemented, name)) == (
                _parameter_names(member)
            ), f"{module.__name__}.{plan}.{name}"
        else:
            assert not callable(getattr(implemented, name)), name
