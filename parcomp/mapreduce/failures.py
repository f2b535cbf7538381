"""A mapper's failure on one rank, raised as the same :class:`TaskError` on every rank (the
records are PURE; :func:`raise_failures` marks the error raised everywhere).
"""

from __future__ import annotations

import traceback
from typing import Any

from parcomp.runtime.errors import TaskError
from parcomp.runtime.ranks import mark_everywhere

__all__ = ["failure_record", "raise_failures"]


def failure_record(rank: int, index: int, item: Any, exc: BaseException) -> tuple:
    text = repr(item)
    if len(text) > 200:
        text = text[:197] + "..."
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return (rank, index, text, type(exc).__name__, str(exc), tb)


def raise_failures(failures: list[Any], comm: Any, local_exc: BaseException | None) -> None:
    """Raise the first failure as a TaskError on every rank: every rank has the same
    records (gathered), so it is marked as raised everywhere and printed once."""
    size = comm.Get_size()
    records = [f for f in failures if f is not None]
    if not records:
        return
    rank, index, item, name, msg, tb = records[0]
    others = f" (and on rank(s) {[r[0] for r in records[1:]]})" if len(records) > 1 else ""
    message = (
        f"task failed on rank {rank} of {size}, item {index} ({item}): {name}: {msg}{others}\n"
        f"traceback on rank {rank}:\n{tb}"
    )
    err = TaskError(message, rank=rank, index=index, item=item, remote_traceback=tb)
    mark_everywhere(err, comm)
    if local_exc is not None:
        raise err from local_exc
    raise err
