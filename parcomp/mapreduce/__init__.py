"""Map/reduce over work items: ``parcomp.map``, ``parcomp.map_reduce``, keyed map/reduce,
schedules, the shared work counter, and (work in progress) resumable maps whose progress
is committed through the checkpoint engine.

May import: every package below it (runtime, grid, io, arrays, stencils, particles,
checkpoint).
"""

from parcomp.mapreduce.items import map as map
from parcomp.mapreduce.items import map_reduce
from parcomp.mapreduce.keyed import map_reduce_keyed

__all__ = ["map_reduce", "map_reduce_keyed"]
