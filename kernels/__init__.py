"""Triton kernels, installed as ``focus_modules.kernels``. Imported lazily by the ops (importing
``focus_modules`` never imports triton); the kernels import nothing from ``focus_modules``."""
