"""Every ``PARCOMP_*`` environment variable, declared once and parsed one strict way.

PURE apart from reading ``os.environ`` (or the mapping given); imports nothing of parcomp
but its errors, so any module may use it.

Each :class:`Setting` names its variable, its kind, its default and its meaning.  A kind
is parsed one way everywhere:

* ``flag``: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case);
  unset or empty is the default;
* ``int`` / ``float``: a number at least ``minimum``;
* ``level``: a logging level name (``DEBUG``, ``INFO``...) or number;
* ``text``: any string (paths, names, launcher options); empty is unset.

An invalid value raises :class:`~parcomp.runtime.errors.ConfigError` naming the variable, the
value and what is accepted.  ``public`` settings are the user's, listed in the README's
table (``tests/unit/test_config.py`` checks the table against :data:`SETTINGS`); the
others are set by ``parcomp run`` for its ranks, or by the test harness.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parcomp.runtime.errors import ConfigError

__all__ = ["SETTINGS", "Setting", "check_all", "get", "is_set"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, kind, default, meaning, and who sets it."""

    name: str
    kind: str
    default: Any
    meaning: str
    public: bool = True
    minimum: float | None = None


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        # launching
        Setting("PARCOMP_MPIEXEC", "text", None,
                "the launcher to use (default: the `mpiexec` beside the venv's Python, then `PATH`)"),
        Setting("PARCOMP_MPIEXEC_ARGS", "text", "",
                "extra launcher options for `parcomp run`, shell-quoted (e.g. `-f hostfile`)"),
        Setting("PARCOMP_PYTHON", "text", None,
                "the Python of the batch scripts `parcomp slurm` writes (default `$PWD/.venv/bin/python`)"),
        Setting("PARCOMP_STRANDED_AFTER", "float", 30.0,
                "seconds `parcomp run` waits once a rank has finished while the others sit in a "
                "parcomp collective (default 30)", minimum=1e-9),
        # failures
        Setting("PARCOMP_FAILFAST", "flag", True, "`0`: do not install the fail-fast exception hook"),
        Setting("PARCOMP_TASK_GRACE", "float", 30.0,
                "seconds an ensemble task that failed on some ranks of its group waits for the "
                "others before ending the job (they may be stuck in the task's collectives; "
                "default 30)", minimum=0.0),
        Setting("PARCOMP_ABORT_GRACE", "float", 0.1,
                "seconds between printing a failing rank's traceback and `MPI_Abort` (default 0.1)",
                minimum=0.0),
        Setting("PARCOMP_FULL_TRACEBACK", "flag", False,
                "`1`: keep parcomp's own frames in the traceback of a `ParcompError`"),
        Setting("PARCOMP_ULFM", "flag", False, "`1`: in-job recovery, as `parcomp run --ulfm`"),
        Setting("PARCOMP_FAILURE_LOG", "text", None,
                "file where ranks lost and survived in-job are recorded (JSON lines)"),
        # logging and checks
        Setting("PARCOMP_LOG_LEVEL", "level", logging.INFO, "log level on rank 0 (default INFO)"),
        Setting("PARCOMP_LOG_LEVEL_OTHERS", "level", logging.WARNING,
                "log level on the other ranks (default WARNING)"),
        Setting("PARCOMP_DEBUG_COLLECTIVES", "flag", False,
                "`1`: check that all ranks enter the same parcomp collective call (debugging)"),
        Setting("PARCOMP_CHECK_COLLECTIVES", "flag", True,
                "`0`: do not number collective calls nor carry their identity in reductions "
                "(on by default)"),
        # nodes and caches
        Setting("PARCOMP_NODE_NAME", "text", None,
                "this process's node name for the node-local tier and kernel caches (default: "
                "the hostname)"),
        Setting("PARCOMP_EMULATE_NODES", "int", None,
                "emulated nodes of this many ranks each (testing the node-local tier on one "
                "machine)", minimum=1),
        Setting("PARCOMP_EMULATE_NODE_COUNT", "int", None,
                "this many emulated nodes over the job's ranks (`parcomp run --emulate-nodes M` "
                "sets it)", minimum=1),
        Setting("PARCOMP_NODE_CACHE_DIR", "text", None,
                "node-local directory for compiled kernels (default `$TMPDIR`, else `/dev/shm`; "
                "inside it `parcomp-<uid>/node-<name>/numba`)"),
        Setting("PARCOMP_CACHE_DIR", "text", None,
                "opt-in: a persistent compiled-kernel cache shared by every rank and job "
                "(as `NUMBA_CACHE_DIR`), instead of the node-local one"),
        Setting("PARCOMP_TILE_CACHE_BYTES", "int", None,
                "the per-core cache the tiles of `run_stencil(steps=k)` aim at (default: L2 "
                "from sysfs, else 1 MiB)", minimum=1),
        # set by parcomp run (or Slurm's script) for its ranks
        Setting("PARCOMP_RESTART_COUNT", "int", 0,
                "set by `parcomp run` on each attempt (0 first)", minimum=0),
        Setting("PARCOMP_WATCHDOG_DIR", "text", None,
                "set by `parcomp run`: where ranks keep their heartbeat and write their stacks"),
        Setting("PARCOMP_WATCHDOG_SHARED", "flag", False,
                "set by `parcomp run` with a host list: the watchdog folder is on the shared "
                "file system", public=False),
        Setting("PARCOMP_NPROCS", "int", None,
                "set by `parcomp run`: the ranks the job was started with", public=False,
                minimum=1),
        Setting("PARCOMP_EXPECT_NTASKS", "int", None,
                "set by the Slurm script: the ranks Slurm allocated (a world of another size "
                "is refused)", public=False, minimum=1),
        Setting("PARCOMP_FAILURE_LOG_COPY", "text", None,
                "set by `parcomp run --ulfm`: the user's failure log, which gets a copy",
                public=False),
        Setting("PARCOMP_FAULT_STAMP", "text", None,
                "test harness: a file that makes an injected fault fire once", public=False),
    )
}  # fmt: skip


