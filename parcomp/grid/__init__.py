"""Decomposed arrays: partitions, halos and their exchange, ``DistArray`` and its algebra,
planes, redistribution between process grids, distributed FFTs.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.io`.
"""
