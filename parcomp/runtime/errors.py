"""Exception hierarchy of parcomp.

PURE: no communication.

Every error raised by parcomp derives from :class:`ParcompError`.  Subclasses also derive
from the matching built-in exception (``ValueError``, ``TypeError``, ``OSError`` ...) so that
code written against the built-ins keeps working::

    try:
        arr = parcomp.DistArray.zeros((0, 4))
    except ValueError as exc:      # also a parcomp.ShapeError
        ...

Messages name the bad value and what was expected.
"""

from __future__ import annotations

__all__ = [
    "ParcompError",
    "ConfigError",
    "ShapeError",
    "DTypeError",
    "KernelSignatureError",
    "RankCountError",
    "CollectiveError",
    "LaunchError",
    "MPIExecNotFoundError",
    "CheckpointError",
    "CheckpointSchemaError",
    "TaskError",
    "HDF5Error",
]


class ParcompError(Exception):
    """Base class of every error raised by parcomp."""


class ConfigError(ParcompError, ValueError):
    """An option, flag or environment variable has an invalid value."""


class ShapeError(ParcompError, ValueError):
    """An array shape, halo width or process grid does not fit."""


class DTypeError(ParcompError, TypeError):
    """An array has the wrong dtype."""


class KernelSignatureError(ParcompError, TypeError):
    """A kernel was called with arguments that do not match its signature."""


class RankCountError(ParcompError, ValueError):
    """The number of MPI ranks does not fit what was asked (too many, or a mismatch)."""


class CollectiveError(ParcompError, RuntimeError):
    """A check failed on some ranks; raised on every rank so that none is left waiting.

    Parameters
    ----------
    message : str
        What went wrong, naming the failing ranks.
    failed_ranks : tuple of int
        Ranks (of the communicator the check ran on) where the check failed.
    """

    def __init__(self, message: str, failed_ranks: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.failed_ranks = tuple(failed_ranks)


class LaunchError(ParcompError, OSError):
    """A job could not be launched (bad script, bad rank count, launcher failure)."""


class MPIExecNotFoundError(LaunchError, FileNotFoundError):
    """No usable ``mpiexec`` was found."""


class CheckpointError(ParcompError, OSError):
    """A checkpoint could not be written or read."""


class HDF5Error(ParcompError, OSError):
    """A results file (:mod:`parcomp.io`) could not be written or read."""


class CheckpointSchemaError(CheckpointError, ValueError):
    """A checkpoint file does not follow the expected schema (version, datasets, shapes)."""


class TaskError(ParcompError, RuntimeError):
    """A mapper or reducer raised on some rank; raised on every rank.

    Attributes
    ----------
    rank : int
        Rank where the task failed.
    index : int
        Number of the failed item (its position in ``items``).
    item : str
        ``repr`` of the item (shortened).
    remote_traceback : str
        The traceback on the failing rank, as text.
    """

    def __init__(
        self,
        message: str,
        rank: int = -1,
        index: int = -1,
        item: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.index = index
        self.item = item
        self.remote_traceback = remote_traceback
