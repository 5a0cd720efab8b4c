"""What ``python -m kernels info`` reports: the package, its backends and
the machine.  ``python -m kernels bench`` puts the same facts above its
table, so that a quoted figure says where it comes from."""

import importlib.metadata
import os
import platform

import numpy as np

import kernels
from kernels._backend import available_backends, get_backend, unavailable_reasons


def cpu_model():
    """The CPU's name: /proc/cpuinfo's "model name" (x86, 32-bit ARM), else
    its "Model" (the board, on a Raspberry Pi), else platform.processor()."""
    found = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, sep, value = line.partition(":")
                key = key.strip().lower()
                if sep and value.strip() and key not in found:
                    found[key] = value.strip()
    except OSError:
        pass
    for key in ("model name", "model", "hardware", "cpu model"):
        if key in found:
            return found[key]
    return platform.processor() or "unknown CPU"


def cpu_count():
    """Logical CPUs, and how many this process may run on when fewer."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    if usable == total:
        return f"{total} logical CPUs"
    return f"{total} logical CPUs, {usable} usable by this process"


def machine():
    """One line: CPU model, architecture, core count."""
    return f"{cpu_model()} ({platform.machine()}, {cpu_count()})"


def numba_version():
    try:
        return importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        return None


def numba_cache():
    """Where the numba backend caches compiled kernels, and why there."""
    from kernels._numba import _jit

    location = _jit.cache_location()
    reason = getattr(_jit, "cache_reason", None)
    where = location or "none"
    return f"{where} ({reason()})" if reason else where


def openmp():
    """Whether the cython backend was built with OpenMP, and its threads."""
    from kernels._cy import build_info

    if not build_info.openmp_enabled():
        return "off (serial build)"
    return f"on, {build_info.openmp_max_threads()} threads max"


def versions():
    """One line: Python, NumPy and Numba versions."""
    numba = numba_version() or "not installed"
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"NumPy {np.__version__}, Numba {numba}"
    )


def _default_backend():
    try:
        return get_backend()
    except ValueError as exc:
        return f"error: {exc}"


def _guarded(describe):
    try:
        return describe()
    except Exception as exc:  # a report must not die of what it reports
        return f"unknown ({type(exc).__name__}: {exc})"


def report():
    """The ``info`` report: a list of (label, value) lines."""
    available = available_backends()
    lines = [
        ("embedded-kernels", kernels.__version__),
        ("backends available", ", ".join(available)),
    ]
    for name, reason in unavailable_reasons().items():
        lines.append((f"{name} missing", reason))
    lines.append(("default backend", _default_backend()))
    lines.append(("numba", numba_version() or "not installed"))
    if "numba" in available:
        lines.append(("numba cache", _guarded(numba_cache)))
    if "cython" in available:
        lines.append(("openmp (cython)", _guarded(openmp)))
    lines += [
        ("cpu", cpu_model()),
        ("machine", f"{platform.machine()}, {cpu_count()}"),
        ("os", platform.platform()),
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("numpy", np.__version__),
    ]
    return lines


def format_report(lines):
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in lines)
