"""The numba backend on a read-only install (kernels._numba._jit).

Numba caches compiled kernels in ``__pycache__`` beside the sources, or in
its user-wide directory; ``njit(cache=True)`` raises at import when neither
is writable.  The package must then fall back to a private directory under
the temporary directory, and when even that is impossible, run uncached.

Each case copies the installed package, makes every cache place but the one
under test impossible to create, and imports the copy in a fresh process.
We run as root, which ignores permission bits, so places are blocked by
putting them below (or replacing them with) a regular file; the copy is also
made read-only for runs as another user.
"""

import os
import shutil
import stat
import subprocess
import sys

import pytest

import kernels

pytestmark = pytest.mark.skipif(
    "numba" not in kernels.available_backends(),
    reason="the numba backend is not available",
)

DRIVER = """
import sys, tempfile
if {no_tempdir}:
    # tempfile.gettempdir() falls back to /tmp when TMPDIR is unusable;
    # pretend that there is no usable temporary directory at all
    tempfile.tempdir = {blocked_tmp!r}
import numpy as np
import kernels
import kernels._numba._jit as jit
import kernels._numba.prox as numba_prox
assert kernels.__file__.startswith({root!r}), kernels.__file__
assert "numba" in kernels.available_backends(), kernels._backend.unavailable_reasons()
x = np.array([-2.0, 0.5, 3.0, -0.25], dtype=np.float32)
r = kernels.prox_l1(x, 1.0, backend="numba")
assert r.dtype == np.float32 and r.tolist() == [-1.0, 0.0, 2.0, -0.0], r
print(jit.cache_location())
print(sum(numba_prox.soft_threshold.stats.cache_hits.values()))
print(jit.cache_reason())
"""


def _set_writable(root, writable):
    for directory, _, files in os.walk(root):
        for path in [directory] + [os.path.join(directory, f) for f in files]:
            mode = os.lstat(path).st_mode
            if writable:
                os.chmod(path, mode | stat.S_IWUSR)
            else:
                os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def read_only_install(tmp_path):
    """A copy of the installed package (compiled modules included) that no
    cache directory can be created in, and an environment whose user-wide
    cache directory cannot be created either."""
    source = os.path.dirname(os.path.abspath(kernels.__file__))
    root = tmp_path / "site-packages"
    shutil.copytree(
        source,
        root / "kernels",
        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"),
    )
    blocked_pycache = root / "kernels" / "_numba" / "__pycache__"
    blocked_pycache.write_text("a file where Numba wants its in-tree cache\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so nothing can be created below it\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NUMBA_") and k not in ("PYTHONPATH", "KERNELS_BACKEND")
    }
    env.update(
        PYTHONPATH=str(root),
        PYTHONDONTWRITEBYTECODE="1",
        HOME=str(blocker / "home"),
        XDG_CACHE_HOME=str(blocker / "cache"),
    )
    _set_writable(root, False)
    try:
        yield root, env, blocker
    finally:
        _set_writable(root, True)


def _run(root, env, tmp_path, no_tempdir=False, blocked_tmp=""):
    code = DRIVER.format(root=str(root), no_tempdir=no_tempdir, blocked_tmp=blocked_tmp)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    location, hits, reason = result.stdout.strip().splitlines()
    return location, int(hits), reason


def _files_below(path):
    return sorted(
        os.path.relpath(os.path.join(d, f), path)
        for d, _, files in os.walk(path)
        for f in files
    )


def test_falls_back_to_a_private_temporary_directory(read_only_install, tmp_path):
    root, env, blocker = read_only_install
    before = _files_below(root)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env["TMPDIR"] = str(tmpdir)

    location, hits, reason = _run(root, env, tmp_path)
    assert location == str(tmpdir / f"embedded-kernels-numba-{os.getuid()}"), reason
    assert "fallback" in reason
    assert os.path.isdir(location)
    assert stat.S_IMODE(os.stat(location).st_mode) & 0o077 == 0  # private
    assert any(name.endswith(".nbi") for name in _files_below(location))
    assert hits == 0  # compiled this time...

    location_again, hits, _ = _run(root, env, tmp_path)
    assert location_again == location
    assert hits > 0  # ...and loaded from the fallback cache the next time

    assert _files_below(root) == before  # nothing written into the install
    assert os.path.isfile(root / "kernels" / "_numba" / "__pycache__")
    assert not os.path.exists(blocker.parent / "home")


def test_runs_uncached_when_no_directory_is_writable(read_only_install, tmp_path):
    root, env, blocker = read_only_install
    before = _files_below(root)
    env["TMPDIR"] = env["TEMP"] = env["TMP"] = str(blocker / "tmp")

    location, hits, reason = _run(
        root, env, tmp_path, no_tempdir=True, blocked_tmp=str(blocker / "tmp")
    )
    assert location == "None", reason
    assert hits == 0
    assert _files_below(root) == before
