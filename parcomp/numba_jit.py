"""``@parcomp.jit``: Numba ``njit`` kernels compiled once per machine, from a safe cache.

Local: no MPI communication.  Coordination between the ranks of one machine uses a file
lock in the cache directory, never a collective, so a rank that never calls a kernel cannot
make the others hang.

How compile-once works
----------------------
Numba compiles lazily, on the first call with new argument types.  When N ranks start
together, each would compile the same kernel and race on Numba's cache index.  A
:class:`Kernel` computes the argument types of a call; the first time it sees them it takes
an exclusive ``flock`` on ``<cache>/locks/<kernel>.lock`` and asks the Numba dispatcher to
compile for exactly those types.  The first rank to get the lock finds no cache entry,
compiles and saves it; the ranks queued on the lock then find the entry and load it (a
cache hit, milliseconds).  Later calls go straight to the dispatcher.

Cache location
--------------
:func:`cache_dir` -- ``$NUMBA_CACHE_DIR``, else ``$PARCOMP_CACHE_DIR/numba``, else
``$XDG_CACHE_HOME/parcomp/numba`` (``~/.cache/parcomp/numba``).  It is created with mode
0700, and refused if it belongs to another user or is writable by group or others: compiled
code loaded from a cache runs with your rights, so nobody else may write there.

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
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parcomp.errors import ConfigError, KernelSignatureError

__all__ = ["cache_dir", "jit", "Kernel"]


def cache_dir() -> Path:
    """The directory where Numba caches compiled kernels for parcomp (not created here)."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("PARCOMP_CACHE_DIR")
    if base:
        return Path(base) / "numba"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "parcomp" / "numba"


def ensure_safe_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and check that only this user can write it.

    Raises
    ------
    ConfigError
        If ``path`` is owned by another user, or writable by group or others.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"cache directory {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            "set PARCOMP_CACHE_DIR or NUMBA_CACHE_DIR to a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"cache directory {path} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "compiled code loaded from it would run as you. Use `chmod go-w` or another directory"
        )
    return path


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
                numba.config.CACHE_DIR = str(ensure_safe_dir(cache_dir()))
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
            self._numba_compile_for_args = d._compile_for_args
            d._compile_for_args = self._compile_hook

    def _compile_hook(self, *args: Any, **kws: Any) -> Any:
        """Numba found no compiled version for ``args``: compile (or load) it our way."""
        if kws or any(type(a).__name__ == "OmittedArg" for a in args):
            return self._numba_compile_for_args(*args, **kws)  # defaults: Numba's own path
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
                with open(self._lock_path(), "a+b") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    try:
                        dispatcher.compile(types)
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
