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
import os
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
        self.compiled = 0
        self.loaded = 0
        functools.update_wrapper(self, py_func)

    @property
    def dispatcher(self) -> Any:
        """The Numba dispatcher, created on first use (importing numba then)."""
        if self._dispatcher is None:
            import numba

            options = dict(self.options)
            if options.get("cache"):
                numba.config.CACHE_DIR = str(ensure_safe_dir(cache_dir()))
                try:
                    self._dispatcher = numba.njit(**options)(self.py_func)
                    return self._dispatcher
                except RuntimeError:  # no file to cache against (exec'd code): no cache
                    options["cache"] = False
                    self.options["cache"] = False
            self._dispatcher = numba.njit(**options)(self.py_func)
        return self._dispatcher

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
            from numba.core.errors import TypingError

            if isinstance(exc, TypingError):
                first = str(exc).strip().splitlines()[0]
                shown = ", ".join(str(t) for t in types)
                raise KernelSignatureError(
                    f"kernel {self.py_func.__name__!r} cannot run on arguments ({shown}): {first}"
                ) from exc
            raise
        if sum(dispatcher.stats.cache_hits.values()) > hits_before:
            self.loaded += 1
        else:
            self.compiled += 1
        self._ready.add(types)

    def __call__(self, *args: Any) -> Any:
        from numba.core import config

        if config.DISABLE_JIT:
            return self.py_func(*args)
        from numba import typeof

        types = tuple(typeof(a) for a in args)
        if types not in self._ready:
            self._compile_once(types)
        return self.dispatcher(*args)

    def __repr__(self) -> str:
        return f"<parcomp.Kernel {self.py_func.__qualname__} options={self.options}>"


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
