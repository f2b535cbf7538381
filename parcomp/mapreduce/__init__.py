"""Map/reduce over work items: ``parcomp.map``, ``parcomp.map_reduce``, keyed map/reduce,
schedules and the shared work counter.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`.
"""

from parcomp.mapreduce.items import map as map
from parcomp.mapreduce.items import map_reduce
from parcomp.mapreduce.keyed import map_reduce_keyed

__all__ = ["map_reduce", "map_reduce_keyed"]
