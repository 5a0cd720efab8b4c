"""Compiled Cython kernels: setup.py builds each ``pyx/<name>.pyx`` (rendered
from the Tempita template ``pyx/<name>.pyx.tp`` where there is one) into the
extension module ``kernels._cy.<name>`` placed here (``pip install -e .``
writes the shared objects into this directory of the source tree)."""
