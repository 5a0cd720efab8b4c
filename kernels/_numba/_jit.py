"""The decorator every Numba kernel uses, and where the compiled code is cached.

Numba looks for a cache directory per source file, in this order: the
``NUMBA_CACHE_DIR`` setting, ``__pycache__`` beside the source, then its
user-wide directory (``~/.cache/numba`` on Linux); each is tried by creating
a file in it.  When none is writable, ``njit(cache=True)`` raises
RuntimeError at decoration time, i.e. when the kernel module is imported.
A read-only install (system site-packages, a container image, a root-owned
venv) must not break the import, so ``kernel`` probes the same places the
same way (permission bits do not stop root, creating a file does), then
falls back to a private directory under ``tempfile.gettempdir()``, then to
no cache: kernels then compile at every start, slower but correct.

The fallback is given to Numba as ``numba.config.CACHE_DIR`` only while a
kernel of this package is decorated, so other Numba code in the process keeps
its own cache locations.
"""

import functools
import getpass
import os
import stat
import tempfile
import threading

import numba
from numba.misc.appdirs import AppDirs

_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))
_OPTIONS = {"nogil": True, "error_model": "numpy"}
_config_lock = threading.RLock()


def _writable(path):
    """Whether ``path`` is, or can be made, a directory we can create files in:
    the test Numba's locators apply (``os.makedirs`` + ``TemporaryFile``)."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _private_fallback():
    """A per-user directory under the temporary directory, or None.

    Numba's cache files are pickles, so the directory must be ours alone: a
    directory another user created in a shared /tmp, or a symlink, is refused.
    """
    try:
        user = str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()
        path = os.path.join(tempfile.gettempdir(), f"embedded-kernels-numba-{user}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except (OSError, ImportError, KeyError):
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    if hasattr(os, "getuid") and (
        info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        return None
    return path if _writable(path) else None


class _CachePlan:
    """Where the kernels of one source directory are cached, and why."""

    def __init__(self, location, override, reason):
        self.location = location  # the cache directory, None for no cache
        self.override = override  # CACHE_DIR to set while decorating, or None
        self.reason = reason


def _probe(source_dir):
    configured = numba.config.CACHE_DIR
    if configured and _writable(configured):
        return _CachePlan(configured, None, "NUMBA_CACHE_DIR")
    pycache = os.path.join(source_dir, "__pycache__")
    if _writable(pycache):
        return _CachePlan(pycache, None, "__pycache__ beside the kernel sources")
    user_wide = AppDirs(appname="numba", appauthor=False).user_cache_dir
    if _writable(user_wide):
        return _CachePlan(user_wide, None, "Numba's user-wide cache directory")
    fallback = _private_fallback()
    if fallback is not None:
        return _CachePlan(
            fallback,
            fallback,
            "private fallback in the temporary directory "
            "(package, NUMBA_CACHE_DIR and user cache not writable)",
        )
    return _CachePlan(
        None, None, "no writable cache directory: kernels compile at every start"
    )


_plans = {}


def _plan(source_dir):
    with _config_lock:
        if source_dir not in _plans:
            _plans[source_dir] = _probe(source_dir)
        return _plans[source_dir]


def cache_location():
    """The directory the kernels of this package are cached in, or None.

    Numba files a source directory's kernels in a subdirectory of it (named
    after that directory and a hash of its path), except in ``__pycache__``.
    """
    return _plan(_KERNEL_DIR).location


def cache_reason():
    """Why ``cache_location()`` is what it is, in a few words."""
    return _plan(_KERNEL_DIR).reason


def _njit(func, plan, options):
    if plan.location is None:
        return numba.njit(cache=False, **options)(func)
    with _config_lock:
        previous = numba.config.CACHE_DIR
        if plan.override is not None:
            numba.config.CACHE_DIR = plan.override
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError:
            # Numba probes a per-file subdirectory of the place we probed;
            # if that still fails ("no locator available"), do without.
            plan.location, plan.override = None, None
            plan.reason = "Numba found no writable cache directory: no cache"
        finally:
            numba.config.CACHE_DIR = previous
    return numba.njit(cache=False, **options)(func)


def kernel(func=None, **options):
    """Compile ``func`` as a project kernel: ``numba.njit`` in nopython mode,
    ``nogil=True``, NumPy's error model (division by zero gives inf or nan, no
    exception, so divisions vectorise), cached where a writable directory
    exists.  Use as ``@kernel`` or ``@kernel(fastmath={...}, parallel=True)``;
    ``options`` are passed on to ``numba.njit``.
    """
    if func is None:
        return functools.partial(kernel, **options)
    source_dir = os.path.dirname(os.path.abspath(func.__code__.co_filename))
    return _njit(func, _plan(source_dir), {**_OPTIONS, **options})
