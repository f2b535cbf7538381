"""Logging tagged with the rank: ``[rank r/size]`` on every line.

:func:`get_logger` returns loggers under ``parcomp``; rank 0 logs at INFO and the other
ranks at WARNING unless ``PARCOMP_LOG_LEVEL`` / ``PARCOMP_LOG_LEVEL_OTHERS`` or
:func:`configure_logging` say otherwise.  Local: never communicates.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.ranks import default_comm_if_made, outer_comm, world_rank_size

__all__ = ["get_logger", "configure_logging", "rank_tag"]


def rank_tag() -> str:
    """``[rank r/size]`` in parcomp's current default communicator (after an in-job shrink,
    the shrunk one), else in ``COMM_WORLD`` as the launcher describes it."""
    comm = default_comm_if_made()
    if comm is not None:
        MPI = sys.modules.get("mpi4py.MPI")
        try:
            if MPI is not None and not MPI.Is_finalized():
                outer = outer_comm()
                if outer is not None:  # inside an ensemble task: the job's rank, then the task's
                    return (
                        f"[rank {outer.Get_rank()}/{outer.Get_size()} "
                        f"task {comm.Get_rank()}/{comm.Get_size()}]"
                    )
                return f"[rank {comm.Get_rank()}/{comm.Get_size()}]"
        except Exception:  # noqa: BLE001 - a revoked communicator: fall back to the world
            pass
    r, n = world_rank_size()
    return f"[rank {r}/{n}]"


# --------------------------------------------------------------------------- logging
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_handler: logging.Handler | None = None


class _RankFilter(logging.Filter):
    """Adds ``record.rank_tag`` (``[rank r/size]``) at emit time, so it is right after MPI starts."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank_tag = rank_tag()
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
