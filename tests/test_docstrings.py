"""Every public function and class has documentation that ``help()`` shows:
the names of ``kernels.__all__`` and of each public module's ``__all__``,
the public methods and properties of those classes, and, for the solvers,
a parameter entry for every argument of the signature."""

import importlib
import inspect
import pydoc
import re

import pytest

from kernels import _solver_run, solvers

MODULES = (
    "kernels",
    "kernels.solvers",
    "kernels.prox",
    "kernels.sparse",
    "kernels.nn",
    "kernels.update",
    "kernels.train",
    "kernels.compress",
    "kernels.linear_model",
)

# Public methods and properties without a docstring, in modules whose owners
# have yet to write them; an entry that gains one fails the test until it is
# struck off, a new one without fails it too.
UNDOCUMENTED = set()


def _help(obj):
    """What ``help(obj)`` prints."""
    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


def _public_objects():
    """(module.name, object) of every function and class in an __all__."""
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                found.setdefault(f"{module_name}.{name}", obj)
    return sorted(found.items())


def _members():
    """(module.Class.name where defined, documented?) of the public methods and
    properties that the package's public classes define (inherited ones
    from outside the package, scikit-learn's say, are theirs)."""
    seen = {}
    for _, cls in _public_objects():
        if not inspect.isclass(cls):
            continue
        for name in dir(cls):
            if name.startswith("_"):
                continue
            owner = next(c for c in cls.__mro__ if name in vars(c))
            if not owner.__module__.startswith("kernels"):
                continue
            value = vars(owner)[name]
            if isinstance(value, property):
                doc = value.__doc__
            elif isinstance(value, (staticmethod, classmethod)):
                doc = inspect.getdoc(value.__func__)
            elif inspect.isroutine(value):
                doc = inspect.getdoc(value)
            else:
                continue  # a data attribute (a dataclass field's default)
            key = f"{owner.__module__}.{owner.__qualname__}.{name}"
            seen[key] = bool(doc and doc.strip())
    return sorted(seen.items())


@pytest.mark.parametrize(
    "obj", [obj for _, obj in _public_objects()], ids=[n for n, _ in _public_objects()]
)
def test_every_public_function_and_class_has_a_docstring(obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{obj!r} has no docstring"
    if inspect.isclass(obj):  # not a dataclass's generated "Name(field, ...)"
        assert obj.__doc__ and not obj.__doc__.startswith(f"{obj.__name__}(")
    assert doc.splitlines()[0].strip() in _help(obj)


def test_every_public_method_and_property_has_a_docstring():
    members = dict(_members())
    missing = {name for name, documented in members.items() if not documented}
    assert not missing - UNDOCUMENTED, "no docstring"
    assert not UNDOCUMENTED - missing, "documented now: strike off UNDOCUMENTED"
    assert len(members) > len(UNDOCUMENTED)


@pytest.mark.parametrize("name", solvers.SOLVERS)
def test_each_solver_documents_its_parameters(name):
    solve = getattr(solvers, name)
    doc = solve.__doc__
    assert doc is not None and doc == inspect.getdoc(solve)
    shown = _help(solve)
    signature = inspect.signature(solve)
    assert f"{name}{signature}" in shown
    for parameter in signature.parameters.values():
        entry = parameter.name
        if parameter.default is not parameter.empty:
            entry += f" : default {parameter.default!r}"
        assert re.search(rf"^{re.escape(entry)}$", doc, re.MULTILINE), entry
        assert entry in shown, entry
    # which common keywords each solver takes: test_solvers.py checks the
    # signatures against KEYWORDS


def test_the_common_parameters_are_written_once():
    """The solvers' parameter lists are made of ``KEYWORDS``: their
    descriptions are not pasted into kernels.solvers."""
    source = inspect.getsource(solvers)
    for keyword in _solver_run.KEYWORDS:
        assert keyword.doc not in source
