"""Stencil kernels over DistArrays: declared reach, checks, deep-halo (multi-step) plans and
the runner.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`.
"""
