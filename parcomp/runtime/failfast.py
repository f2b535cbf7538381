"""Fail fast: an exception on any rank ends the whole job quickly, with that rank's traceback.

* :func:`install_excepthook` (done on ``import parcomp`` unless ``PARCOMP_FAILFAST=0``)
  makes an unhandled exception on any rank print that rank's traceback, tagged
  ``[rank r/size]``, and ``MPI_Abort`` the whole job instead of leaving the others hanging;
  an error every rank raised alike (:mod:`parcomp.runtime.agree`) is printed once.
* :func:`exit_all` ends the job on every rank with one status (COMMUNICATES: a barrier).
* Ctrl-C prints one line and exits with status 130 (:mod:`parcomp.runtime.status`).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from parcomp.runtime import config, status
from parcomp.runtime.errors import ConfigError, ParcompError
from parcomp.runtime.ranks import resolve_comm, world_rank_size

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = [
    "abort",
    "exit_all",
    "JobExit",
    "report_and_abort",
    "format_error",
    "INTERRUPTED_STATUS",
    "install_excepthook",
    "uninstall_excepthook",
]

# --------------------------------------------------------------------------- fail fast
_previous_hook: Any = None


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
        sys._getframe(1)  # noqa: SLF001 - the stdlib's frame access
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
