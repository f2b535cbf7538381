"""Decomposed arrays: ``DistArray``, its algebra and exact reductions, planes,
redistribution between process grids, multi-field halo exchange, distributed FFTs.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`, :mod:`parcomp.io`.
"""
