"""The default communicator, rank/size, fail-fast exception handling and rank-tagged logging.

COMMUNICATES (``default_comm`` duplicates COMM_WORLD on first use; ``raise_if_any`` and
``agree`` are collectives).  Nothing here talks to MPI at import time: importing parcomp on a
subset of ranks, or in a notebook, never blocks.

* :func:`default_comm` is a lazily created ``Dup`` of ``COMM_WORLD``, so parcomp's own
  messages never match user messages sent on ``COMM_WORLD``.
* :func:`rank` / :func:`size` work under ``mpiexec`` and in a plain ``python`` process
  (MPI then starts as a singleton of size 1).
* :func:`install_excepthook` (done on ``import parcomp`` unless ``PARCOMP_FAILFAST=0``)
  makes an unhandled exception on any rank print that rank's traceback, tagged
  ``[rank r/size]``, and ``MPI_Abort`` the whole job instead of leaving the others hanging.
* :func:`get_logger` returns loggers under ``parcomp`` tagged ``[rank r/size]``; rank 0 logs
  at INFO and the other ranks at WARNING unless ``PARCOMP_LOG_LEVEL`` /
  ``PARCOMP_LOG_LEVEL_OTHERS`` or :func:`configure_logging` say otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from parcomp.runtime import config, status
from parcomp.runtime.errors import CollectiveError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = [
    "default_comm",
    "resolve_comm",
    "agreed",
    "mark_world",
    "rank",
    "size",
    "world_rank_size",
    "agree",
    "raise_if_any",
    "abort",
    "exit_all",
    "JobExit",
    "report_and_abort",
    "mark_everywhere",
    "raise_if_differ",
    "INTERRUPTED_STATUS",
    "install_excepthook",
    "uninstall_excepthook",
    "get_logger",
    "configure_logging",
]

_default_comm: MPI.Comm | None = None

# Environment variables set by launchers, used only before MPI is initialised.
_RANK_VARS = (
    "PMI_RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
    "SLURM_PROCID",
)
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")


def _mpi() -> Any:
    """Import ``mpi4py.MPI`` (this initialises MPI, as a singleton outside ``mpiexec``)."""
    from mpi4py import MPI

    return MPI


def mpi_datatype(dtype: Any) -> Any:
    """The MPI datatype for a NumPy dtype: MPI's predefined one when there is one.

    ``mpi4py.util.dtlib.from_numpy_dtype`` builds a new derived datatype even for
    float64, which nobody frees: MPICH's yaksa then warned "leaked handle pool objects"
    at exit (two per ``DistArray.gather``).  Predefined types need no freeing.
    """
    from mpi4py.util.dtlib import from_numpy_dtype

    dt = np.dtype(dtype)
    if dt.isnative:
        predefined = _mpi()._typedict.get(dt.char)
        if predefined is not None:
            return predefined
    return from_numpy_dtype(dt)


def default_comm() -> MPI.Comm:
    """Return parcomp's default communicator, a ``Dup`` of ``COMM_WORLD``.

    Returns
    -------
    mpi4py.MPI.Intracomm
        The same object on every call.

    Notes
    -----
    The first call is collective over ``COMM_WORLD`` (it calls ``MPI_Comm_dup``); parcomp's
    collective functions make that call on all ranks for you.
    """
    global _default_comm
    if _default_comm is None:
        MPI = _mpi()
        comm = MPI.COMM_WORLD.Dup()
        comm.Set_name("parcomp")
        _default_comm = comm
    return _default_comm


def resolve_comm(comm: MPI.Comm | None) -> MPI.Comm:
    """Return ``comm``, or :func:`default_comm` when it is ``None``."""
    return default_comm() if comm is None else comm


def rank(comm: MPI.Comm | None = None) -> int:
    """Rank of this process in ``comm`` (default: parcomp's default communicator)."""
    return int(resolve_comm(comm).Get_rank())


def size(comm: MPI.Comm | None = None) -> int:
    """Number of ranks in ``comm`` (default: parcomp's default communicator)."""
    return int(resolve_comm(comm).Get_size())


def _env_int(names: tuple[str, ...]) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def world_rank_size() -> tuple[int, int]:
    """Rank and size in ``COMM_WORLD`` without initialising MPI.

    Uses ``COMM_WORLD`` when MPI is already initialised, otherwise the launcher's
    environment (``PMI_RANK``, ``OMPI_COMM_WORLD_RANK``, ``SLURM_PROCID`` ...), otherwise
    ``(0, 1)``.  Local; never communicates.
    """
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
        return int(MPI.COMM_WORLD.Get_rank()), int(MPI.COMM_WORLD.Get_size())
    r = _env_int(_RANK_VARS)
    n = _env_int(_SIZE_VARS)
    if r is None or n is None or n < 1:
        return 0, 1
    return r, n


# --------------------------------------------------------------------------- collective checks
def agree(ok: bool, comm: MPI.Comm | None = None) -> bool:
    """Return True on every rank iff ``ok`` is true on every rank.

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    from parcomp.runtime.callid import any_flag

    return not any_flag(resolve_comm(comm), not ok)


def raise_if_any(error: BaseException | None, comm: MPI.Comm | None = None) -> None:
    """Raise on every rank if ``error`` is not ``None`` on any rank.

    A rank-local check computes an exception (or ``None``); this agrees on the outcome so
    that no rank goes on into a collective that a failing rank has left.

    Parameters
    ----------
    error : BaseException or None
        This rank's problem, if any.
    comm : mpi4py.MPI.Comm, optional
        Communicator to agree over (default: parcomp's default communicator).

    Raises
    ------
    Exception
        On the failing ranks, ``error`` itself.  On the others, an exception of the same
        type as the first failing rank's when it can be built from a message, else a
        :class:`~parcomp.runtime.errors.CollectiveError`; its message names the failing ranks and
        their messages.

    Notes
    -----
    Collective over `comm`: call on all ranks.  One ``Allreduce`` of a flag; only when a
    rank failed, type names and messages travel, as JSON text (:mod:`parcomp.runtime.wire`):
    nothing is pickled, so a survivor of a peer's death never unpickles garbage.
    """
    from parcomp.runtime.wire import allgather_json

    comm = resolve_comm(comm)
    from parcomp.runtime.callid import any_flag

    # the common case: one word, which carries the call's identity too (parcomp.runtime.callid)
    if not any_flag(comm, error is not None):
        return
    mine = None if error is None else [type(error).__name__, str(error)]
    everyone = [tuple(v) if v else None for v in allgather_json(comm, mine)]
    failed = [(r, item) for r, item in enumerate(everyone) if item is not None]
    if error is not None:
        if all(item == failed[0][1] for _, item in failed):
            _mark(error, comm, tuple(r for r, _ in failed))
        _agreed(error)
        raise error
    type_name = failed[0][1][0]
    text = "; ".join(f"rank {r}: {name}: {msg}" for r, (name, msg) in failed)
    message = f"failed on rank(s) {[r for r, _ in failed]} of {comm.Get_size()}: {text}"
    exc_type = _find_error_type(type_name)
    if exc_type is not None:
        try:
            exc = exc_type(message)
        except Exception:  # noqa: BLE001 - an exotic constructor; fall back below
            exc = None
        if exc is not None:
            exc.failed_ranks = tuple(r for r, _ in failed)  # type: ignore[attr-defined]
            _mark(exc, comm, exc.failed_ranks)  # type: ignore[attr-defined]
            _agreed(exc)
            raise exc
    exc = CollectiveError(message, tuple(r for r, _ in failed))
    _mark(exc, comm, exc.failed_ranks)
    _agreed(exc)
    raise exc


def _agreed(exc: BaseException) -> None:
    """Mark ``exc`` as raised by :func:`raise_if_any`: every rank of the communicator
    raises at the same call, so a handler may still use the communicator (a barrier
    before cleaning up) without leaving a rank behind."""
    try:
        exc.parcomp_agreed = True  # type: ignore[attr-defined]
    except AttributeError:
        pass


def raise_if_differ(
    value: Any,
    comm: MPI.Comm | None,
    message: Callable[[list[int], Any, Any], str],
    error: type[Exception] = ConfigError,
) -> None:
    """Raise a :class:`ConfigError` on every rank if ``value`` differs between ranks.

    Parameters
    ----------
    value : object
        A small JSON-able value this rank computed (others are compared by ``repr``).
        Compared as a SHA-256 digest in one ``Allreduce`` of two int64 (the largest digest
        and the largest negated one agree iff all digests are equal): O(log p), nothing
        pickled.  Only on a mismatch do the digests and values travel to name the ranks.
    comm : mpi4py.MPI.Comm or None
        Communicator (None: the default).
    message : callable
        ``message(differing_ranks, rank0_value, first_differing_value)``: the error text,
        the same on every rank (it is printed once).
    error : type, default ConfigError
        The exception raised (a :class:`ParcompError` subclass).

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    import hashlib
    import json

    from parcomp.runtime.wire import allgather_ints, allgather_json

    comm = resolve_comm(comm)
    MPI = _mpi()
    text = json.dumps(value, sort_keys=True, default=repr)
    # 63 bits, so that its negation fits: max(d) == -max(-d) iff every rank has the same d
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True) >> 1
    from parcomp.runtime.callid import reduce_checked

    # O(log p); nothing is pickled; the call's identity is checked first (parcomp.runtime.callid)
    both = reduce_checked(comm, np.array([digest, -digest], np.int64), MPI.MAX)
    if both[0] == -both[1]:
        return
    digests = allgather_ints(comm, [digest])[:, 0]  # only on a mismatch: who differs
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        everyone = allgather_json(comm, json.loads(text))  # only to name the difference
        raise mark_everywhere(error(message(differ, everyone[0], everyone[differ[0]])), comm)


def agreed(fn: Callable[[], Any], comm: MPI.Comm | None = None) -> Any:
    """``fn()``, with a :class:`ParcompError` it raises on any rank raised on every rank
    (printed once when every rank raised the same), through :func:`raise_if_any`.

    Notes
    -----
    Collective over `comm`: call on all ranks.  One checked ``Allreduce`` of a flag.
    """
    from parcomp.runtime.errors import ParcompError

    error: BaseException | None = None
    result = None
    try:
        result = fn()
    except ParcompError as exc:
        error = exc
    raise_if_any(error, comm)
    return result


def mark_world(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised identically by every rank of the job (printed once, by rank
    0), without MPI: for errors of code every rank runs alike before any communicator
    exists (a kernel's declaration at import).  Local; returns ``exc``."""
    from parcomp.runtime.watchdog import format_ranks

    _rank, size = world_rank_size()
    if size > 1:
        exc.parcomp_report = (0, format_ranks(list(range(size))), size)  # type: ignore[attr-defined]
    return exc


def mark_everywhere(exc: BaseException, comm: MPI.Comm | None = None) -> BaseException:
    """Mark ``exc`` as raised identically by every rank of ``comm``; return it.

    For errors computed from metadata that all ranks agreed on (so every rank raises the
    same one at the same call without communicating).  The fail-fast hook then prints the
    traceback once, from the lowest rank, tagged with the ranks, instead of once per rank.
    Local.
    """
    comm = resolve_comm(comm)
    _mark(exc, comm, tuple(range(comm.Get_size())))
    return exc


def _mark(exc: BaseException, comm: Any, ranks: tuple[int, ...]) -> None:
    """Record who reports ``exc`` (the lowest failing rank, as a world rank) and for whom."""
    try:
        MPI = _mpi()
        world = MPI.Group.Translate_ranks(
            comm.Get_group(), [min(ranks)], MPI.COMM_WORLD.Get_group()
        )[0]
    except Exception:  # noqa: BLE001 - an intercommunicator or a revoked comm: no dedup
        return
    from parcomp.runtime.watchdog import format_ranks

    size = comm.Get_size()
    exc.parcomp_report = (int(world), format_ranks(ranks), size)  # type: ignore[attr-defined]


def _find_error_type(name: str) -> type[BaseException] | None:
    import builtins

    from parcomp.runtime import errors

    candidate = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        return candidate
    return None


# --------------------------------------------------------------------------- fail fast
_previous_hook: Any = None


def _tag() -> str:
    """``[rank r/size]`` in parcomp's current default communicator (after an in-job shrink,
    the shrunk one), else in ``COMM_WORLD`` as the launcher describes it."""
    comm = _default_comm
    if comm is not None:
        MPI = sys.modules.get("mpi4py.MPI")
        try:
            if MPI is not None and not MPI.Is_finalized():
                return f"[rank {comm.Get_rank()}/{comm.Get_size()}]"
        except Exception:  # noqa: BLE001 - a revoked communicator: fall back to the world
            pass
    r, n = world_rank_size()
    return f"[rank {r}/{n}]"


#: Exit status after Ctrl-C (SIGINT), as a shell reports it (:mod:`parcomp.runtime.status`).
INTERRUPTED_STATUS = status.INTERRUPTED


def report_and_abort(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """Print the traceback tagged with the rank, then abort the whole MPI job (if size > 1).

    An error that several ranks raised identically (agreed by :func:`raise_if_any`, or
    marked by :func:`mark_everywhere`) is printed once, by the lowest of those ranks, and
    tagged with all of them; the others stay quiet while it is printed.  A
    ``KeyboardInterrupt`` (Ctrl-C) prints one line (rank 0 only) and exits with status 130.
    """
    r, n = world_rank_size()
    if issubclass(exc_type, KeyboardInterrupt):
        _interrupted(r, n)
        return
    tag = f"[rank {r}/{n}] "
    report = getattr(exc, "parcomp_report", None)
    quiet = report is not None and report[0] != r and n > 1
    if quiet:
        # Another rank prints this same error; give it time, then abort (if it has not yet).
        time.sleep(max(2.0, 20 * _abort_grace()))
        sys.stderr.write(f"{tag}parcomp: aborting on the error that rank {report[0]} reported\n")
        sys.stderr.flush()
        abort(1)
        return
    try:
        if report is not None and n > 1:
            tag = f"[{report[1]}/{report[2]}] "
        text = format_error(exc_type, exc, tb)
        sys.stderr.write("".join(tag + line for line in text.splitlines(keepends=True)))
        if n > 1:
            sys.stderr.write(
                f"[rank {r}/{n}] parcomp: unhandled exception, aborting all {n} ranks\n"
            )
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - never let printing stop the abort
        pass
    if n > 1:
        # Give the launcher a moment to forward what this rank just printed: an abort kills
        # the process tree at once and output still in the pipes would be lost (seen with
        # Hydra when every rank raised the same agreed error).  When this rank prints for
        # the others too, it is the only copy: wait a little longer.
        time.sleep(_abort_grace() if report is None else max(_abort_grace(), 0.3))
    abort(1)


def format_error(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> str:
    """The traceback text; for a ParcompError, without the frames inside parcomp itself.

    A user reads where *their* call went wrong and why; parcomp's internals follow with
    ``PARCOMP_FULL_TRACEBACK=1``.
    """
    from parcomp.runtime.errors import ParcompError

    if not isinstance(exc, ParcompError) or _safe_setting("PARCOMP_FULL_TRACEBACK"):
        return "".join(traceback.format_exception(exc_type, exc, tb))
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # parcomp/
    frames = traceback.extract_tb(tb)
    shown = [f for f in frames if not os.path.abspath(f.filename).startswith(package)]
    hidden = len(frames) - len(shown)
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown)]
    if hidden:
        lines.append(
            f"  ({hidden} frame(s) inside parcomp hidden; PARCOMP_FULL_TRACEBACK=1 shows them)\n"
        )
    lines += traceback.format_exception_only(exc_type, exc)
    return "".join(lines)


def _interrupted(r: int, n: int) -> None:
    """Ctrl-C: one line (rank 0, and only when no ``parcomp run`` reports it), status 130."""
    if r == 0 and not _safe_setting("PARCOMP_WATCHDOG_DIR"):
        try:
            sys.stderr.write(f"[rank {r}/{n}] parcomp: interrupted (SIGINT)\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(INTERRUPTED_STATUS)


def _abort_grace() -> float:
    return float(_safe_setting("PARCOMP_ABORT_GRACE"))


def _safe_setting(name: str) -> Any:
    """A setting read on the way out of a failing job: an invalid value (refused at
    ``import parcomp``, see :func:`install_failfast`) gives the default, never a second
    error inside the exception hook."""
    try:
        return config.get(name)
    except ConfigError:
        return config.SETTINGS[name].default


def _failfast_excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """sys.excepthook: abort the job on an exception that ends the program.

    Libraries also call ``sys.excepthook`` themselves to report an error they ignore (h5py
    does, from a destructor).  Those calls come with Python frames on the stack; the
    interpreter's own call for an uncaught exception comes with none.  Only the latter
    aborts; the former is printed, tagged, and the program goes on.
    """
    try:
        sys._getframe(1)
    except ValueError:  # no caller frame: the interpreter is ending on this exception
        report_and_abort(exc_type, exc, tb)
        return
    r, n = world_rank_size()
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write("".join(f"[rank {r}/{n}] " + line for line in text.splitlines(keepends=True)))
    sys.stderr.flush()


def abort(code: int = 1) -> None:
    """Abort the whole MPI job with ``code`` if MPI is running with more than one rank.

    Returns normally (so the caller exits with its own status) when MPI is not initialised
    or the job has a single rank.
    """
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return
    if MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(code)


class JobExit(SystemExit):
    """A ``SystemExit`` raised by every rank together (see :func:`exit_all`).

    The rank runner of ``parcomp run`` lets it end the process normally instead of aborting
    the job, so every rank's output is delivered and the job's exit status is ``code``.
    """


def exit_all(status: int, message: str | None = None, comm: MPI.Comm | None = None) -> NoReturn:
    """End the job on every rank with exit status `status`, printing `message` once.

    Use it where every rank has decided to stop with the same status (a solver that did not
    converge, a verification that failed everywhere).  A plain ``sys.exit(1)`` on each rank
    makes ``parcomp run`` abort the job from the first rank that exits, which may end the
    others before their output, including the message, is delivered.

    Parameters
    ----------
    status : int
        Exit status of every rank (0 to 255).
    message : str, optional
        Printed to standard error by rank 0 of `comm` before the ranks exit.
    comm : MPI.Comm, optional
        Communicator (default :func:`default_comm`).

    Raises
    ------
    JobExit
        Always, on every rank, after a barrier (so no rank leaves while another is still
        writing).

    Notes
    -----
    Collective over `comm`: call on all ranks with the same `status`.  A rank calling it
    alone waits in the barrier; ``parcomp run --hang-after`` reports it.
    """
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 255:
        raise ConfigError(f"exit_all: status must be an int in 0..255, got {status!r}")
    c = resolve_comm(comm)
    if message is not None and c.Get_rank() == 0:
        sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    c.Barrier()
    raise JobExit(status)


def install_excepthook() -> None:
    """Make an unhandled exception abort the whole MPI job with a rank-tagged traceback.

    Called by ``import parcomp`` unless the environment sets ``PARCOMP_FAILFAST=0``.  A hook
    already installed by someone else (IPython, a debugger) is left in place.
    """
    global _previous_hook
    if sys.excepthook is _failfast_excepthook:
        return
    if sys.excepthook is not sys.__excepthook__:
        return
    _previous_hook = sys.excepthook
    sys.excepthook = _failfast_excepthook


def uninstall_excepthook() -> None:
    """Restore the exception hook that :func:`install_excepthook` replaced."""
    global _previous_hook
    if sys.excepthook is _failfast_excepthook:
        sys.excepthook = _previous_hook or sys.__excepthook__
        _previous_hook = None


def _failfast_enabled() -> bool:
    for name in ("PARCOMP_ABORT_GRACE", "PARCOMP_FULL_TRACEBACK"):  # used by the hook
        config.get(name)  # an invalid value is refused here, not inside the hook
    return bool(config.get("PARCOMP_FAILFAST"))


# --------------------------------------------------------------------------- logging
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_handler: logging.Handler | None = None


class _RankFilter(logging.Filter):
    """Adds ``record.rank_tag`` (``[rank r/size]``) at emit time, so it is right after MPI starts."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank_tag = _tag()
        return True


def _parse_level(value: str | int | None, default: int, source: str) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    name = value.strip().upper()
    if name.isdigit():
        return int(name)
    if name not in _LEVELS:
        raise ConfigError(f"{source}={value!r}: expected one of {', '.join(_LEVELS)}")
    return int(getattr(logging, name))


def configure_logging(
    level: str | int | None = None,
    other_ranks_level: str | int | None = None,
    stream: Any = None,
    lead: bool | None = None,
) -> logging.Logger:
    """Configure the ``parcomp`` logger: rank-tagged, rank 0 at ``level``, others quieter.

    Parameters
    ----------
    level : str or int, optional
        Level on rank 0 (default: ``$PARCOMP_LOG_LEVEL`` or INFO).
    other_ranks_level : str or int, optional
        Level on the other ranks (default: ``$PARCOMP_LOG_LEVEL_OTHERS`` or WARNING).
    stream : file-like, optional
        Where to write (default: ``sys.stderr``).
    lead : bool, optional
        Whether this process logs at ``level`` (default: world rank 0).  After an in-job
        recovery the new rank 0 takes over when world rank 0 is gone.

    Returns
    -------
    logging.Logger
        The ``parcomp`` logger.

    Notes
    -----
    Local; the rank comes from :func:`world_rank_size` and never initialises MPI.
    """
    global _handler
    logger = logging.getLogger("parcomp")
    rank0 = _parse_level(
        level if level is not None else config.get("PARCOMP_LOG_LEVEL"),
        logging.INFO,
        "PARCOMP_LOG_LEVEL",
    )
    others = _parse_level(
        other_ranks_level
        if other_ranks_level is not None
        else config.get("PARCOMP_LOG_LEVEL_OTHERS"),
        logging.WARNING,
        "PARCOMP_LOG_LEVEL_OTHERS",
    )
    if lead is None:
        lead = world_rank_size()[0] == 0
    logger.setLevel(rank0 if lead else others)
    if _handler is not None:
        logger.removeHandler(_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(rank_tag)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RankFilter())
    logger.addHandler(handler)
    logger.propagate = False
    _handler = handler
    return logger


def get_logger(name: str = "parcomp") -> logging.Logger:
    """Return a logger under ``parcomp``, configuring the rank-tagged handler on first use.

    Parameters
    ----------
    name : str
        ``"parcomp"`` or a dotted child such as ``"parcomp.heat2d"``; other names are
        placed under ``parcomp.``.
    """
    if _handler is None:
        configure_logging()
    if name != "parcomp" and not name.startswith("parcomp."):
        name = "parcomp." + name
    return logging.getLogger(name)
