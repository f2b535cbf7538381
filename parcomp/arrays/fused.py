"""Fused DistArray algebra: a block of element-wise updates and reductions, one pass.

Inside ``with parcomp.fused():``, ``axpy``, the in-place operators (``+=``, ``-=``,
``*=``, ``/=`` with a DistArray or a real scalar), ``dot``/``vdot``, ``sum`` and
``norm`` of float64 DistArrays are *recorded*, not run.  They run together, as one
compiled loop over the interiors that reads each array once and writes each updated
array once, when a value is needed:

* a reduction's result (a :class:`Deferred`) is used: ``float(rs)``, ``rs / rs_old``,
  ``np.sqrt(rs)``, a comparison, printing it;
* anything else touches one of the recorded arrays' data (a stencil, a halo exchange,
  ``a.interior``, a ufunc, a save: they all go through the array's buffer, which runs
  what is recorded first);
* the block ends.

So the conjugate-gradient update ``x.axpy(alpha, p); r.axpy(-alpha, q); rs = r.dot(r)``
is one pass instead of three, and ``p *= rs / rs_old; p += r`` one instead of two.

The result is what the same calls give outside the block: element-wise updates run the
same floating-point operations per element, in the same order (bit for bit); a
``deterministic=True`` reduction gives the same bits (exact, correctly rounded); a plain
reduction is a float sum in another order (as a plain ``dot`` on another rank count).
Each reduction's value is the one at its place in the sequence: an update recorded after
it does not change it.

Rules: the arrays of a block must be decomposed alike (the same partition; else a
:class:`~parcomp.runtime.errors.ShapeError` naming the difference, on every rank, as
outside the block); a reduction's value is collective like the call that made it (use
it on every rank, as SPMD code does); other dtypes and complex values simply run at once.
The first use of a new sequence of operations compiles its loop (Numba, about 0.3 s on
each rank; then cached in the process).

Not watched: a NumPy view of a recorded array's buffer taken *before* the block (``xi =
x.interior`` kept in a variable) reads and writes the buffer without running what is
recorded; inside a block, read through the array (``x.interior``) or leave the block
first.  Should the compiled loop itself fail (a read-only buffer), the stretch it was
running is lost with the error.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from parcomp.runtime.watchdog import collective

__all__ = ["fused", "Deferred", "recording", "settle"]

_STATE = threading.local()
_REAL = (float, int, np.floating, np.integer)


def _real(x: Any) -> bool:
    """A scalar the loop takes as a float64 without changing a result (not long double,
    which NumPy keeps wider)."""
    return isinstance(x, _REAL) and not isinstance(x, np.longdouble)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: ``np.einsum`` subscripts of a full dot product of two n-d arrays (no temporary)
EINSUM_DOT = {n: f"{_LETTERS[:n]},{_LETTERS[:n]}->" for n in range(1, 27)}
_CHUNK = 2048  # columns per chunk of the reduction rows (the products wait in L1)
_BLOCK = 4096  # parcomp.runtime.exactsum.BLOCK: an exact reduction's staged block


def recording() -> Program | None:
    """The program being recorded on this thread, if inside ``fused()``."""
    return getattr(_STATE, "program", None)


def settle() -> None:
    """Run what this thread's block recorded so far (local; a no-op outside a block).

    For what reaches array data without reading ``.local`` again: a halo exchange keeps
    its requests on the buffer, so the exchanges and stencils call this first."""
    program = getattr(_STATE, "program", None)
    if program is not None:
        program.run_local()


class fused:  # noqa: N801 - used as a function: ``with parcomp.fused():``
    """Record the DistArray algebra in the block and run it fused (see the module).

    Examples
    --------
    >>> with parcomp.fused():                      # doctest: +SKIP
    ...     x.axpy(alpha, p)
    ...     r.axpy(-alpha, q)
    ...     rs_new = r.dot(r, deterministic=True)  # one pass for the three
    """

    __slots__ = ("programs",)

    def __init__(self) -> None:
        self.programs: list[Program | None] = []  # one per (re-)entry: None when nested

    def __enter__(self) -> None:
        if recording() is not None:  # nested: the outer block records
            self.programs.append(None)
            return
        program = Program()
        self.programs.append(program)
        _STATE.program = program

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        program = self.programs.pop()
        if program is None:
            return
        _STATE.program = None
        if kind is not None:
            program.run_local()  # the updates happened, as outside a block; no collective
        else:
            program.finish()


class Deferred:
    """A reduction recorded in a fused block: a float once used (collective then)."""

    __slots__ = ("_index", "_post", "_program", "_value")

    def __init__(self, program: Program, index: int, post: Callable[[float], float] | None):
        self._program = program
        self._index = index
        self._post = post
        self._value: float | None = None

    @property
    def value(self) -> float:
        """The reduction's value (runs what is recorded, then one allreduce for every
        reduction of the pass; collective)."""
        if self._value is None:
            v = self._program.result(self._index)
            self._value = float(self._post(v)) if self._post is not None else v
        return self._value

    def __float__(self) -> float:
        return self.value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.value, dtype=dtype)

    def __repr__(self) -> str:  # never communicates: shows the value once it is known
        known = self._value is not None or self._index in self._program.values
        return f"Deferred({self.value!r})" if known else "Deferred(pending)"

    def __str__(self) -> str:  # print(rs): the value (collective, as using it)
        return str(self.value)

    @property
    def real(self) -> float:
        return self.value

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self.value, ndigits)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __hash__(self) -> int:
        return hash(self.value)


def _binary(name: str) -> Callable[..., Any]:
    def op(self: Deferred, other: Any) -> Any:
        other = other.value if isinstance(other, Deferred) else other
        return getattr(self.value, name)(other)

    op.__name__ = name
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "pow", "mod", "divmod", "lt",
              "le", "gt", "ge", "eq", "ne"):  # fmt: skip
    setattr(Deferred, f"__{_name}__", _binary(f"__{_name}__"))
    if _name in ("add", "sub", "mul", "truediv", "floordiv", "pow", "mod", "divmod"):
        setattr(Deferred, f"__r{_name}__", _binary(f"__r{_name}__"))
for _name in ("neg", "pos", "abs", "int", "trunc", "floor", "ceil"):
    setattr(Deferred, f"__{_name}__", (lambda n: lambda self, *a: getattr(self.value, n)(*a))(
        f"__{_name}__"))  # fmt: skip


numbers.Real.register(Deferred)  # a float where one is expected (checkpoint scalars ...)


# ------------------------------------------------------------------------- the program
class Program:
    """What a fused block recorded and not yet run: arrays, scalars, operations, and
    the reductions (their local partials, then their values)."""

    def __init__(self) -> None:
        # another thread reading a held array's buffer runs this program too
        self.lock = threading.RLock()
        self._reset()
        self.pending: list[tuple[str, int, Any, Any]] = []  # (kind, index, partial, comm)
        self.values: dict[int, float] = {}
        self.count = 0
        self.passes = 0  # compiled passes run (one per stretch of recorded operations)

    def _reset(self) -> None:
        self.alike: dict[tuple[int, int], Any] = {}  # pairs of partitions found equal
        self.arrays: list[Any] = []
        self.ops: list[tuple[Any, ...]] = []
        self.scalars: list[float] = []
        self.reductions: list[tuple[int, bool, Callable[[float], float] | None]] = []

    # -- recording (called by VectorAlgebra's methods; False: run it at once instead)
    def _slot(self, arr: Any) -> int:
        # never touch a held array's buffer here: that would run the program (see _hold)
        arrays = self.arrays
        for k in range(len(arrays)):
            if arrays[k] is arr:
                return k
        _hold(arr, self)
        arrays.append(arr)
        return len(arrays) - 1

    def _alike(self, a: Any, b: Any) -> bool:
        pa, pb = a.partition, b.partition
        if pa is pb or (id(pa), id(pb)) in self.alike:
            return True
        if pa != pb:
            return False
        self.alike[(id(pa), id(pb))] = (pa, pb)  # kept: the ids stay these partitions'
        return True

    def _admit(self, *arrays: Any) -> bool:
        """Whether one operation on ``arrays`` can join the recorded stretch: all
        decomposed like its arrays; all alike but unlike them (another grid: run the
        stretch, start a new one); else False (mixed: run at once, which raises the
        ShapeError naming the difference)."""
        head = arrays[0]
        for a in arrays[1:]:
            if a.partition is not head.partition and not self._alike(head, a):
                return False
        recorded = self.arrays
        if (
            recorded
            and recorded[0].partition is not head.partition
            and not self._alike(recorded[0], head)
        ):
            self._run_local()
        return True

    @staticmethod
    def _fits(a: Any) -> bool:
        return a.dtype == np.float64 and 1 <= len(a.halo) <= 3

    def update(self, kind: str, target: Any, operand: Any, scalar: Any = None) -> bool:
        """Record ``target <kind>= operand`` (see :meth:`_update`)."""
        with self.lock:
            return self._update(kind, target, operand, scalar)

    def _update(self, kind: str, target: Any, operand: Any, scalar: Any = None) -> bool:
        """Record ``target <kind>= operand`` (``axpy``: ``target += scalar * operand``)."""
        if type(scalar) is Deferred:
            scalar = scalar.value
        if type(operand) is Deferred:
            operand = operand.value
        if not self._fits(target) or (scalar is not None and not _real(scalar)):
            return False
        array = hasattr(operand, "partition")
        if kind == "axpy" and not array:
            return False  # axpy's x is an array: outside a block that is the error it gets
        if (array and not self._fits(operand)) or (not array and not _real(operand)):
            return False
        if not self._admit(target, *([operand] if array else [])):
            return False
        t = self._slot(target)
        if array:
            self.ops.append((kind, t, ("a", self._slot(operand)), self._scalar(scalar)))
        else:
            self.ops.append((kind, t, ("s", self._scalar(operand)), self._scalar(scalar)))
        return True

    def _scalar(self, value: Any) -> int | None:
        if value is None:
            return None
        self.scalars.append(float(value))
        return len(self.scalars) - 1

    def reduce(self, a: Any, b: Any, deterministic: bool,
               post: Callable[[float], float] | None = None) -> Deferred | None:  # fmt: skip
        """Record ``sum(a * b)`` (see :meth:`_reduce`)."""
        with self.lock:
            return self._reduce(a, b, deterministic, post)

    def _reduce(self, a: Any, b: Any, deterministic: bool,
               post: Callable[[float], float] | None = None) -> Deferred | None:  # fmt: skip
        """Record ``sum(a * b)`` (``b`` None: ``sum(a)``); its :class:`Deferred`."""
        if not self._fits(a) or (b is not None and not self._fits(b)):
            return None
        if not self._admit(a, *([] if b is None else [b])):
            return None
        i = self._slot(a)
        j = None if b is None else self._slot(b)
        self.reductions.append((self.count, deterministic, None))
        self.ops.append(("red", i, j, len(self.reductions) - 1))
        self.count += 1
        return Deferred(self, self.count - 1, post)

    # -- running
    def run_local(self) -> None:
        """Run the recorded updates and the reductions' local parts (no communication)."""
        with self.lock:
            self._run_local()

    def _run_local(self) -> None:
        if not self.ops:
            self._release()
            self._reset()
            return
        arrays, ops, scalars, reductions = self.arrays, self.ops, self.scalars, self.reductions
        self._release()
        self._reset()
        first = arrays[0]
        det_flags = tuple(d for _, d, _ in reductions)
        if all(op[0] == "red" for op in ops):
            # reductions alone: nothing to fuse them with; NumPy's own (BLAS) loops, and
            # for exact ones the tiles read in place (parcomp.runtime.exactsum)
            from parcomp.runtime.exactsum import accumulate_buffer

            for (index, det, _), (_, i, j, _) in zip(reductions, ops, strict=True):
                a, b = arrays[i], None if j is None else arrays[j]
                if not det:
                    value = _local_sum(a.interior, None if b is None else b.interior)
                    self.pending.append(("sum", index, value, first.comm))
                elif b is None or b.halo == a.halo:
                    limbs = accumulate_buffer(a.local, a.halo, a.local_shape,
                                              None if b is None else b.local)  # fmt: skip
                    self.pending.append(("det", index, limbs, first.comm))
                else:
                    from parcomp.runtime.exactsum import accumulate_products

                    limbs = accumulate_products(a.interior, b.interior)
                    self.pending.append(("det", index, limbs, first.comm))
            return
        layout = first.layout
        ndim = len(layout.local_shape)
        kernel, offsets, shape = _prepared(
            (ndim, len(arrays), tuple(ops), det_flags), tuple(a.halo for a in arrays),
            layout.local_shape,
        )  # fmt: skip
        nred = len(reductions)
        ndet = sum(det_flags)
        out, row, ws, acc, special = _buffers(nred, ndet)
        kernel(*[a.local for a in arrays], offsets, shape, np.array(scalars + [0.0]), row, out,
               ws, acc, special)  # fmt: skip
        self.passes += 1
        from parcomp.runtime.exactsum import stage_rows

        unstage = stage_rows()[1]
        det = 0
        for k, (index, deterministic, _) in enumerate(reductions):
            if deterministic:
                unstage(ws[det], False, acc[det], special[det])
                partial = (acc[det].copy(), float(special[det, 0]))
                self.pending.append(("det", index, partial, first.comm))
                det += 1
            else:
                self.pending.append(("sum", index, float(out[k]), first.comm))

    def result(self, index: int) -> float:
        """A reduction's value: run what is recorded, reduce every pending one (collective)."""
        if index not in self.values:
            self.run_local()
            self._allreduce()
        return self.values[index]

    def _allreduce(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        comms: list[Any] = []
        for *_, comm in pending:  # one allreduce per communicator for the plain ones
            if not any(c is comm for c in comms):
                comms.append(comm)
        for comm in comms:
            mine = [p for p in pending if p[3] is comm]
            self.values.update(_reduce_values(mine, comm))

    def finish(self) -> None:
        """The block's end: run the rest, reduce what is pending (collective)."""
        self.run_local()
        self._allreduce()

    def _release(self) -> None:
        for a in self.arrays:
            _unhold(a)


@collective("parcomp.fused: a reduction's value", lambda pending, comm: comm)
def _reduce_values(pending: list[tuple[str, int, Any, Any]], comm: Any) -> dict[int, float]:
    """The values of a block's reductions on ``comm``: one allreduce for the plain ones,
    one per exact one (collective, named for the hang reports and the debug check: a
    value used on some ranks only is a lone collective, as the call that made it)."""
    from mpi4py import MPI

    from parcomp.runtime.callid import reduce_checked
    from parcomp.runtime.exactsum import allsum_limbs

    values = {}
    plain = [(i, v) for kind, i, v, _ in pending if kind == "sum"]
    if plain:
        total = reduce_checked(comm, np.array([v for _, v in plain]), MPI.SUM)
        for (i, _), t in zip(plain, total, strict=True):
            values[i] = float(t)
    for kind, i, v, _ in pending:
        if kind == "det":
            values[i] = allsum_limbs(v[0], v[1], comm)
    return values


def _buffers(nred: int, ndet: int) -> tuple[np.ndarray, ...]:
    """The pass's scratch (reused: a pass allocating 200 kB of zeros cost more than a
    255**2 update): partial sums, the reduction rows, and per exact reduction the
    staging workspace, limbs and special value, all reset."""
    from parcomp.runtime.exactsum import LIMBS, workspace

    key = (max(1, nred), max(1, ndet))
    cache = _STATE.__dict__.setdefault("buffers", {})  # per thread, as the programs
    bufs = cache.get(key)
    if bufs is None:
        bufs = cache[key] = (
            np.zeros(key[0]),
            np.empty((key[0], _CHUNK)),
            np.stack([workspace() for _ in range(key[1])]),
            np.zeros((key[1], LIMBS), np.int64),
            np.zeros((key[1], 1)),
        )
    out, _, ws, acc, special = bufs
    out[:] = 0.0
    if ndet:
        ws[:, 3, :8] = 0.0  # the staging state: not anchored, nothing staged
        acc[:] = 0
        special[:] = 0.0
    return bufs


# ------------------------------------------------------- arrays with recorded operations
def _local_get(self: Any) -> np.ndarray:
    program = self.__dict__.get("_fused_program")
    if program is not None:  # someone reads the data: run what is recorded first
        program.run_local()
    return self.__dict__["local"]


def _local_set(self: Any, value: np.ndarray) -> None:
    self.__dict__["local"] = value


_HOLDING: dict[type, type] = {}


def _hold(arr: Any, program: Program) -> None:
    """Route every access to ``arr.local`` through ``program.run_local`` (a subclass with
    ``local`` as a property, for as long as operations on ``arr`` are recorded)."""
    base = type(arr)
    sub = _HOLDING.get(base)
    if sub is None:
        sub = _HOLDING[base] = type(base.__name__, (base,), {
            "local": property(_local_get, _local_set), "__module__": base.__module__,
            "__qualname__": base.__qualname__, "_fused_base": base,
            "__copy__": _copy_held})  # fmt: skip
    arr.__dict__["_fused_program"] = program
    arr.__class__ = sub


def _copy_held(self: Any) -> Any:
    """``copy.copy`` of a held array: a plain one (the buffer shared, as copy.copy of
    the array outside a block), not held."""
    base = getattr(type(self), "_fused_base")  # noqa: B009 - a private name
    self.local  # noqa: B018 - runs what is recorded first (and releases self)
    new = object.__new__(base)
    new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_fused_program"})
    return new


def _unhold(arr: Any) -> None:
    arr.__dict__.pop("_fused_program", None)
    base = getattr(type(arr), "_fused_base", None)
    if base is not None:
        arr.__class__ = base


# --------------------------------------------------------------------- the loop's code
_KERNELS: dict[tuple[Any, ...], Any] = {}
_OPS = {"axpy": "+", "iadd": "+", "isub": "-", "imul": "*", "idiv": "/"}


def _local_sum(a: np.ndarray, b: np.ndarray | None) -> float:
    """This rank's plain ``sum(a * b)`` (or ``sum(a)``): what ``dot``/``sum`` compute."""
    if b is None:
        return float(np.sum(a))
    if a.flags.c_contiguous and b.flags.c_contiguous:
        return float(np.vdot(a, b))
    return float(np.einsum(EINSUM_DOT[a.ndim], a, b))


_PREPARED: dict[tuple[Any, ...], tuple[Any, np.ndarray, np.ndarray]] = {}


def _prepared(key: tuple[Any, ...], halos: tuple[Any, ...], shape: tuple[int, ...]) -> Any:
    """The compiled loop for this sequence (cached by its shape, not its values), with
    the ghost offsets and the interior shape as the arrays it takes."""
    full = (key, halos, shape)
    found = _PREPARED.get(full)
    if found is None:
        kernel = _KERNELS.get(key)
        if kernel is None:
            kernel = _KERNELS[key] = _compile(*key)
        offsets = np.array(halos, np.int64).reshape(len(halos), len(shape))
        found = _PREPARED[full] = (kernel, offsets, np.array(shape, np.int64))
        if len(_PREPARED) > 256:  # bounded: many array shapes in one process
            _PREPARED.pop(next(iter(_PREPARED)))
    return found


def _compile(ndim: int, narrays: int, ops: tuple[Any, ...], det: tuple[bool, ...]) -> Any:
    import numba

    from parcomp.runtime.exactsum import stage_rows

    args = [f"A{k}" for k in range(narrays)]
    written = sorted({op[1] for op in ops if op[0] != "red"})
    read = sorted({k for op in ops for k in _reads(op)} | set(written))
    nscalars = 1 + max([i for op in ops if op[0] != "red" for i in _scalar_slots(op)] + [-1])
    # the arrays come as their whole buffers (C-contiguous: rows vectorise, where an
    # interior view is strided) with the ghost offsets H[k, axis]; N: the interior's shape
    lines = [f"def fused_loop({', '.join(args)}, H, N, S, ROW, OUT, WS, ACC, SP):"]
    ind = "    "
    lines += [f"{ind}s{i} = S[{i}]" for i in range(nscalars)]
    lead = [f"i{d}" for d in range(ndim - 1)]
    for d, name in enumerate(lead):
        lines.append(f"{ind}for {name} in range(N[{d}]):")
        ind += "    "
    for k in read:
        idx = "".join(f"[{n} + H[{k}, {d}]]" for d, n in enumerate(lead))
        lines.append(f"{ind}R{k} = A{k}{idx}")
    ndet = sum(det)
    lines.append(f"{ind}n = N[{ndim - 1}]")
    lines.append(f"{ind}j0 = 0")
    lines.append(f"{ind}while j0 < n:")
    ind += "    "
    lines.append(f"{ind}m = min(n - j0, {_CHUNK})")
    if ndet:  # exact reductions: the values go straight into the staged block
        lines.append(f"{ind}m = min(m, {_BLOCK} - fill)")
    for k in read:  # slices: an index from range() vectorises, j0 + j does not
        lines.append(f"{ind}C{k} = R{k}[H[{k}, {ndim - 1}] + j0 : H[{k}, {ndim - 1}] + j0 + m]")
    slot = {}
    for r, deterministic in enumerate(det):
        if deterministic:
            slot[r] = len(slot)
            lines.append(f"{ind}W{r} = WS[{slot[r]}, 0, fill : fill + m]")
        else:
            lines.append(f"{ind}W{r} = ROW[{r}]")
    lines.append(f"{ind}for j in range(m):")
    body = ind + "    "
    for k in read:
        lines.append(f"{body}v{k} = C{k}[j]")
    for op in ops:
        if op[0] == "red":
            _, i, jj, r = op
            expr = f"v{i}" if jj is None else f"v{i} * v{jj}"
            lines.append(f"{body}W{r}[j] = {expr}")
            continue
        kind, t, (what, o), sc = op
        operand = f"v{o}" if what == "a" else f"s{o}"
        if kind == "axpy":
            lines.append(f"{body}v{t} = v{t} + s{sc} * {operand}")
        else:
            lines.append(f"{body}v{t} = v{t} {_OPS[kind]} {operand}")
    for k in written:
        lines.append(f"{body}C{k}[j] = v{k}")
    for r, deterministic in enumerate(det):
        if not deterministic:
            lines.append(f"{ind}OUT[{r}] += rowsum(ROW[{r}, :m])")
    lines.append(f"{ind}j0 += m")
    if ndet:
        lines.append(f"{ind}fill += m")
        lines.append(f"{ind}if fill == {_BLOCK}:")
        for d in range(ndet):
            lines.append(f"{ind}    block(WS[{d}], False, ACC[{d}], SP[{d}])")
        lines.append(f"{ind}    fill = 0")
        lines.insert(1, "    fill = int(WS[0, 3, 4])  # values already staged (none)")
        lines.append("    for d in range(WS.shape[0]):")
        lines.append("        WS[d, 3, 4] = fill")
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {"block": stage_rows()[2], "rowsum": _rowsum()}
    exec(compile(source, f"<parcomp.fused {key_name(ops)}>", "exec"), namespace)
    return numba.njit(nogil=True, error_model="numpy")(namespace["fused_loop"])


def key_name(ops: tuple[Any, ...]) -> str:
    return " ".join(op[0] for op in ops)


def _scalar_slots(op: tuple[Any, ...]) -> list[int]:
    _kind, _t, (what, o), sc = op
    return ([o] if what == "s" else []) + ([] if sc is None else [sc])


def _reads(op: tuple[Any, ...]) -> list[int]:
    if op[0] == "red":
        return [op[1]] + ([] if op[2] is None else [op[2]])
    _kind, t, (what, o), _ = op
    return [t] + ([o] if what == "a" else [])


_ROWSUM: list[Any] = []


def rowsum_loops(a: Any) -> float:  # pragma: no cover - compiled
    """A float sum with eight accumulators (the adds overlap: no chain of latencies)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n = a.shape[0] - a.shape[0] % 8
    for i in range(0, n, 8):
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        s4 += a[i + 4]
        s5 += a[i + 5]
        s6 += a[i + 6]
        s7 += a[i + 7]
    t = 0.0
    for i in range(n, a.shape[0]):
        t += a[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)) + t


def _rowsum() -> Any:
    if not _ROWSUM:
        from parcomp.runtime.numba_jit import jit

        _ROWSUM.append(jit(nogil=True, error_model="numpy")(rowsum_loops).dispatcher)
    return _ROWSUM[0]
