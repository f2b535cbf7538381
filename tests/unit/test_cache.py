"""parcomp's one cache pattern (parcomp.runtime.cache): bounded, least recently used first
out, every dropped entry handed to ``evict``; kept on the communicator it belongs to."""

import pytest
from mpi4py import MPI

from parcomp.runtime.cache import BoundedCache, cache_on


def test_the_bound_drops_the_least_recently_used_and_evicts_it():
    dropped = []
    cache = BoundedCache(3, dropped.append)
    for k in "abc":
        cache.put(k, k.upper())
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("d", "D")
    assert dropped == ["B"] and len(cache) == 3 and "b" not in cache
    assert "c" in cache  # a membership test does not mark it used
    cache.put("e", "E")
    assert dropped == ["B", "C"]


def test_replacing_pop_and_clear_evict():
    dropped = []
    cache = BoundedCache(4, dropped.append)
    cache.put("a", 1)
    cache.put("a", 2)
    cache.pop("a")
    cache.pop("missing")
    cache.put("b", 3)
    cache.put("c", 4)
    cache.clear()
    assert dropped == [1, 2, 3, 4] and len(cache) == 0


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="size must be >= 1"):
        BoundedCache(0)


def test_a_cache_on_a_communicator_is_emptied_when_it_is_freed():
    freed = []
    comm = MPI.COMM_SELF.Dup()
    cache = cache_on(comm, "things", 8, freed.append)
    assert cache_on(comm, "things", 8) is cache  # the same cache on the same communicator
    cache.put("x", "datatype")
    other = MPI.COMM_SELF.Dup()
    assert cache_on(other, "things", 8) is not cache  # each communicator its own
    other.Free()
    comm.Free()
    assert freed == ["datatype"] and len(cache) == 0
