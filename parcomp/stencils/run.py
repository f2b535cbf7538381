"""``run_stencil``: the entry of the stencil engine (check, then run one step or many).

The first call of a kernel on given arrays is checked (:mod:`parcomp.stencils.check`) and
remembered; later calls on the same arrays take the short path of
:mod:`parcomp.stencils.stencil_run`.  ``steps=`` goes to the deep-halo engine
(:mod:`parcomp.stencils.multistep`).  COMMUNICATES: halo exchanges, and one agreement the
first time a kernel meets a communicator and argument types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from parcomp.runtime import watchdog
from parcomp.runtime.errors import KernelSignatureError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import collective, debug_collectives
from parcomp.stencils.check import _agree_params_again, _comm_of, _comm_of_call, check_call
from parcomp.stencils.multistep import run_steps
from parcomp.stencils.stencil_run import (
    CHECKED,
    SAMPLE,
    execute,
    find,
)

__all__ = ["run_stencil"]


def run_stencil(
    kernel: Callable[..., Any],
    *args: Any,
    corners: bool | None = None,
    exchange: bool = True,
    overlap: bool = False,
    steps: int | None = None,
    rotate: Mapping[str, str] | None = None,
    tile: int | Sequence[int | None] | None = None,
) -> tuple[Any, ...] | None:
    """Exchange the halos of the fields a kernel reads, then call it on every rank.

    Parameters
    ----------
    kernel : callable
        A :func:`parcomp.stencil` kernel, or an undeclared :func:`parcomp.jit` kernel
        taking ``(src, dst, *params)``.
    *args
        The kernel's arguments in order: DistArrays for its fields (declared ``reads`` and
        ``writes``; for an undeclared kernel the first two), then plain parameters.
        Fields are passed to the kernel as their ``.local`` buffers.
    corners : bool, optional
        Exchange edges and corners too.  Default: the declaration (False if undeclared).
        ``False`` for a kernel declared with ``corners=True`` raises.
    exchange : bool
        Set False if the read fields' ghost cells are already current.
    overlap : bool
        Overlap the halo exchange with computation (declared kernels): start the
        exchange, run the kernel on the cells whose stencil needs no ghost cell, finish
        the exchange, then run it on the boundary strips.  The kernel is called on views
        (it computes every cell at least ``radius`` away from its arrays' edges, as every
        stencil kernel does), so it needs no change, and the result is bitwise the same.
    steps : int, optional
        Do ``steps`` time steps with one halo exchange (declared kernels; see
        :mod:`parcomp.stencils.multistep`): what ``steps`` calls with the fields rotated between
        them (``u, v = v, u``) do, bitwise, on arrays whose halo is at least
        ``steps * radius`` wide.  The steps are also cache-blocked inside the rank.
        Returns the arguments for the next call, rotated ``steps`` times:
        ``u, v, alpha = run_stencil(heat, u, v, alpha, steps=8)``.  With
        ``overlap=True`` the deep exchange overlaps the cells that need no ghost cell.
    rotate : mapping of str to str, optional
        With ``steps``: which array each field is at the next step, as
        ``{"name next step": "name this step"}`` (default: each field read with ghosts
        swaps with the output declared in the same place).
    tile : int or sequence of int, optional
        With ``steps``: cells per tile along each axis (0 or None: that axis is not cut).
        Default: from the L2 cache size.

    Returns
    -------
    tuple or None
        With ``steps``, the arguments rotated ``steps`` times; otherwise None.

    Raises
    ------
    ShapeError
        A read field's halo is narrower than the kernel's radius (or zero for an
        undeclared kernel), or the fields are decomposed differently.
    KernelSignatureError
        Wrong number or kind of arguments, a DistArray where a plain parameter is
        expected, an output that shares memory with an input, ``corners=False`` for a
        kernel that needs corners, or a kernel that Numba cannot compile.

    Notes
    -----
    Collective over the fields' communicator.  Every check uses metadata agreed when the
    arrays were made, so all ranks raise the same error together.  The first call with a
    given kernel and argument types also compiles it (or loads it from the cache) under
    an agreement, so a compile error is raised on every rank and reported once.
    """
    if steps is not None or rotate is not None or tile is not None:
        return _run_steps(kernel, args, corners, exchange, overlap, steps, rotate, tile)
    hits = CHECKED.get((kernel, corners))
    if hits is not None and not overlap and not watchdog._debug:  # noqa: SLF001 - the fast path reads the watchdog's state: a call costs more than the check
        # The same kernel on the same arrays (alive, the same objects) and argument kinds
        # as a call already checked and agreed: every check would pass again, so the
        # exchange and the kernel run at once.  This path is kept short on purpose: after
        # a kernel has streamed a large block through the caches, every Python call on
        # the way back costs several times its warm price.
        n = len(args)
        for hit in hits:
            if hit.arity == n:
                hit.calls += 1
                if hit.calls % SAMPLE == 0 and hit.same(*args):
                    _agree_params_again(kernel, args)  # a sample of calls: see SAMPLE
                beat = watchdog._beat  # noqa: SLF001 - as above
                if beat is None or watchdog._nesting[0]:  # noqa: SLF001 - as above
                    if (hit.fire if exchange else hit.bare)(*args):
                        return
                    continue
                beat.enter(_NAME)  # under the watchdog: a hang in here is reported
                try:
                    done = (hit.fire if exchange else hit.bare)(*args)
                finally:
                    beat.leave()
                if done:
                    return
    _run_stencil(kernel, args, corners, exchange, overlap)


_NAME = b"run_stencil"


def _run_steps(
    kernel: Any,
    args: tuple[Any, ...],
    corners: bool | None,
    exchange: bool,
    overlap: bool,
    steps: Any,
    rotate: Any,
    tile: Any,
) -> tuple[Any, ...]:

    if steps is None:
        raise mark_everywhere(
            KernelSignatureError("run_stencil: rotate= and tile= go with steps="),
            _comm_of(kernel, *args),
        )
    return run_steps(kernel, args, corners, steps, rotate, tile, exchange, overlap)


@collective("run_stencil", _comm_of_call)
def _run_stencil(
    kernel: Any, args: tuple[Any, ...], corners: bool | None, exchange: bool, overlap: bool
) -> None:
    """:func:`run_stencil` for a call not seen before (or overlapped): check, then run."""
    hit = find(kernel, corners, args)
    if (
        hit is not None
        and not debug_collectives()
        and not (overlap and (hit.spec is None or hit.spec.reads_output is not False))
    ):  # (overlap of an undeclared kernel or one reading its output: raises below)
        execute(kernel, args, hit.reads, hit.spec, hit.corners, exchange, overlap, None)
        return
    read_arrays, spec, want_corners, call_args = check_call(
        kernel, args, corners, overlap, exchange
    )
    execute(kernel, args, read_arrays, spec, want_corners, exchange, overlap, call_args)
