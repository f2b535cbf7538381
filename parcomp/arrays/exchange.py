"""Halo exchange of several fields at once: one message per neighbour, not one per field.

COMMUNICATES: :func:`exchange_halos`, :func:`start_exchange` and :func:`finish_exchange`
are collective over the arrays' communicator.

A Gray-Scott step reads two fields with ghost cells; exchanging them one after the other
sends two messages to every neighbour and waits twice.  Here every neighbour gets one
message carrying the slab of every field (an MPI struct datatype over the fields' buffers,
which may have different dtypes), built once per group of arrays and reused: a
persistent request per neighbour and direction, nothing packed or allocated per step.

Groups are cached by the arrays' identities, held by weak reference: when an array of a
group is collected, the group's requests are freed with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from parcomp.arrays.array import DistArray
from parcomp.arrays.fused import settle
from parcomp.grid.halo import HaloExchange, halo_plan
from parcomp.runtime.agree import alike
from parcomp.runtime.cache import cache_on
from parcomp.runtime.errors import CollectiveError, ShapeError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from parcomp.arrays.array import DistArray

__all__ = ["exchange_halos", "start_exchange", "finish_exchange", "group_exchange", "check_group"]

#: Exchanges of several arrays together kept per halo communicator (a
#: :class:`~parcomp.runtime.cache.BoundedCache` on it): (array ids, corners, walls) ->
#: (weak references to the arrays, their buffers' ids, exchange)
GROUPS_MAX = 64


def check_group(arrays: Sequence[Any]) -> list[DistArray]:
    """The arrays as a list, after checking they can be exchanged together (PURE).

    Raises
    ------
    ShapeError
        No arrays, something that is not a DistArray, the same array twice, or arrays
        decomposed differently (global shape, process grid, halo or communicator).
    """

    arrays = list(arrays)
    if not arrays:
        raise ShapeError("exchange_halos needs at least one DistArray")
    for a in arrays:
        if not isinstance(a, DistArray):
            raise ShapeError(f"exchange_halos takes DistArrays, got {type(a).__name__}")
    if len({id(a) for a in arrays}) != len(arrays):
        raise ShapeError("exchange_halos: the same array is given twice")
    first = arrays[0]
    for i, a in enumerate(arrays[1:], 1):
        if (a.partition, a.halo) != (first.partition, first.halo) or (
            a.layout.halo_comm is not first.layout.halo_comm
        ):
            raise ShapeError(
                f"exchange_halos: arrays 0 and {i} are decomposed differently: "
                f"{first.global_shape} grid {first.partition.dims} halo {first.halo} "
                f"periods {first.partition.periods} vs {a.global_shape} grid "
                f"{a.partition.dims} halo {a.halo} periods {a.partition.periods}"
                + ("" if a.layout.halo_comm is first.layout.halo_comm else " (other communicators)")
            )
    return arrays


def group_exchange(arrays: Sequence[DistArray], corners: bool, walls: bool = False) -> HaloExchange:
    """The (cached) exchange of ``arrays`` together; arrays already checked together.

    ``walls``: also carry the ghost cells beyond non-periodic boundaries along the axes a
    message does not cross (see :func:`parcomp.grid.halo.halo_plan`)."""
    walls = walls or corners  # as DistArray._exchange: corners beside walls too
    if len(arrays) == 1 and walls == corners:
        return arrays[0].exchanger(corners)
    first = arrays[0]
    groups = cache_on(first.layout.halo_comm, "exchange groups", GROUPS_MAX)
    key = (tuple(id(a) for a in arrays), corners, walls)
    hit = groups.get(key)
    if hit is not None:
        refs, buffers, ex = hit
        if all(
            r() is a and id(a.local) == b for r, a, b in zip(refs, arrays, buffers, strict=True)
        ):
            return ex
    plan = halo_plan(first.partition, first.rank, first.halo, corners, walls)
    ex = HaloExchange([a.local for a in arrays], plan, first.layout.halo_comm)

    def forget(_: Any, key: Any = key) -> None:
        groups.pop(key)

    refs = tuple(weakref.ref(a, forget) for a in arrays)
    groups.put(key, (refs, tuple(id(a.local) for a in arrays), ex))
    return ex


def _comm_of(*arrays: Any, **_kw: Any) -> Any:
    return arrays[0].comm if arrays else None


@collective("exchange_halos", _comm_of)
def exchange_halos(*arrays: DistArray, corners: bool = False) -> None:
    """Fill the ghost cells of several arrays in one exchange.

    Parameters
    ----------
    *arrays : DistArray
        Arrays with the same decomposition and halo (any dtypes).
    corners : bool
        Also exchange edges and corners (for stencils reading diagonal neighbours).

    Raises
    ------
    ShapeError
        The arrays are decomposed differently (raised on every rank: the check uses
        metadata all ranks agreed when the arrays were made).

    Notes
    -----
    Collective over the arrays' communicator.  Each neighbour gets one message carrying
    every array's slab, so two fields cost one latency, not two.
    """
    checked = _checked(arrays)
    settle()  # a fused block's recorded updates first (parcomp.arrays.fused)
    with alike(checked[0].comm, catch=CollectiveError):  # started twice, finished unstarted
        group_exchange(checked, corners).exchange()


@collective("start_exchange", _comm_of)
def start_exchange(*arrays: DistArray, corners: bool = False) -> None:
    """Start the exchange of :func:`exchange_halos` and return at once."""
    checked = _checked(arrays)
    settle()
    with alike(checked[0].comm, catch=CollectiveError):  # started twice, finished unstarted
        group_exchange(checked, corners).start()


@collective("finish_exchange", _comm_of)
def finish_exchange(*arrays: DistArray, corners: bool = False) -> None:
    """Wait for the exchange :func:`start_exchange` started on the same arrays (the same
    order and corners; otherwise :class:`~parcomp.runtime.errors.CollectiveError` on every rank)."""
    checked = _checked(arrays)
    settle()
    with alike(checked[0].comm, catch=CollectiveError):  # started twice, finished unstarted
        group_exchange(checked, corners).wait()


def _checked(arrays: Sequence[Any], what: str = "exchange_halos") -> list[DistArray]:
    try:
        return check_group(arrays)
    except ShapeError as exc:
        first = next((a for a in arrays if hasattr(a, "comm")), None)
        if first is not None:
            mark_everywhere(exc, first.comm)
        raise
