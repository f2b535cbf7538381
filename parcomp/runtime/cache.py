"""The one pattern for parcomp's caches: a bounded, least-recently-used map, kept on the
object it belongs to (local, no communication).

* State that belongs to a communicator (exchange groups, redistribution datatypes, the
  checked-reduction counters) is a :class:`BoundedCache` in the communicator's own
  attribute dict (:func:`cache_on`, through :func:`parcomp.runtime.subcomm.comm_cache`):
  it lives and dies with the communicator (freeing it evicts every entry), never keyed by
  an ``id()`` that a new object may take.
* The stencil engine's runners are kept the same way, on their fields' communicator; the
  fast path finds them through a plain dict keyed by the kernel
  (:data:`parcomp.stencils.run.RUNNERS`), which the communicator's cache empties as it
  drops them (a call costs 0.3 us: no communicator lookup on the way).
* Pure functions are memoised with :func:`functools.lru_cache` (bounded too).

Every cache has a bound; an entry dropped for it is handed to ``evict`` (freeing MPI
datatypes, for example).
"""

from __future__ import annotations

import atexit
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from parcomp.runtime.subcomm import comm_cache

__all__ = ["BoundedCache", "cache_on"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``size`` entries, the least recently used dropped first (to ``evict``).

    Parameters
    ----------
    size : int
        The bound (at least 1).
    evict : callable, optional
        Called with each value dropped: for the bound, by :meth:`pop` or :meth:`clear`.
    """

    __slots__ = ("__weakref__", "_data", "evict", "size")

    def __init__(self, size: int, evict: Callable[[V], Any] | None = None) -> None:
        if size < 1:
            raise ValueError(f"BoundedCache size must be >= 1, got {size}")
        self.size = size
        self.evict = evict
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key``; drop the oldest entries beyond the bound."""
        old = self._data.pop(key, None)
        if old is not None and old is not value and self.evict is not None:
            self.evict(old)
        self._data[key] = value
        while len(self._data) > self.size:
            _, dropped = self._data.popitem(last=False)
            if self.evict is not None:
                self.evict(dropped)
        return value

    def pop(self, key: K) -> None:
        """Drop ``key`` if present."""
        value = self._data.pop(key, None)
        if value is not None and self.evict is not None:
            self.evict(value)

    def clear(self) -> None:
        """Drop every entry."""
        while self._data:
            _, value = self._data.popitem(last=False)
            if self.evict is not None:
                self.evict(value)

    def values(self) -> Iterator[V]:
        return iter(list(self._data.values()))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def cache_on(
    comm: Any, name: str, size: int, evict: Callable[[Any], Any] | None = None
) -> BoundedCache[Any, Any]:
    """The :class:`BoundedCache` called ``name`` kept on ``comm`` (made on first use;
    cleared when the communicator is freed)."""
    store = comm_cache(comm)
    found = store.get(name)
    if found is None:
        found = store[name] = BoundedCache(size, evict)
        if evict is not None:
            _EVICT_AT_EXIT.add(found)
    return found


#: Caches whose entries hold MPI objects: emptied before MPI_Finalize (mpi4py finalizes
#: after the atexit handlers), so no datatype outlives the library.
_EVICT_AT_EXIT: weakref.WeakSet[BoundedCache[Any, Any]] = weakref.WeakSet()


@atexit.register
def _evict_all() -> None:
    import sys

    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        for cache in list(_EVICT_AT_EXIT):
            cache.clear()
