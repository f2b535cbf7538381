"""Old spellings that keep working for one release, each with a ``DeprecationWarning``.

Version 0.3 moved the modules of ``parcomp/`` into packages (``parcomp.array`` is now
``parcomp.arrays.array``) and gave each concept one keyword.  A program written for 0.2 keeps
running: importing an old module path gives the new module, and an old keyword is passed on
under its new name; both warn, naming the new spelling.  The README's "Renamed" table is
this module's tables (a test holds them together).  PURE but for :func:`install`, which adds
one finder to ``sys.meta_path``; nothing here imports the rest of parcomp at import time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

#: 0.2 module path -> 0.3 module path.
MODULES: dict[str, str] = {
    "parcomp.config": "parcomp.runtime.config",
    "parcomp.status": "parcomp.runtime.status",
    "parcomp.errors": "parcomp.runtime.errors",
    "parcomp.callid": "parcomp.runtime.callid",
    "parcomp.wire": "parcomp.runtime.wire",
    "parcomp.comm": "parcomp.runtime.ranks",  # and agree, failfast, log: see MERGED
    "parcomp.watchdog": "parcomp.runtime.watchdog",
    "parcomp.subcomm": "parcomp.runtime.subcomm",
    "parcomp.nodes": "parcomp.runtime.nodes",
    "parcomp.numba_jit": "parcomp.runtime.numba_jit",
    "parcomp.progress": "parcomp.runtime.progress",
    "parcomp.exactsum": "parcomp.runtime.exactsum",
    "parcomp.reduce": "parcomp.runtime.reduce",
    "parcomp.resilient": "parcomp.runtime.resilient",
    "parcomp.partition": "parcomp.grid.partition",
    "parcomp.halo": "parcomp.grid.halo",
    "parcomp.exchange": "parcomp.arrays.exchange",
    "parcomp.algebra": "parcomp.arrays.algebra",
    "parcomp.select": "parcomp.arrays.select",
    "parcomp.redistribute": "parcomp.arrays.redistribute",
    "parcomp.array": "parcomp.arrays.array",
    "parcomp.fft": "parcomp.arrays.fft",
    "parcomp.declared": "parcomp.stencils.spec",  # and check, run: see MERGED
    "parcomp.multistep": "parcomp.stencils.check_steps",  # and plan, run: see MERGED
    "parcomp.stencil_run": "parcomp.stencils.run",
    "parcomp.reach": "parcomp.stencils.reach",
    "parcomp.particle_plan": "parcomp.particles.plan",
    "parcomp.particle_deposit": "parcomp.particles.deposit",
    "parcomp.particle_exchange": "parcomp.particles.exchange",
    "parcomp.particle_order": "parcomp.particles.order",
    "parcomp.keyed": "parcomp.mapreduce.keyed",
    "parcomp.schedule": "parcomp.mapreduce.schedule",
    "parcomp.counter": "parcomp.mapreduce.counter",
    "parcomp.cli": "parcomp.front.cli",
    "parcomp.notebook": "parcomp.front.notebook",
    "parcomp.workers": "parcomp.front.workers",
}

#: Old modules split in several: the old path gives a module holding the public names of
#: them all (0.2's ``__all__`` keeps working).
MERGED: dict[str, tuple[str, ...]] = {
    "parcomp.comm": (
        "parcomp.runtime.ranks",
        "parcomp.runtime.agree",
        "parcomp.runtime.failfast",
        "parcomp.runtime.log",
    ),
    "parcomp.declared": ("parcomp.stencils.spec", "parcomp.stencils.run"),
    "parcomp.multistep": (
        "parcomp.stencils.check_steps",
        "parcomp.stencils.plan",
        "parcomp.stencils.run",
    ),
}

#: 0.2 names in a package that stays: the package's ``__getattr__`` warns and hands on.
NAMES: dict[str, str] = {
    "parcomp.io.load_hdf5": "parcomp.load_hdf5",
    "parcomp.launch.run_job": "parcomp.launch.launch_job",
}


def _caller_level() -> int:
    """``stacklevel`` of the user's import: past this module's frames (warnings itself
    steps over importlib's frames, so they are not counted)."""
    frame, level = sys._getframe(1), 1  # noqa: SLF001 - the stdlib's frame access
    while frame is not None and (
        frame.f_code.co_filename == __file__ or "importlib" in frame.f_code.co_filename
    ):
        if frame.f_code.co_filename == __file__:
            level += 1
        frame = frame.f_back
    return level


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a 0.2 module path and hands back the module it became (after a warning)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> None:
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module: Any) -> None:
        name = module.__name__
        new = MODULES[name]
        warnings.warn(
            f"{name} is now {' + '.join(MERGED.get(name, (new,)))} (or import its public "
            "names from parcomp); the old path goes in parcomp 0.4",
            DeprecationWarning,
            stacklevel=_caller_level(),
        )
        if name in MERGED:  # the placeholder becomes the union of the new modules
            for part in MERGED[name]:
                source = importlib.import_module(part)
                for attr in getattr(source, "__all__", ()):
                    setattr(module, attr, getattr(source, attr))
            if name == "parcomp.comm":
                module.agreed = _agreed_call  # 0.2's agreed(fn, comm) was a function
            return
        # importlib returns what sys.modules holds after exec_module: the real module,
        # whose own __spec__ is left untouched
        sys.modules[name] = importlib.import_module(new)

    def get_code(self, fullname: str) -> Any:
        """``python -m parcomp.cli``: run the new module's code (runpy asks for it)."""
        new = MODULES[fullname]
        warnings.warn(
            f"python -m {fullname} is now python -m {new}; the old path goes in parcomp 0.4",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.find_spec(new).loader.get_code(new)


def _agreed_call(fn: Callable[[], Any], comm: Any = None) -> Any:
    """0.2's ``parcomp.comm.agreed(fn, comm)``: ``fn()`` with a ParcompError it raises on
    any rank raised on every rank (now ``with parcomp.agreed(comm): ...``)."""
    agreed = importlib.import_module("parcomp.runtime.agree").agreed
    with agreed(comm):
        return fn()


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for 0.2 names that left ``module``: ``{old: "pkg.mod.new"}``.

    The old name warns (naming the new one) and hands on the new object; any other
    missing name is an ``AttributeError`` as usual.  The new object is looked up by name
    on first use, so the module does not import where its old names went.
    """

    def module_getattr(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        owner, _, attr = moved[name].rpartition(".")
        warnings.warn(
            f"{module}.{name} is now {moved[name]}; the old name goes in parcomp 0.4",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(owner), attr)

    return module_getattr


def install() -> None:
    """Add the finder once, after the normal ones (it answers only for old paths)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())


F = TypeVar("F", bound=Callable[..., Any])

#: ``"Checkpointer" -> {"async_write": "asynchronous", ...}``: filled by
#: :func:`renamed_keywords` as the modules that use it are imported.
KEYWORDS: dict[str, dict[str, str]] = {}


def renamed_keywords(where: str, **old_to_new: str) -> Callable[[F], F]:
    """Accept old keyword spellings of ``where`` for one release, with a DeprecationWarning.

    ``@renamed_keywords("Checkpointer", async_write="asynchronous")`` passes
    ``async_write=`` on as ``asynchronous=``; giving both is a ``TypeError``.
    """

    KEYWORDS.setdefault(where, {}).update(old_to_new)

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{where}: give {new}= only ({old}= is its old name)")
                    warnings.warn(
                        f"{where}({old}=...) is now {where}({new}=...); "
                        "the old name goes in parcomp 0.4",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
