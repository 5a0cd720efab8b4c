"""The compiled backend as built: the integer codes setup.py writes for it
from kernels/_codes.py."""

import importlib

import pytest

import kernels
from kernels import _codes

needs_cython = pytest.mark.skipif(
    "cython" not in kernels.available_backends(), reason="no cython backend"
)

# The compiled modules that dispatch on codes (they include pyx/_codes.pxi).
CODED_MODULES = ("solvers", "update", "sparse", "packed")


def _table():
    return {
        name: value
        for name, value in vars(_codes).items()
        if name.isupper() and type(value) is int
    }


@needs_cython
@pytest.mark.parametrize("name", CODED_MODULES)
def test_compiled_codes_are_the_table(name):
    """Every code the compiled module was built with is kernels._codes's,
    and it has every code of the table (a stale pyx/_codes.pxi fails)."""
    module = importlib.import_module(f"kernels._cy.{name}")
    assert module.CODES == _table()
