"""Shared fixtures and settings for the whole suite.

KERNELS_TEST_HIDE_NUMBA=1 makes ``import numba`` fail for the whole run, as if
Numba were not installed: CI runs the suite a second time that way to prove
that the package and every feature work through the Cython and NumPy
backends alone.  It must take effect before anything imports ``kernels``,
hence first thing in this file.
"""

import os
import sys

if os.environ.get("KERNELS_TEST_HIDE_NUMBA") == "1":
    sys.modules["numba"] = None

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import kernels  # noqa: E402
from kernels import _backend  # noqa: E402

settings.register_profile(
    "kernels",
    max_examples=25,
    deadline=None,  # Numba compiles on the first call
    derandomize=True,  # the same examples on every run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("kernels")

BACKENDS = kernels.available_backends()
DTYPES = (np.float32, np.float64)


def pytest_collection_modifyitems(config, items):
    """The long attack run (marker attack_long) runs only when selected
    with ``-m attack_long``: the default run stays short."""
    if "attack_long" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long attack run: pytest -m attack_long")
    for item in items:
        if "attack_long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    """Each backend that can run here."""
    return request.param


@pytest.fixture(scope="session", params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    """float32 and float64, as NumPy scalar types."""
    return request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: deterministic, and different
    for each test."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _clean_backend_state(monkeypatch):
    """Every test starts and ends with the default backend choice: no
    KERNELS_BACKEND, no process default set by an earlier test."""
    monkeypatch.delenv("KERNELS_BACKEND", raising=False)
    kernels.set_backend(None)
    yield
    kernels.set_backend(None)
    assert _backend._context_default.get() is None, "a use_backend block leaked"
