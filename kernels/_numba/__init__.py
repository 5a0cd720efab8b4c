"""The "numba" backend: JIT-compiled kernels, one module per family.

Importing this package raises ImportError when Numba is not installed; the
backend registry (``kernels._backend``) takes that to mean "backend
unavailable".  Compiled code is cached on disk where a writable directory
exists (``kernels._numba._jit``), so only the first run pays for compilation.
"""

import numba  # noqa: F401  (fail here, cleanly, when Numba is missing)
