"""The decomposition: partitions of a global index space over a process grid, halo plans
and their transport, and the frozen ``Layout`` that says where an array's data lives.

May import: :mod:`parcomp.runtime`.
"""
