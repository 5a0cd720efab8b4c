"""Data sets shipped with the package: ``digits.npz``, the 1,797 8x8
handwritten digits (UCI "Optical Recognition of Handwritten Digits", CC BY
4.0, as scikit-learn distributes them; X uint8 in 0..16, y uint8) used by
``python -m kernels demo``."""