def _setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise ConfigError(
            f"{name} is not a parcomp setting (see parcomp.runtime.config.SETTINGS)"
        ) from None


def is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``name`` has a non-empty value in ``env`` (default ``os.environ``)."""
    _setting(name)
    return bool((os.environ if env is None else env).get(name, "").strip())


def get(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The value of setting ``name`` from ``env`` (default ``os.environ``), parsed by its kind.

    Parameters
    ----------
    name : str
        A variable of :data:`SETTINGS`.
    env : mapping, optional
        Where to read it (``os.environ`` by default; ``parcomp run`` passes the job's).

    Returns
    -------
    object
        The default when the variable is unset or empty, else the parsed value.

    Raises
    ------
    ConfigError
        The value is not of the setting's kind, or below its minimum.
    """
    setting = _setting(name)
    raw = (os.environ if env is None else env).get(name, "")
    text = raw.strip()
    if not text:
        return setting.default
    if setting.kind == "text":
        return raw
    if setting.kind == "flag":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")
    if setting.kind == "level":
        if text.isdigit():
            return int(text)
        level = logging.getLevelName(text.upper())
        if isinstance(level, int):
            return level
        raise ConfigError(
            f"{name}={raw!r}: expected a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL) "
            "or a number"
        )
    try:
        value: float = int(text) if setting.kind == "int" else float(text)
    except ValueError:
        kind = "an integer" if setting.kind == "int" else "a number"
        raise ConfigError(f"{name}={raw!r}: expected {kind}") from None
    if setting.minimum is not None and value < setting.minimum:
        bound = "positive" if setting.minimum > 0 else f"at least {setting.minimum:g}"
        raise ConfigError(f"{name}={raw!r}: must be {bound}")
    return value


def check_all(env: Mapping[str, str] | None = None) -> None:
    """Parse every setting of ``env`` (default ``os.environ``): ``parcomp run`` does this
    before it starts anything, so that a bad value stops the job at once, not on some rank
    hours later.

    Raises
    ------
    ConfigError
        For the first invalid value, naming the variable.
    """
    for name in SETTINGS:
        get(name, env)
