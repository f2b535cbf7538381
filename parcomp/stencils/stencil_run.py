"""Running a checked stencil call: remembered checks, the exchange, overlap.

Local bookkeeping (:data:`CHECKED`, :func:`fast_key`, :func:`remember`); :func:`execute`
COMMUNICATES (the halo exchange: collective over the fields' communicator).

:func:`parcomp.stencils.run.run_stencil` checks a call (fields, halos, corners, reach,
compilation agreed) and then hands it here.  A call it has checked is remembered, keyed
by the kernel, ``corners`` and, per argument, the DistArray's identity or the argument's
kind; the arrays are held by weak reference, so a new array at a dead one's address is
checked again.  A remembered call goes straight to :func:`execute`.
"""

from __future__ import annotations

import weakref
from typing import Any

from parcomp.arrays.array import DistArray
from parcomp.arrays.exchange import group_exchange

__all__ = ["CHECKED", "CHECKED_MAX", "find", "fast_key", "remember", "execute", "window", "buffers"]


class _Checked:
    """A call of ``run_stencil`` that passed every check: its arrays (weakly), what it
    reads, the corners decision, and two functions made for exactly this call's shape:

    * ``same(*args)``: the same arrays (alive, the same objects) and argument kinds;
    * ``fire(*args)``: if ``same(*args)`` (else it returns False), the halo exchange (if any neighbour) and the kernel's compiled
      dispatcher on the ``.local`` buffers: the whole call, with no loop, lookup or
      allocation that does not depend on this call's values; ``bare(*args)`` the same
      without the exchange (``exchange=False``).
    """

    __slots__ = ("arity", "bare", "calls", "corners", "fire", "reads", "refs", "same", "spec")

    def __init__(
        self,
        refs: tuple[Any, ...],
        reads: list[Any],
        spec: Any,
        corners: bool,
        same: Any,
        fire: Any,
        bare: Any,
    ) -> None:
        self.refs = refs
        self.calls = 0  # fast calls since it was checked: every SAMPLE-th one is re-agreed
        self.arity = len(refs)
        self.reads = reads
        self.spec = spec
        self.corners = corners
        self.same = same
        self.fire = fire
        self.bare = bare

    def matches(self, args: tuple[Any, ...]) -> bool:
        return len(args) == self.arity and self.same(*args)


#: Checked calls per ``(kernel, corners)``, most recent first (a loop that swaps two
#: arrays each step has two); bounded in all (a loop making new arrays every call adds
#: entries, the oldest dropped).
CHECKED: dict[Any, list[_Checked]] = {}
CHECKED_MAX = 256
#: Every SAMPLE-th call of a remembered stencil call agrees its plain parameters between
#: ranks again (one 80-byte Allreduce): a value computed from a rank's own block that
#: changes later (a time step from a local CFL bound) is caught within SAMPLE calls.
SAMPLE = 256
_PER_KERNEL = 8


def find(kernel: Any, corners: Any, args: tuple[Any, ...]) -> _Checked | None:
    """The remembered call these arguments repeat, if any (local, no communication)."""
    hits = CHECKED.get((kernel, corners))
    if hits is not None:
        for hit in hits:
            if hit.matches(args):
                return hit
    return None


def fast_key(kernel: Any, args: tuple[Any, ...], corners: Any, dist: type) -> Any:
    """The remembering key of a call (kept for callers; :func:`find` is the fast path)."""
    return (kernel, corners)


def _alike(cls: type) -> tuple[type, ...]:
    """Classes Numba types alike (``float`` and ``np.float64`` ...): a call remembered with
    one matches the other, as the agreement between ranks compares them alike."""
    import numpy as np

    for group in (
        (float, np.float64),
        (int, np.int64),
        (bool, np.bool_),
        (complex, np.complex128),
    ):
        if cls in group:
            return group
    return (cls,)


def _kind(a: Any, dist: type) -> Any:
    import numpy as np

    if isinstance(a, dist):
        return None
    if isinstance(a, np.ndarray):
        return (type(a), a.dtype, a.ndim)
    return type(a)


