"""Running a checked stencil call: remembered checks, the exchange, overlap.

Local bookkeeping (:data:`CHECKED`, :func:`fast_key`, :func:`remember`); :func:`execute`
COMMUNICATES (the halo exchange: collective over the fields' communicator).

:func:`parcomp.declared.run_stencil` checks a call (fields, halos, corners, reach,
compilation agreed) and then hands it here.  A call it has checked is remembered, keyed
by the kernel, ``corners`` and, per argument, the DistArray's identity or the argument's
kind; the arrays are held by weak reference, so a new array at a dead one's address is
checked again.  A remembered call goes straight to :func:`execute`.
"""

from __future__ import annotations

import weakref
from typing import Any

from parcomp.exchange import group_exchange

__all__ = ["CHECKED", "CHECKED_MAX", "fast_key", "remember", "execute"]


class _Checked:
    """A call of ``run_stencil`` that passed every check: its arrays (weakly), what it
    reads, and the corners decision."""

    __slots__ = ("corners", "reads", "refs", "spec")

    def __init__(self, refs: tuple[Any, ...], reads: list[Any], spec: Any, corners: bool) -> None:
        self.refs = refs
        self.reads = reads
        self.spec = spec
        self.corners = corners

    def matches(self, args: tuple[Any, ...]) -> bool:
        return all(ref is None or ref() is a for ref, a in zip(self.refs, args, strict=True))


#: Checked calls, keyed by kernel, corners and per argument its identity (DistArrays) or
#: kind; bounded (a loop making new arrays every call adds entries, oldest dropped).
CHECKED: dict[Any, _Checked] = {}
CHECKED_MAX = 256


def fast_key(kernel: Any, args: tuple[Any, ...], corners: Any, dist: type) -> Any:
    import numpy as np

    parts: list[Any] = []
    for a in args:
        if isinstance(a, dist):
            parts.append(id(a))
        elif isinstance(a, np.ndarray):
            parts.append((a.dtype.str, a.ndim))
        else:
            parts.append(type(a))
    return (kernel, corners, tuple(parts))


def remember(
    key: Any, args: tuple[Any, ...], reads: list[Any], spec: Any, corners: bool, dist: type
) -> None:
    if len(CHECKED) >= CHECKED_MAX:
        CHECKED.pop(next(iter(CHECKED)))
    refs = tuple(weakref.ref(a) if isinstance(a, dist) else None for a in args)
    # the reads are held through the weak references above, not kept alive here
    CHECKED[key] = _Checked(refs, [weakref.ref(r) for r in reads], spec, corners)


def execute(
    kernel: Any,
    args: tuple[Any, ...],
    reads: list[Any],
    spec: Any,
    corners: bool,
    exchange: bool,
    overlap: bool,
    call_args: tuple[Any, ...] | None,
) -> None:
    """Exchange (or overlap) and call: after every check passed."""
    from parcomp.array import DistArray

    reads = [r() if isinstance(r, weakref.ref) else r for r in reads]
    if overlap and exchange and not reads:
        overlap = False  # nothing to exchange, nothing to overlap
    if overlap and exchange:
        first = next(a for a in args if isinstance(a, DistArray))
        _overlapped(kernel, args, reads, first, spec, corners)
        return
    if exchange and reads:
        # every field read with ghosts in one exchange: one message per neighbour
        group_exchange(reads, corners).exchange()
    if call_args is None:
        call_args = tuple(a.local if isinstance(a, DistArray) else a for a in args)
    kernel(*call_args)


def _overlapped(
    kernel: Any, args: tuple[Any, ...], reads: list[Any], first: Any, spec: Any, corners: bool
) -> None:
    """The kernel on the inner rows during the exchange, then on the boundary strips.

    A kernel given arrays of shape ``s`` computes the cells ``[r, s - r)`` on each axis.
    With halo ``h`` and interior length ``n`` per axis:

    * during the exchange it gets whole rows ``[h, h + n)`` of axis 0 (a C-contiguous
      view, so Numba compiles it as fast as the whole buffer) and computes rows
      ``[h + r, h + n - r)``; the cells of those rows next to the other axes' edges read
      ghost cells still in flight, so they are computed again below;
    * after it, the two strips of ``r`` rows along axis 0 (whole rows again), then, for
      each other axis, the ``r`` cells next to each edge over the whole interior extent of
      the rest (narrow views); those overwrite the cells computed early from stale ghosts.

    Each cell's final value comes from current ghost cells: bitwise what one call after a
    blocking exchange gives.
    """
    from parcomp.array import DistArray

    ndim = first.ndim
    r = spec.radius_for(ndim)
    h, n = first.halo, first.local_shape

    def call(region: tuple[slice, ...]) -> None:
        kernel(*(a.local[region] if isinstance(a, DistArray) else a for a in args))

    rest = tuple(slice(None) for _ in range(ndim - 1))
    group = group_exchange(reads, corners)
    group.start()
    try:
        if n[0] > 2 * r[0]:
            call((slice(h[0], h[0] + n[0]), *rest))
    finally:
        group.wait()
    whole = tuple(slice(hd - rd, hd + nd + rd) for hd, nd, rd in zip(h, n, r, strict=True))
    for axis in range(ndim):
        hd, nd, rd = h[axis], n[axis], r[axis]
        if rd == 0:
            continue  # reads nothing across this axis: no strip
        for lo in sorted({hd - rd, max(hd - rd, hd + nd - 2 * rd)}):
            # axis 0: whole rows (C-contiguous); other axes: narrow, interior elsewhere
            region = list(whole) if axis else [slice(None)] * ndim
            region[axis] = slice(lo, lo + 3 * rd)
            call(tuple(region))
