"""The plan of a stencil call (PURE): :class:`StencilPlan`, the one value the checks produce
and the runner executes, for one step (k = 1) or several per exchange; and the pieces of
the multi-step plan: which cells each step computes, in which tiles and order, what
overlaps the exchange, how the fields rotate.

Checked by hand in NumPy (``tests/unit/test_multistep_plan.py``); built by
:mod:`parcomp.stencils.check` and :mod:`parcomp.stencils.check_steps` (whose docstring
explains the multi-step method), run by :mod:`parcomp.stencils.run`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from parcomp.runtime import config
from parcomp.runtime.errors import KernelSignatureError

__all__ = [
    "StencilPlan",
    "single_plan",
    "step_regions",
    "schedule",
    "overlap_plan",
    "rotation",
    "rotated",
    "default_tile",
    "cache_bytes",
]

Range = tuple[int, int]
#: One kernel call of a plan: the step (0-based: which rotation of the arguments) and the
#: view of every field's buffer it gets (None: the whole buffer).
Call = tuple[int, "tuple[slice, ...] | None"]

#: Calls between two re-agreements of a remembered call's plain parameters, in steps: a
#: value computed from a rank's own block that changes later (a time step from a local
#: CFL bound) is caught within this many steps (one 80-byte Allreduce each time).
SAMPLE = 256


@dataclass(frozen=True, eq=False)
class StencilPlan:
    """What a checked ``run_stencil`` call does on this rank (PURE data, built once by the
    checks, executed by :mod:`parcomp.stencils.run` as often as the call repeats).

    One step is the case ``steps == 1``: ``calls`` is then one call on the whole block
    (or, for a halo wider than the radius, on the interior and ``radius`` ghost cells).
    """

    #: the kernel's name, for messages
    name: str
    #: time steps per call (1 for a single step)
    steps: int
    #: ``steps=None`` was asked: nothing is returned
    single: bool
    #: rotation between steps: ``perm[i]`` is the position of this step's argument passed
    #: at position ``i`` next step (identity for a single step)
    perm: tuple[int, ...]
    #: which arguments are DistArrays (the kernel gets their buffers, or views of them)
    is_field: tuple[bool, ...]
    #: the kernel calls, in order (with overlap: those during the exchange)
    calls: tuple[Call, ...]
    #: with overlap: the calls once the exchange has finished
    after: tuple[Call, ...]
    #: the exchange is started, ``calls`` run, then it is finished and ``after`` run
    overlapped: bool
    #: wall ghost bands a whole-axis view lets the kernel overwrite, restored after each
    #: call: ``(index over the axes after the first, axis)``
    bands: tuple[tuple[tuple[slice, ...], int], ...]
    #: positions of the arguments the kernel writes
    write_pos: tuple[int, ...]
    #: positions of the arguments exchanged before the first step (each array once)
    exchanged: tuple[int, ...]
    #: the exchange includes edges and corners
    corners: bool
    #: the exchange also carries the neighbours' copies of their wall ghost cells
    walls: bool

    @property
    def period(self) -> int:
        """Steps after which the rotation is back where it started."""
        return _period(self.perm)

    @property
    def plain(self) -> bool:
        """A plan of :func:`single_plan`: one call on the buffers after a blocking exchange
        (the generated fast path)."""
        return (
            self.single
            and not self.walls
            and len(self.calls) == 1
            and not self.after
            and not self.overlapped
            and not self.bands
        )

    @property
    def sample(self) -> int:
        """Fast calls between two re-agreements of the plain parameters (see SAMPLE)."""
        return max(1, SAMPLE // self.steps)


def single_plan(
    name: str,
    is_field: Sequence[bool],
    window: tuple[slice, ...] | None,
    write_pos: Sequence[int],
    exchanged: Sequence[int],
    corners: bool,
) -> StencilPlan:
    """The plan of one step: one call on the buffers (or ``window`` of them) after one
    blocking exchange of the fields read with ghost cells (PURE)."""
    n = len(is_field)
    return StencilPlan(
        name=name,
        steps=1,
        single=True,
        perm=tuple(range(n)),
        is_field=tuple(is_field),
        calls=((0, window),),
        after=(),
        overlapped=False,
        bands=(),
        write_pos=tuple(write_pos),
        exchanged=tuple(exchanged),
        corners=corners,
        walls=False,
    )


# ------------------------------------------------------------------------------ pure plan
def step_regions(
    shape: Sequence[int],
    halo: Sequence[int],
    radius: Sequence[int],
    lower: Sequence[bool],
    upper: Sequence[bool],
    steps: int,
) -> tuple[tuple[Range, ...], ...]:
    """The cells step ``s`` computes, per axis ``[lo, hi)`` in buffer coordinates (PURE).

    Parameters
    ----------
    shape : sequence of int
        The rank's interior shape.
    halo, radius : sequence of int
        Ghost width and kernel radius per axis (``halo >= steps * radius``).
    lower, upper : sequence of bool
        Whether the rank has a neighbour (possibly itself) below / above on each axis;
        False is a wall, whose ghost cells are never computed.
    steps : int
        ``k``.

    Returns
    -------
    tuple
        ``k`` entries, step 1 first; step ``k`` is the interior.
    """
    out = []
    for s in range(1, steps + 1):
        ext = steps - s
        out.append(
            tuple(
                (h - ext * r if lo else h, h + n + ext * r if hi else h + n)
                for n, h, r, lo, hi in zip(shape, halo, radius, lower, upper, strict=True)
            )
        )
    return tuple(out)


@functools.lru_cache(maxsize=256)
def schedule(
    regions: tuple[tuple[Range, ...], ...],
    radius: tuple[int, ...],
    tile: tuple[int | None, ...],
    whole: tuple[bool, ...] | None = None,
) -> tuple[tuple[int, tuple[slice, ...]], ...]:
    """Kernel calls in execution order: ``(step index from 0, view of the buffers)`` (PURE).

    The view of a call is its computed range widened by ``radius`` on each axis (the
    kernel computes every cell ``radius`` away from the view's edges).  Tiles are cut
    from the interior (the last step's region) every ``tile[axis]`` cells (None: the
    axis is not cut), skewed back by ``radius`` per step, and taken in lexicographic
    order, every step of a tile before the next tile.

    ``whole[axis]``: the view spans the whole buffer along that (uncut) axis, so that a
    view cut only along axis 0 stays C-contiguous (Numba compiles a strided view as
    layout 'A', measured 1.9-2.7x slower for a 5-point sweep).  The kernel then also
    computes cells beyond the step's region along that axis: next to a neighbour those
    are ghost cells no current cell reads (they lie beyond the region the next step
    reads, and the overrun grows by ``r`` per step as the region shrinks by ``r``); next
    to a wall they are the wall's ghost cells, which the caller restores after each call.
    """
    steps = len(regions)
    ndim = len(radius)
    cuts: list[list[float]] = []
    for axis in range(ndim):
        lo, hi = regions[-1][axis]
        t = tile[axis]
        inner = [] if t is None or t <= 0 else list(range(lo + t, hi, t))
        cuts.append([-math.inf, *inner, math.inf])
    calls = []
    for index in itertools.product(*(range(len(c) - 1) for c in cuts)):
        for s in range(steps):
            view = []
            for axis, j in enumerate(index):
                r = radius[axis]
                lo_s, hi_s = regions[s][axis]
                a = max(lo_s, cuts[axis][j] - s * r)
                b = min(hi_s, cuts[axis][j + 1] - s * r)
                if a >= b:
                    break
                view.append(slice(None) if whole and whole[axis] else slice(int(a) - r, int(b) + r))
            else:
                calls.append((s, tuple(view)))
    return tuple(calls)


def overlap_plan(
    regions: tuple[tuple[Range, ...], ...],
    radius: tuple[int, ...],
    lower: Sequence[bool],
    upper: Sequence[bool],
    tile: tuple[int | None, ...],
    whole: tuple[bool, ...],
    halo: Sequence[int],
) -> tuple[tuple[tuple[int, tuple[slice, ...]], ...], tuple[tuple[int, tuple[slice, ...]], ...]]:
    """The calls during the exchange and after it, for ``overlap=True`` (PURE).

    During the exchange only cells that depend on no ghost cell, and that are not being
    sent, are computed: at step ``s`` those at least ``h + s * r`` from every edge with a
    neighbour (a wall's ghost cells are current already), tiled and skewed like
    :func:`schedule`; along an axis with a
    neighbour the views are cut (a whole view would overwrite values the second phase
    still reads).  After it, step by step, the rest of each step's region, as strips
    around that safe box.  A strip's level ``s - 1`` neighbours are intact: the first
    phase overwrote levels only inside boxes ``r`` narrower per step, beyond their reach.
    """
    steps = len(regions)
    ndim = len(radius)
    inner = regions[-1]
    # beside a neighbour also clear of the block's first ``h`` cells, the slab the
    # exchange is sending meanwhile (a step writing there would change what is sent)
    safe = tuple(
        tuple(
            (
                inner[ax][0] + halo[ax] + (s + 1) * radius[ax] if lower[ax] else regions[s][ax][0],
                inner[ax][1] - halo[ax] - (s + 1) * radius[ax] if upper[ax] else regions[s][ax][1],
            )
            for ax in range(ndim)
        )
        for s in range(steps)
    )
    whole_first = tuple(w and not (lower[ax] or upper[ax]) for ax, w in enumerate(whole))
    first = schedule(safe, radius, tile, whole_first)
    second = []
    for s in range(steps):
        region, box = regions[s], safe[s]
        if any(lo >= hi for lo, hi in box):
            boxes = [region]
        else:
            boxes = []
            for ax in range(ndim):
                for lo, hi in ((region[ax][0], box[ax][0]), (box[ax][1], region[ax][1])):
                    if lo < hi:
                        boxes.append((*box[:ax], (lo, hi), *region[ax + 1 :]))
        for b in boxes:
            if all(lo < hi for lo, hi in b):
                view = tuple(slice(lo - r, hi + r) for (lo, hi), r in zip(b, radius, strict=True))
                second.append((s, view))
    return first, tuple(second)


def rotation(spec: Any, rotate: Mapping[str, str] | None, kernel_name: str) -> tuple[int, ...]:
    """Where each argument of the next step comes from: ``perm[i]`` is the position of
    this step's argument that is passed at position ``i`` next step (PURE).

    Default, for kernels without pointwise fields: each field read with ghost cells and
    not written swaps with the output declared in the same place (``reads=("u", "v"),
    writes=("u2", "v2")``: u <-> u2, v <-> v2), the two-level scheme of ``u, v = v, u``.
    Other schemes (three time levels) name it: ``rotate={"u": "unew", "uold": "u",
    "unew": "uold"}`` passes as ``u`` next step the array that was ``unew``.  Fields
    ``rotate`` does not name stay where they are (a coefficient field).

    Raises
    ------
    KernelSignatureError
        No default exists and none is given, or ``rotate`` is not a permutation of the
        kernel's fields.
    """
    params = list(spec.params)
    fields = set(spec.reads) | set(spec.writes) | set(spec.pointwise)
    if rotate is None:
        reads = [p for p in spec.reads if p not in spec.writes]
        writes = [p for p in spec.writes if p not in spec.reads and p not in spec.pointwise]
        # Pointwise fields (an old time level, or a coefficient that stays) have no
        # default: guessing "stays" for the old level of a leapfrog would be silently wrong.
        if len(reads) != len(writes) or spec.pointwise:
            raise KernelSignatureError(
                f"run_stencil(steps=...): kernel {kernel_name!r} reads {tuple(reads)} and "
                f"writes {tuple(writes)}"
                + (f" with pointwise {spec.pointwise}" if spec.pointwise else "")
                + ": parcomp cannot tell which array becomes which between steps. Pass "
                'rotate={"next name": "this step\'s name", ...}'
            )
        mapping = {**dict(zip(reads, writes, strict=True)), **dict(zip(writes, reads, strict=True))}
    else:
        if not isinstance(rotate, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in rotate.items()
        ):
            raise KernelSignatureError(
                f"run_stencil(steps=...): rotate must map parameter names to parameter names, "
                f"got {rotate!r}"
            )
        mapping = dict(rotate)
        unknown = sorted((set(mapping) | set(mapping.values())) - fields)
        if unknown:
            raise KernelSignatureError(
                f"run_stencil(steps=...): rotate names {unknown}, which are not fields of "
                f"kernel {kernel_name!r} (fields: {sorted(fields)})"
            )
        if sorted(mapping) != sorted(mapping.values()):
            raise KernelSignatureError(
                f"run_stencil(steps=...): rotate={mapping} is not a permutation: every "
                "array must go somewhere and come from somewhere"
            )
        _refuse_partial(spec, mapping, kernel_name)
    return tuple(params.index(mapping.get(p, p)) for p in params)


def _refuse_partial(spec: Any, mapping: dict[str, str], kernel_name: str) -> None:
    """Refuse a ``rotate`` that swaps some read/written twins and leaves others in place.

    Twins are a field read with ghost cells and the output declared in the same place
    (``reads=("h", "u"), writes=("h2", "u2")``: h/h2 and u/u2).  With ``{"h": "h2", "h2":
    "h"}`` the kernel would read the first ``u`` at every step and overwrite ``u2``: a
    wrong answer without a word.  A field that is only read (a coefficient) or only
    written (a diagnostic) and has no twin may stay (PURE)."""
    reads = [p for p in spec.reads if p not in spec.writes]
    writes = [p for p in spec.writes if p not in spec.reads and p not in spec.pointwise]
    if len(reads) != len(writes):
        return
    pairs = list(zip(reads, writes, strict=True))

    def moves(name: str) -> bool:
        return mapping.get(name, name) != name

    rotating = [(r, w) for r, w in pairs if moves(r) or moves(w)]
    still = [(r, w) for r, w in pairs if not moves(r) and not moves(w)]
    if rotating and still:
        r, w = still[0]
        raise KernelSignatureError(
            f"run_stencil(steps=...): rotate={mapping} rotates {rotating[0][0]}/"
            f"{rotating[0][1]} but leaves {r} (read) and {w} (written in its place) where "
            f"they are: every step would read the first {r} again and overwrite {w}. Name "
            f'them too (rotate={{..., "{r}": "{w}", "{w}": "{r}"}}), or leave rotate unset '
            "for the default (every read field swaps with its output)"
        )


def rotated(args: tuple[Any, ...], perm: tuple[int, ...], times: int) -> tuple[Any, ...]:
    """``args`` after ``times`` rotations (PURE)."""
    for _ in range(times):
        args = tuple(args[i] for i in perm)
    return args


def cache_bytes() -> int:
    """The per-core cache the tiles aim at: L2, from sysfs (1 MiB if unknown);
    ``PARCOMP_TILE_CACHE_BYTES`` overrides."""
    explicit = config.get("PARCOMP_TILE_CACHE_BYTES")
    if explicit is not None:
        return int(explicit)
    try:
        text = open("/sys/devices/system/cpu/cpu0/cache/index2/size").read().strip()
        unit = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
        return int(text.rstrip("KMG")) * unit
    except (OSError, ValueError):
        return 1 << 20


def default_tile(
    buffer_shape: Sequence[int],
    itemsize: int,
    radius: Sequence[int],
    steps: int,
    budget: int,
) -> tuple[int | None, ...]:
    """Rows per tile (axis 0; the other axes whole) for a working set within ``budget``
    bytes (PURE).

    A tile advancing ``k`` steps keeps about ``T + (k + 2) r`` rows of every field in
    cache (``itemsize``: the bytes of one cell of all fields together).  Only axis 0 is
    cut: a view cut along another axis is strided, which Numba compiles as layout 'A'
    (measured 1.9-2.7x slower per sweep, more than the cache saves).  At least 16 rows:
    when not even a few
    rows fit (3-D blocks: a 256^2 plane pair is 1 MiB), tiles of 16 rows still reuse the
    next cache level (measured best at 16 planes for 256^3 and 16-32 rows for the PRK
    stencil at 8192^2, where a row of its five fields is 270 KiB).
    """
    ndim = len(buffer_shape)
    extra = (steps + 2) * radius[0]
    row = itemsize * math.prod(buffer_shape[1:])
    t0 = max(budget // max(row, 1) - extra, 16)
    return (None if t0 >= buffer_shape[0] else t0, *([None] * (ndim - 1)))


def _period(perm: tuple[int, ...]) -> int:
    identity = tuple(range(len(perm)))
    p, n = perm, 1
    while p != identity:
        p = tuple(p[i] for i in perm)
        n += 1
    return n


def _unit(ndim: int, axis: int, step: int) -> tuple[int, ...]:
    return tuple(step if a == axis else 0 for a in range(ndim))