def _specialise(
    kernel: Any, args: tuple[Any, ...], reads: list[Any], corners: bool, dist: type, spec: Any
) -> tuple[Any, Any, Any]:
    """Generate ``same``, ``fire`` and ``bare`` for this call's argument kinds (see :class:`_Checked`).

    The arrays are held by weak reference (a new array at a dead one's address is not the
    same); the exchange object too (it belongs to the array or to its group cache).
    """
    names = [f"a{i}" for i in range(len(args))]
    win = window(spec, args)
    env: dict[str, Any] = {"w": win}
    same, call = [], []
    for i, (name, a) in enumerate(zip(names, args, strict=True)):
        kind = _kind(a, dist)
        if kind is None:
            env[f"r{i}"] = weakref.ref(a)
            same.append(f"r{i}() is {name}")
            call.append(f"{name}.local" if win is None else f"{name}.local[w]")
        elif isinstance(kind, tuple):
            env[f"t{i}"], env[f"d{i}"], env[f"n{i}"] = kind
            same.append(
                f"{name}.__class__ is t{i} and {name}.dtype == d{i} and {name}.ndim == n{i}"
            )
            call.append(name)
        else:
            env[f"t{i}"] = _alike(kind)
            same.append(f"{name}.__class__ in t{i}")
            call.append(name)
    sig = ", ".join(names)
    test = " and ".join(same) or "True"
    lines = [f"def same({sig}):", f"    return {test}"]
    ex = group_exchange(reads, corners) if reads else None
    dispatcher = getattr(kernel, "_dispatcher", None)
    env["k"] = dispatcher if dispatcher is not None else kernel
    body = [f"    if not ({test}):", "        return False"]
    if ex is not None and ex.plan:
        env["x"] = weakref.ref(ex)
        read_refs = [weakref.ref(r) for r in reads]
        # the exchange belongs to the array (or its group cache): rebuilt if it went away
        env["g"] = lambda: group_exchange([r() for r in read_refs], corners)
        body.append("    (x() or g()).exchange()")
    body += [f"    k({', '.join(call)})", "    return True"]
    lines += [f"def fire({sig}):", *body, f"def bare({sig}):", *body[:2], *body[-2:]]
    exec("\n".join(lines), env)  # generated from names and kinds only
    return env["same"], env["fire"], env["bare"]


def remember(
    key: Any, args: tuple[Any, ...], reads: list[Any], spec: Any, corners: bool, dist: type
) -> None:
    kernel = key[0]
    refs = tuple(weakref.ref(a) if isinstance(a, dist) else None for a in args)
    same, fire, bare = _specialise(kernel, args, reads, corners, dist, spec)
    # the reads are held through the weak references above, not kept alive here
    hit = _Checked(refs, [weakref.ref(r) for r in reads], spec, corners, same, fire, bare)
    hits = CHECKED.setdefault(key, [])  # keyed by the corners asked for, not decided
    hits.insert(0, hit)
    del hits[_PER_KERNEL:]
    if sum(len(h) for h in CHECKED.values()) > CHECKED_MAX:
        CHECKED.pop(next(iter(CHECKED)))


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
        call_args = buffers(args, window(spec, args), DistArray)
    kernel(*call_args)


def window(spec: Any, args: tuple[Any, ...]) -> tuple[slice, ...] | None:
    """The part of the buffers a declared kernel gets when the halo is wider than its
    radius: the interior plus ``radius`` ghost cells (PURE).  A kernel computes every cell
    ``radius`` away from its arrays' edges; on the whole buffer it would also compute the
    outer ghost cells of its output, which on a wall hold the boundary condition.  None
    when the halo equals the radius (the whole buffer is that window) or undeclared."""

    if spec is None:
        return None
    first = next((a for a in args if isinstance(a, DistArray)), None)
    if first is None:
        return None
    r = spec.radius_for(first.ndim)
    if all(h == rd for h, rd in zip(first.halo, r, strict=True)):
        return None
    n = first.local_shape
    return tuple(slice(h - rd, h + nd + rd) for h, nd, rd in zip(first.halo, n, r, strict=True))


def buffers(args: tuple[Any, ...], win: tuple[slice, ...] | None, dist: type) -> tuple[Any, ...]:
    """The kernel's arguments: each DistArray's buffer (or its window), others as given."""
    if win is None:
        return tuple(a.local if isinstance(a, dist) else a for a in args)
    return tuple(a.local[win] if isinstance(a, dist) else a for a in args)


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

    ndim = first.ndim
    r = spec.radius_for(ndim)
    h, n = first.halo, first.local_shape

    def call(region: tuple[slice, ...]) -> None:
        kernel(*(a.local[region] if isinstance(a, DistArray) else a for a in args))

    whole = tuple(slice(hd - rd, hd + nd + rd) for hd, nd, rd in zip(h, n, r, strict=True))
    rest = whole[1:]  # the other axes: the interior and r ghost cells, never beyond
    group = group_exchange(reads, corners)
    group.start()
    try:
        if n[0] > 2 * r[0]:
            call((slice(h[0], h[0] + n[0]), *rest))
    finally:
        group.wait()
    for axis in range(ndim):
        hd, nd, rd = h[axis], n[axis], r[axis]
        if rd == 0:
            continue  # reads nothing across this axis: no strip
        for lo in sorted({hd - rd, max(hd - rd, hd + nd - 2 * rd)}):
            # axis 0: whole rows (C-contiguous when the halo is the radius); other axes:
            # narrow; never beyond r ghost cells (a wider halo's outer ghosts stay alone)
            region = list(whole)
            region[axis] = slice(lo, lo + 3 * rd)
            call(tuple(region))
