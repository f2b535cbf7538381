"""``@parcomp.jit``: Numba ``njit`` kernels compiled once per job, cached on each node.

How compile-once works
----------------------
Numba compiles lazily, on the first call with new argument types.  When N ranks start
together, each would compile the same kernel and race on Numba's cache index (Numba
issues #4807, #10128 and #7952 report corrupt caches and crashes when that index is on a
shared file system).  parcomp compiles in two ways:

* **Once per job, over MPI** (:meth:`Kernel.compile_for_job`, collective): ``run_stencil``
  and ``run_stencil(steps=k)`` use it when they first meet a kernel and argument types,
  and :func:`parcomp.compile_for_job` offers it to code that calls kernels directly.  Rank
  0 compiles (or loads from its own node's cache); the cache files (Numba's index and
  data) travel by ``MPI_Bcast`` to one rank per node, which writes them into its node's
  cache directory; every other rank then loads them (milliseconds).  One compilation per
  job per kernel and types, no file lock, no shared file system touched.
* **Once per node, by a file lock** (a kernel called directly, outside any collective):
  a :class:`Kernel` computes the argument types of the call, takes an exclusive
  ``flock`` on ``<cache>/locks/<kernel>.lock`` and compiles; the ranks queued on the lock
  find the entry and load it.  The lock is in the node-local cache, where ``flock`` is
  reliable and only the ranks of one node queue on it.  No collective, so a rank that
  never calls a kernel cannot make the others hang.

Cache location
--------------
:func:`cache_dir`.  By default node-local: ``$PARCOMP_NODE_CACHE_DIR``, else ``$TMPDIR``,
else ``/dev/shm``, else the system's temporary directory; inside it
``parcomp-<uid>/node-<node name>/numba`` (one per node name, so that emulated nodes,
``PARCOMP_EMULATE_NODES``, have caches of their own).  It lasts as long as that
directory does (a job, or until reboot).

A persistent cache shared by jobs is an opt-in: ``$PARCOMP_CACHE_DIR`` (its ``numba``
folder) or ``$NUMBA_CACHE_DIR``.  Every rank then uses that directory, and direct calls
take their lock there; on NFS this is what the node-local default avoids.

Every cache directory is created with mode 0700, and refused if it belongs to another
user or is writable by group or others: compiled code loaded from a cache runs with your
rights, so nobody else may write there.

Debugging: with ``NUMBA_DISABLE_JIT=1`` a kernel runs as plain Python (breakpoints and
tracebacks work) and nothing is cached.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.runtime.agree import agreed, raise_if_any
from parcomp.runtime.errors import ConfigError, KernelSignatureError
from parcomp.runtime.kernel_cache import (
    CACHE_FILE_NAME,
    cache_dir,
    ensure_safe_cache_dir,
    ensure_safe_dir,
    node_leaders,
    pack_cache_files,
    shared_cache,
    unpack_cache_files,
)
from parcomp.runtime.log import get_logger
from parcomp.runtime.ranks import resolve_comm
from parcomp.runtime.wire import bcast_json

__all__ = ["cache_dir", "compile_for_job", "jit", "Kernel", "shared_cache"]


class Kernel:
    """A Numba kernel compiled once per machine per argument types (see the module notes).

    Call it like the Python function.  ``py_func`` is the original function,
    ``dispatcher`` the underlying Numba dispatcher, and ``compiled`` / ``loaded`` count the
    signatures this process compiled itself or loaded from the cache.
    """

    def __init__(self, py_func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py_func = py_func
        self.options = dict(options)
        self.options.setdefault("cache", True)
        self._dispatcher: Any = None
        self._ready: set[tuple[Any, ...]] = set()
        self._numba_compile_for_args: Any = None
        self.compiled = 0
        self.loaded = 0
        functools.update_wrapper(self, py_func)

    @property
    def dispatcher(self) -> Any:
        """The Numba dispatcher, created on first use (importing numba then)."""
        if self._dispatcher is None:
            import numba

            _register_with_numba()

            options = dict(self.options)
            if options.get("cache"):
                numba.config.CACHE_DIR = str(ensure_safe_cache_dir())
                try:
                    self._dispatcher = numba.njit(**options)(self.py_func)
                except RuntimeError:  # no file to cache against (exec'd code): no cache
                    options["cache"] = False
                    self.options["cache"] = False
            if self._dispatcher is None:
                self._dispatcher = numba.njit(**options)(self.py_func)
        self._install_hook()
        return self._dispatcher

    def _install_hook(self) -> None:
        """Route Numba's compile-on-call through :meth:`_compile_hook`.

        A call goes straight to the Numba dispatcher, which finds a compiled version in C.
        Only when none matches does it call its ``_compile_for_args``: replaced here on
        this dispatcher, so that compiling stays under the machine lock, with errors
        translated, while a call of a compiled kernel costs about 0.1 us more than the
        bare dispatcher (bench/dispatch.py).
        """
        d = self._dispatcher
        if self._numba_compile_for_args is None and hasattr(d, "_compile_for_args"):
            self._numba_compile_for_args = d._compile_for_args  # noqa: SLF001 - numba's compile-for-these-arguments entry
            d._compile_for_args = self._compile_hook  # noqa: SLF001 - numba's compile-for-these-arguments entry

    def _compile_hook(self, *args: Any, **kws: Any) -> Any:
        """Numba found no compiled version for ``args``: compile (or load) it our way."""
        if kws or any(type(a).__name__ == "OmittedArg" for a in args):
            return self._numba_compile_for_args(*args, **kws)
        types = self.ensure_compiled(args)
        return self._dispatcher.compile(types)

    def _lock_path(self) -> Path:
        code = self.py_func.__code__
        ident = f"{code.co_filename}:{code.co_firstlineno}:{self.py_func.__qualname__}"
        digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
        folder = ensure_safe_dir(cache_dir() / "locks")
        return folder / f"{self.py_func.__name__}-{digest}.lock"

    def _compile_once(self, types: tuple[Any, ...]) -> None:
        dispatcher = self.dispatcher
        hits_before = sum(dispatcher.stats.cache_hits.values())
        try:
            if self.options.get("cache"):
                _warm_target(dispatcher)  # outside the lock: ~0.1 s per process, in parallel
                with open(self._lock_path(), "a+b") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    try:
                        self._compile_or_repair(dispatcher, types)
                    finally:
                        fcntl.flock(lock, fcntl.LOCK_UN)
            else:
                dispatcher.compile(types)
        except Exception as exc:
            from numba.core.errors import NumbaError

            if isinstance(exc, NumbaError):
                raise KernelSignatureError(
                    kernel_error_message(self.py_func, types, str(exc))
                ) from None
            raise
        if sum(dispatcher.stats.cache_hits.values()) > hits_before:
            self.loaded += 1
        else:
            self.compiled += 1
        self._ready.add(types)

    def _compile_or_repair(self, dispatcher: Any, types: tuple[Any, ...]) -> None:
        """``dispatcher.compile(types)``; if loading from the cache fails (a truncated or
        garbled cache file: Numba raises a pickle or value error), remove this kernel's
        cache files, say so, and compile afresh.  Compile errors are not caught here."""
        from numba.core.errors import NumbaError

        try:
            dispatcher.compile(types)
        except NumbaError:
            raise
        except Exception as exc:  # a damaged cache entry: compile instead
            removed = self._remove_cache_files()
            if not removed:
                raise
            get_logger("parcomp.jit").warning(
                "kernel %r: its cache entry could not be loaded (%s: %s); removed %d "
                "cache file(s) and compiling it again",
                self.py_func.__name__,
                type(exc).__name__,
                exc,
                len(removed),
            )
            dispatcher.compile(types)

    def _cache_location(self) -> tuple[str, str, str] | None:
        """(folder, index file name, stem) of this kernel's entry in Numba's cache, or
        None without a cache; data files are ``<stem>.<n>.nbc``."""
        cache = getattr(self.dispatcher, "_cache", None)
        index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if index is None:
            return None
        folder, name = os.path.split(index)
        return folder, name, name[: -len(".nbi")]

    def _remove_cache_files(self) -> list[str]:
        """Delete this kernel's index and data files from its cache; their names."""
        location = self._cache_location()
        if location is None:
            return []
        folder, name, stem = location
        removed = []
        try:
            entries = os.listdir(folder)
        except OSError:
            return []
        for entry in entries:
            if entry == name or (entry.startswith(stem + ".") and entry.endswith(".nbc")):
                try:
                    os.unlink(os.path.join(folder, entry))
                    removed.append(entry)
                except OSError:
                    pass
        return removed

    def argument_types(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Numba types of ``args``, or a :class:`KernelSignatureError` naming the bad one.

        Checks the number of arguments against the Python signature first, so a wrong arity
        is reported in one line instead of a Numba typing trace.
        """
        from numba import typeof

        check_arity(self.py_func, len(args))
        types = []
        for position, arg in enumerate(args):
            try:
                types.append(typeof(arg))
            except ValueError:
                raise KernelSignatureError(
                    f"kernel {self.py_func.__name__!r}: argument {position + 1} "
                    f"({parameter_names(self.py_func)[position]}) is a "
                    f"{type(arg).__name__}, which Numba cannot take"
                    + (
                        "; pass its .local buffer (ghost cells included), or use "
                        "parcomp.run_stencil, which does that for you"
                        if type(arg).__name__ == "DistArray"
                        else "; pass a numpy array or a number"
                    )
                ) from None
        return tuple(types)

    def ensure_compiled(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Compile (or load) the kernel for ``args``' types without running it; return them."""
        types = self.argument_types(args)
        if types not in self._ready:
            self._compile_once(types)
        return types

    def _cache_files(self) -> list[tuple[str, bytes]]:
        """This kernel's files in Numba's cache (index first): ``(name, bytes)``."""
        location = self._cache_location()
        if location is None or not os.path.isfile(os.path.join(location[0], location[1])):
            return []
        folder, name, stem = location
        files = [(name, (Path(folder) / name).read_bytes())]
        for entry in sorted(os.listdir(folder)):
            if entry.startswith(stem + ".") and entry.endswith(".nbc"):
                files.append((entry, (Path(folder) / entry).read_bytes()))
        return files

    def _install_cache_files(self, files: list[tuple[str, bytes]]) -> None:
        """Write files from :meth:`_cache_files` of another rank into this node's cache:
        data first, the index last, each under a temporary name and renamed."""
        location = self._cache_location()
        if location is None or not files:
            return
        folder, _name, stem = location
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for entry, data in files[1:] + files[:1]:
            if not CACHE_FILE_NAME.fullmatch(entry) or not entry.startswith(stem + "."):
                raise ConfigError(f"refusing a kernel cache file named {entry!r}")
            tmp = os.path.join(folder, f".{entry}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, os.path.join(folder, entry))

    def compile_for_job(self, args: tuple[Any, ...], comm: Any = None) -> tuple[Any, ...]:
        """Compile the kernel for ``args``' types once for the whole job; return the types.

        Rank 0 compiles (or loads from its node's cache); the cache files go by
        ``MPI_Bcast`` to one rank per node, which writes them to its node's cache; then
        every rank loads them.  Nothing happens when every rank has these types ready.

        Parameters
        ----------
        args : tuple
            Arguments like those of a call (only their types matter).
        comm : mpi4py.MPI.Comm, optional
            The ranks that take part (default: parcomp's default communicator).

        Returns
        -------
        tuple
            The Numba types of ``args`` on this rank.

        Raises
        ------
        KernelSignatureError
            On every rank, if Numba cannot compile the kernel for these types (or cannot
            type an argument), with rank 0's message.
        ConfigError
            On every rank, if a rank cannot create or write its node's cache.

        Notes
        -----
        Collective over `comm`: call on all ranks, with arguments of the same types.
        """

        comm = resolve_comm(comm)
        types: tuple[Any, ...] = ()
        with agreed(comm, catch=(KernelSignatureError, ConfigError)):
            types = self.argument_types(args)
            self.dispatcher  # noqa: B018 - creates the cache directory
        from mpi4py import MPI

        need = np.array([types not in self._ready], np.int64)
        comm.Allreduce(MPI.IN_PLACE, need, op=MPI.MAX)
        if not need[0]:
            return types
        payload = b""
        error: BaseException | None = None
        if comm.Get_rank() == 0:
            try:
                self.ensure_compiled(args)
                if self.options.get("cache"):
                    payload = pack_cache_files(self._cache_files())
            except Exception as exc:  # noqa: BLE001 - every rank must hear of it
                error = exc
        # Rank 0's outcome, as JSON (nothing pickled).  A compile error belongs to the
        # kernel and the types, not to rank 0: every rank raises the same error, which is
        # then reported once for all of them.

        outcome = bcast_json(
            comm, None if error is None else [type(error).__name__, str(error)], root=0
        )
        if outcome is not None:
            if error is None and outcome[0] == "KernelSignatureError":
                error = KernelSignatureError(outcome[1])
            raise_if_any(error, comm)  # anything else: rank 0's error, named as such
        leaders = node_leaders(comm)
        if leaders is not None and leaders.Get_size() > 1:
            size = np.array([len(payload)], np.int64)
            leaders.Bcast(size, root=0)
            buffer = np.frombuffer(payload, np.uint8) if leaders.Get_rank() == 0 else None
            if buffer is None:
                buffer = np.empty(int(size[0]), np.uint8)
            leaders.Bcast(buffer, root=0)
            if leaders.Get_rank() != 0 and size[0]:
                try:
                    self._install_cache_files(unpack_cache_files(buffer.tobytes()))
                except ConfigError as exc:  # a malformed message or file name
                    error = exc
                except OSError as exc:
                    error = ConfigError(
                        f"cannot write compiled kernel {self.py_func.__name__!r} to this "
                        f"node's cache {cache_dir()}: {exc.strerror or exc}; set "
                        "PARCOMP_NODE_CACHE_DIR to a writable node-local directory"
                    )
        raise_if_any(error, comm)  # the files are in place on every node after this
        with agreed(comm, catch=Exception):  # a compile error: raised on every rank
            if comm.Get_rank() != 0:
                self.ensure_compiled(args)
        return types

    def __call__(self, *args: Any) -> Any:
        d = self._dispatcher
        if d is None:
            from numba.core import config

            if config.DISABLE_JIT:  # plain Python, for debugging: never compile
                check_arity(self.py_func, len(args))
                return self.py_func(*args)
            d = self.dispatcher
        try:
            return d(*args)
        except TypeError:
            check_arity(self.py_func, len(args))  # a wrong count: say so in one line
            raise

    def __repr__(self) -> str:
        return f"<parcomp.Kernel {self.py_func.__qualname__} options={self.options}>"


_warmed = False


def _warm_target(dispatcher: Any) -> None:
    """Load Numba's target registries once per process (what a first cache load does).

    It takes about 0.1 s of CPU; done under the node lock it was serialised over all the
    ranks of a node (32 ranks queued ~0.1 s each to load one cached kernel).
    """
    global _warmed
    if not _warmed:
        dispatcher.targetctx.refresh()
        _warmed = True


_registered = False


def _register_with_numba() -> None:
    """Let Numba type a :class:`Kernel` as its dispatcher, so that one kernel can call
    another inside compiled code (``@parcomp.jit def f(x): return g(x)`` with ``g`` a
    parcomp kernel), exactly as with ``numba.njit`` functions."""
    global _registered
    if _registered:
        return
    from numba.core.typing.typeof import typeof_impl

    @typeof_impl.register(Kernel)
    def _typeof_kernel(value: Kernel, context: Any) -> Any:
        return typeof_impl(value.dispatcher, context)

    _registered = True


def parameter_names(func: Callable[..., Any]) -> list[str]:
    """The names of ``func``'s parameters, in order."""
    return list(inspect.signature(func).parameters)


def check_arity(func: Callable[..., Any], given: int) -> None:
    """Raise :class:`KernelSignatureError` unless ``func`` takes ``given`` positional arguments."""
    params = list(inspect.signature(func).parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    needed = [p for p in params if p.default is p.empty]
    if len(needed) <= given <= len(params):
        return
    names = ", ".join(p.name for p in params)
    raise KernelSignatureError(
        f"kernel {func.__name__!r} takes {len(params)} argument(s) ({names}), got {given}"
    )


_NOISE = (
    "During:",
    "Failed in ",
    "There are ",
    "- Of which",
    "Overload of",
    "With argument",
    "No match",
)


def kernel_error_message(func: Callable[..., Any], types: tuple[Any, ...], text: str) -> str:
    """A short message for a Numba typing or lowering error in ``func``.

    Names the kernel, the argument types given against the parameters it takes, the root
    cause (Numba's first meaningful line, e.g. ``NameError: name 'alfa' is not defined``)
    and the kernel's source line, in at most about 12 lines.
    """
    lines = [ln.rstrip() for ln in text.splitlines()]
    cause: list[str] = []
    where: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("File ") and line.rstrip().endswith(":"):
            block = [line.strip()]
            for nxt in lines[i + 1 : i + 5]:
                if not nxt.strip() or nxt.startswith("During:"):
                    break
                if "<source elided>" not in nxt:
                    block.append(nxt)
            where = block
            i += len(block)
            continue
        stripped = line.strip()
        if stripped and not stripped.startswith(_NOISE) and not stripped.startswith("- "):
            if len(cause) < 3 and stripped not in cause and "candidate" not in stripped:
                cause.append(stripped)
        i += 1
    if not where:
        where = _find_source_line(func, " ".join(cause))
    names = parameter_names(func)
    given = ", ".join(f"{n}={t}" for n, t in zip(names, types, strict=False))
    out = [
        f"kernel {func.__name__!r} does not compile for the arguments given ({given})",
        *(f"  {c}" for c in cause or ["(Numba gave no reason)"]),
    ]
    if where:
        out += ["  " + w for w in where]
    out.append("  (set NUMBA_DISABLE_JIT=1 to run the kernel as plain Python and debug it)")
    return "\n".join(out)


def _find_source_line(func: Callable[..., Any], cause: str) -> list[str]:
    """For a NameError Numba reports without a location: the kernel line using the name."""
    match = re.search(r"name '(\w+)' is not defined", cause)
    if not match:
        return []
    try:
        source, first = inspect.getsourcelines(func)
        filename = inspect.getsourcefile(func) or "?"
    except (OSError, TypeError):
        return []
    pattern = re.compile(rf"\b{re.escape(match.group(1))}\b")
    for offset, line in enumerate(source):
        if pattern.search(line) and not line.lstrip().startswith(("def ", "@", "#")):
            return [f'File "{filename}", line {first + offset}:', line.rstrip()]
    return []


def compile_for_job(kernel: Kernel, *args: Any, comm: Any = None) -> None:
    """Compile ``kernel`` for the types of ``args`` once for the whole job (collective).

    For code that calls kernels directly: call this once on every rank before the first
    call, with arguments of the types the calls will have.  One rank compiles; the
    compiled code reaches every node over MPI (see :meth:`Kernel.compile_for_job`).

    Parameters
    ----------
    kernel : Kernel
        A ``@parcomp.jit`` (or ``@parcomp.stencil``) kernel.
    *args
        Arguments like those of a call.
    comm : mpi4py.MPI.Comm, optional
        Default: parcomp's default communicator.

    Raises
    ------
    KernelSignatureError
        On every rank, if the kernel does not compile for these types.
    ConfigError
        On every rank, if a node's cache cannot be written.

    Notes
    -----
    Collective over `comm`: call on all ranks.

    Examples
    --------
    >>> parcomp.compile_for_job(my_kernel, np.zeros(3), 0.5)  # doctest: +SKIP
    """
    if not isinstance(kernel, Kernel):
        raise KernelSignatureError(
            f"compile_for_job needs a @parcomp.jit kernel, got {type(kernel).__name__}"
        )
    kernel.compile_for_job(args, comm)


def jit(
    func: Callable[..., Any] | None = None, **options: Any
) -> Kernel | Callable[[Callable[..., Any]], Kernel]:
    """Compile a function with ``numba.njit``, once per machine, with an on-disk cache.

    Use as ``@parcomp.jit`` or ``@parcomp.jit(fastmath=False, boundscheck=True, ...)``;
    every ``numba.njit`` option is passed through (``cache`` defaults to True).

    Parameters
    ----------
    func : callable, optional
        The kernel (when used without parentheses).
    **options
        Options for ``numba.njit``.

    Returns
    -------
    Kernel
        A callable wrapper; see :class:`Kernel`.

    Raises
    ------
    KernelSignatureError
        At call time, if Numba cannot type the kernel for the given arguments.
    """
    if func is None:
        return lambda f: Kernel(f, options)
    if not callable(func):
        raise KernelSignatureError(f"@parcomp.jit needs a function, got {func!r}")
    return Kernel(func, options)
