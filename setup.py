"""Build every ``pyx/<name>.pyx`` into the extension ``kernels._cy.<name>``.

A Tempita template ``pyx/<name>.pyx.tp`` (Cython.Tempita, as scikit-learn's
``.pyx.tp`` files) stands for ``pyx/<name>.pyx``: build_ext renders it there
before cythonize.  The rendered file is a build product (.gitignore); the
template is the extension's source, so an sdist carries the template.

The integer codes of ``kernels/_codes.py`` (the one table of losses,
penalties, methods, activations...) reach the Cython side through
``pyx/_codes.pxi`` and ``pyx/_codes.h``, which build_ext writes from that
table before cythonize: a build product too, read from the Python source
with ``ast`` (the package is not imported, so that a cross build needs
nothing of the target).

Metadata lives in pyproject.toml; this file only describes the compiled part.
No NumPy import and no NumPy headers (the Cython code uses typed memoryviews
only), so a cross build needs no NumPy for the target.

Environment variables:

* ``KERNELS_CFLAGS``: extra compiler flags appended after ours, for example
  ``-mcpu=cortex-a72`` or ``-march=native`` (the default build is portable).
* ``KERNELS_NO_OPENMP=1``: build serial kernels even if the compiler supports
  OpenMP.

OpenMP is used when the compiler that ``build_ext`` actually runs (``CC``
when set, so a cross compiler is the one tested) compiles and links a small
OpenMP program; otherwise the build is serial.
"""

import ast
import os
import shlex
import tempfile
from glob import glob
from pathlib import Path

from Cython import Tempita
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "binding": True,
    "embedsignature": True,
}

# (optimisation flags, OpenMP compile flags, OpenMP link flags) by compiler.
COMPILER_FLAGS = {
    "msvc": (["/O2"], ["/openmp"], []),
    "unix": (["-O3"], ["-fopenmp"], ["-fopenmp"]),
}

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return (n > 0 && omp_get_max_threads() > 0) ? 0 : 1;
}
"""


def _compiler_flags(compiler):
    return COMPILER_FLAGS.get(compiler.compiler_type, COMPILER_FLAGS["unix"])


def _compiles_with_openmp(compiler, cflags, omp_cflags, omp_ldflags):
    """Compile and link (never run) OPENMP_TEST with ``compiler``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "openmp_test.c"
        source.write_text(OPENMP_TEST)
        try:
            objects = compiler.compile(
                [str(source)], output_dir=tmp, extra_postargs=cflags + omp_cflags
            )
            compiler.link_executable(
                objects, "openmp_test", output_dir=tmp, extra_postargs=omp_ldflags
            )
        except (CompileError, LinkError):
            return False
    return True


def _render(template):
    """Render the Tempita template ``pyx/<name>.pyx.tp`` into
    ``pyx/<name>.pyx`` and return that path.  The file is written only when
    its text changes, so that cythonize skips an unchanged module."""
    target = Path(template.removesuffix(".tp"))
    text = (
        f"# Rendered from {Path(template).name} by setup.py: edit the template.\n"
        + Tempita.Template.from_filename(template, encoding="utf-8").substitute()
    )
    _write_if_changed(target, text)
    return str(target)


CODES_TABLE = Path("kernels/_codes.py")
CODES_PXI = Path("pyx/_codes.pxi")
CODES_H = Path("pyx/_codes.h")


def _codes(table=CODES_TABLE):
    """The (name, value) of every ``NAME = <int>`` at the top of the table,
    in order."""
    codes = []
    for node in ast.parse(table.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.isupper()
            and isinstance(node.value, ast.Constant)
            and type(node.value.value) is int
        ):
            codes.append((node.targets[0].id, node.value.value))
    if not codes:
        raise RuntimeError(f"no integer codes found in {table}")
    return codes


def _write_if_changed(target, text):
    """Write text to target unless it holds it already (so that cythonize
    skips the modules that depend on an unchanged file)."""
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


def _write_codes(codes, pxi=CODES_PXI, header=CODES_H):
    """``pyx/_codes.h``, each code as a C enumerator KERNELS_<NAME> (for the
    C headers), and ``pyx/_codes.pxi``, included by the .pyx files that
    dispatch on codes: the enumerators declared to Cython as <NAME>, and the
    table again as the module's ``CODES`` dict of Python ints (compared
    with kernels._codes by the tests)."""
    note = f"Written by setup.py from {CODES_TABLE.as_posix()}: edit that table."
    _write_if_changed(
        header,
        "\n".join(
            [
                f"/* {note} */",
                "#ifndef KERNELS_CODES_H",
                "#define KERNELS_CODES_H",
                "enum {",
                *(f"    KERNELS_{name} = {value}," for name, value in codes),
                "};",
                "#endif",
                "",
            ]
        ),
    )
    lines = [
        f"# {note}",
        f'cdef extern from "{header.name}":',
        "    enum:",
        *(f'        {name} "KERNELS_{name}"' for name, _ in codes),
        "",
        "CODES = {",
        *(f'    "{name}": {name},' for name, _ in codes),
        "}",
        "",
    ]
    _write_if_changed(pxi, "\n".join(lines))


class BuildExt(build_ext):
    """build_ext that cythonizes, then picks OpenMP or serial for the
    compiler it is about to use."""

    def build_extensions(self):
        extra_cflags = shlex.split(os.environ.get("KERNELS_CFLAGS", ""))
        opt_flags, omp_cflags, omp_ldflags = _compiler_flags(self.compiler)
        cflags = opt_flags + extra_cflags
        if os.environ.get("KERNELS_NO_OPENMP", "") == "1":
            use_openmp, why = False, "KERNELS_NO_OPENMP=1"
        else:
            use_openmp = _compiles_with_openmp(
                self.compiler, cflags, omp_cflags, omp_ldflags
            )
            why = "compiler supports it" if use_openmp else "compiler lacks it"
        compiler = getattr(self.compiler, "compiler_so", [self.compiler.compiler_type])
        print(
            f"embedded-kernels: {'OpenMP' if use_openmp else 'serial'} build "
            f"({why}; compiler {compiler[0]})",
            flush=True,
        )
        for ext in self.extensions:
            ext.extra_compile_args = cflags + (omp_cflags if use_openmp else [])
            ext.extra_link_args = omp_ldflags if use_openmp else []
        super().build_extensions()

    def run(self):
        _write_codes(_codes())
        for ext in self.extensions:
            ext.sources = [
                _render(source) if source.endswith(".pyx.tp") else source
                for source in ext.sources
            ]
        # cythonize() returns new Extension objects; keep ours (setuptools has
        # annotated them in finalize_options) and take only the C sources.
        generated = cythonize(
            self.extensions,
            compiler_directives=CYTHON_DIRECTIVES,
            build_dir=os.path.join(self.build_temp, "cython"),
            include_path=["pyx"],
            quiet=True,
        )
        sources = {ext.name: ext.sources for ext in generated}
        for ext in self.extensions:
            ext.sources = sources[ext.name]
        super().run()


templates = glob("pyx/*.pyx.tp")
sources = templates + [
    source for source in glob("pyx/*.pyx") if f"{source}.tp" not in templates
]
# The C headers and Cython declarations the modules share: on the include
# paths of the C compiler and of Cython, and dependencies of every module
# (rebuilt when one changes; an sdist carries them).
shared = sorted(glob("pyx/*.h") + glob("pyx/*.pxd"))
extensions = [
    Extension(
        f"kernels._cy.{Path(source).name.split('.')[0]}",
        [source],
        include_dirs=["pyx"],
        depends=shared,
    )
    for source in sorted(sources)
]

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
