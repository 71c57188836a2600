"""Functional ops; see :mod:`focus_modules.functional` for the public names."""
