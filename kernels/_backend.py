"""Backend registry and selection.

Three interchangeable kernel backends implement the same kernels, family by
family (``prox``, ...), with the same names and argument order:

* ``"cython"``: ahead-of-time compiled modules in ``kernels._cy``; no JIT,
  fast cold start, runs on every board (including 32-bit ARM).
* ``"numba"``: JIT-compiled modules in ``kernels._numba``, cached on disk.
* ``"numpy"``: the NumPy reference in ``kernels._reference``, the readable
  specification of every kernel.

The default is the first available of cython, numba, numpy, unless the
``KERNELS_BACKEND`` environment variable names one.  ``set_backend`` changes
the process default, ``use_backend`` changes it for a ``with`` block (in the
current thread and its context only), and every public function takes a
``backend=`` keyword that wins over both.

``KERNELS_BACKEND`` is read when a call first needs the default, and read
again at the first need after ``set_backend(None)``; a change to
``os.environ`` in between is not seen.  Reading the environment on every call
cost about 4 us, as much as a whole small product.  An invalid value is not
remembered: every call that needs the default raises until it is fixed.
"""

import contextlib
import contextvars
import importlib
import os

BACKENDS = ("cython", "numba", "numpy")
_PACKAGES = {
    "cython": "kernels._cy",
    "numba": "kernels._numba",
    "numpy": "kernels._reference",
}
FAMILIES = ("prox", "sparse", "packed", "update", "solvers")

_modules = {}
_unavailable = {}
_process_default = None
_environment_default = None  # the default from KERNELS_BACKEND or availability
_context_default = contextvars.ContextVar("kernels_backend", default=None)


def _load(name, family):
    """Import one family's kernel module of one backend, or record why not."""
    key = (name, family)
    if key not in _modules:
        try:
            _modules[key] = importlib.import_module(f"{_PACKAGES[name]}.{family}")
        except ImportError as exc:
            _unavailable[name] = f"{type(exc).__name__}: {exc}"
            _modules[key] = None
    return _modules[key]


def _is_available(name):
    return all(_load(name, family) is not None for family in FAMILIES)


def available_backends():
    """The names of the backends that can run here, in order of preference."""
    return [name for name in BACKENDS if _is_available(name)]


def unavailable_reasons():
    """A dict mapping each unavailable backend to the import error behind it."""
    return {
        name: _unavailable.get(name, "unknown")
        for name in BACKENDS
        if not _is_available(name)
    }


def _check_name(name, source):
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a backend name (str), got {name!r}")
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(
            f"{source} must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}"
        )
    if not _is_available(name):
        raise ValueError(
            f"{source}={name!r} is not available here: "
            f"{_unavailable.get(name, 'unknown reason')}; "
            f"available backends: {available_backends()}"
        )
    return name


def _read_environment():
    """The default without a ``set_backend`` or ``use_backend`` choice:
    ``KERNELS_BACKEND`` if set (ValueError if it names no available
    backend), else the first available.  Remembered until
    ``set_backend(None)``."""
    global _environment_default
    env = os.environ.get("KERNELS_BACKEND")
    if env:
        name = _check_name(env, "KERNELS_BACKEND")
    else:
        name = next(name for name in BACKENDS if _is_available(name))
    _environment_default = name
    return name


def get_backend():
    """The name of the backend used when a call does not pass ``backend=``."""
    return (
        _context_default.get()
        or _process_default
        or _environment_default
        or _read_environment()
    )


def set_backend(name):
    """Set the process-wide default backend.  ``None`` restores the default
    choice, ``KERNELS_BACKEND`` or the first available, and makes the next
    call that needs it read ``KERNELS_BACKEND`` again."""
    global _process_default, _environment_default
    if name is None:
        _process_default = _environment_default = None
    else:
        _process_default = _check_name(name, "backend")


@contextlib.contextmanager
def use_backend(name):
    """Use backend ``name`` for the calls made inside a ``with`` block."""
    name = _check_name(name, "backend")
    token = _context_default.set(name)
    try:
        yield name
    finally:
        _context_default.reset(token)


def kernels_for(family, backend=None):
    """The kernel module of ``family`` in the requested (or current) backend.

    Called on every public call: an available backend's canonical name is a
    single dict look-up."""
    name = get_backend() if backend is None else backend
    module = _modules.get((name, family)) if isinstance(name, str) else None
    if module is None:
        module = _load(_check_name(name, "backend"), family)
    return module


def resolve(backend=None):
    """The canonical name of the requested backend (``None``: the current
    default), checked as a ``backend=`` keyword is: a single dict look-up
    for an available backend's canonical name."""
    name = get_backend() if backend is None else backend
    if isinstance(name, str) and _modules.get((name, FAMILIES[0])) is not None:
        return name
    return _check_name(name, "backend")
