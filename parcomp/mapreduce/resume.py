"""``parcomp.map(..., checkpoint=directory)``: a resumable map (issue 27, a first slice:
its own block schedule per round, no preemption exit yet, ``map`` only).

COMMUNICATES: :func:`resumable_map` is a collective over ``comm``.

The items left to do are cut into *rounds* of ``every_items`` items; in a round each rank
runs a block of them, then every rank commits through the checkpoint engine's
transaction (``Checkpointer.save(step=round, local={"results": ...}, meta={"parcomp.map":
identity})``): the committed results are framed records ``(item index, pickled result)``,
each rank holding a share, so the union of the shares is every finished item.  A rerun of
the same call (:func:`~parcomp.mapreduce.identity.call_identity`) reads the whole union on
every rank and runs only the items not in it, on any rank count; a rerun of another call
is refused on every rank, naming what differs.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.checkpointer import Checkpointer
from parcomp.mapreduce.failures import failure_record, raise_failures
from parcomp.mapreduce.identity import call_identity, differences, parse_identity
from parcomp.mapreduce.schedule import as_items
from parcomp.runtime.agree import agreed, alike
from parcomp.runtime.callid import any_flag
from parcomp.runtime.errors import CheckpointSchemaError, ConfigError
from parcomp.runtime.ranks import resolve_comm

__all__ = ["resumable_map"]

_FRAME = struct.Struct("<qQ")  # item index, length of the pickled result


def frame(records: dict[int, Any]) -> np.ndarray:
    """``(index, pickled value)`` records as one byte array (PURE)."""
    out = bytearray()
    for index in sorted(records):
        blob = pickle.dumps(records[index], protocol=pickle.HIGHEST_PROTOCOL)
        out += _FRAME.pack(index, len(blob)) + blob
    return np.frombuffer(bytes(out), np.uint8)


def unframe(data: np.ndarray, n: int, where: str) -> dict[int, Any]:
    """The records of :func:`frame` (PURE; a cut, overlong or out-of-range record is a
    :class:`CheckpointSchemaError`).  The bytes come from a checksummed checkpoint of
    this user's own, so unpickling them is as safe as the run that wrote them."""
    raw = data.tobytes()
    records: dict[int, Any] = {}
    pos = 0
    while pos < len(raw):
        if pos + _FRAME.size > len(raw):
            raise CheckpointSchemaError(f"{where}: a progress record is cut short")
        index, length = _FRAME.unpack_from(raw, pos)
        pos += _FRAME.size
        if not 0 <= index < n or length > len(raw) - pos:
            raise CheckpointSchemaError(f"{where}: progress record {index} out of range")
        records[index] = pickle.loads(raw[pos : pos + length])
        pos += length
    return records


def resumable_map(
    fn: Callable[[Any], Any],
    items: Any,
    directory: str | Path,
    *,
    every_items: int = 1000,
    resume: str = "yes",
    comm: Any = None,
) -> list[Any]:
    """``[fn(item) for item in items]`` on all ranks, committed every ``every_items``
    items to ``directory`` and resumed from there by the same call (see the module).

    ``resume="ignore"`` starts over, whatever ``directory`` holds.  Collective.
    """
    comm = resolve_comm(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    with agreed(comm):
        work = as_items(items)
        if isinstance(every_items, bool) or not isinstance(every_items, int) or every_items < 1:
            raise ConfigError(f"every_items must be a positive integer, got {every_items!r}")
        if resume not in ("yes", "ignore"):
            raise ConfigError(f"resume must be 'yes' or 'ignore', got {resume!r}")
    identity = call_identity("map", items, fn)
    ckpt = Checkpointer(directory, keep=2, handle_signals=False, comm=comm)
    done: dict[int, Any] = {}
    step = 0
    restored = (
        None if resume == "ignore" else ckpt.restore(redeal=lambda lengths, r, p: (0, sum(lengths)))
    )
    if restored is not None:
        where = str(restored.path)
        with alike(comm, catch=(CheckpointSchemaError, ConfigError)):  # the same bytes everywhere
            saved = parse_identity(restored.meta.get("parcomp.map"), where)
            changed = differences(saved, identity)
            if changed:
                raise ConfigError(
                    f"{directory} holds the progress of another map call ({'; '.join(changed)}); "
                    "use another directory, or resume='ignore' to start over"
                )
            done = unframe(restored.local.get("results", np.zeros(0, np.uint8)), work.n, where)
        step = restored.step + 1
    mine = {i: v for i, v in done.items() if i % size == rank}  # this rank's share to keep
    todo = [i for i in range(work.n) if i not in done]
    for start in range(0, len(todo), every_items):
        batch = todo[start : start + every_items]
        lo = len(batch) * rank // size
        hi = len(batch) * (rank + 1) // size
        failure, local = None, None
        for i in batch[lo:hi]:
            try:
                mine[i] = fn(work.get(i))
            except Exception as exc:  # noqa: BLE001 - raised on every rank just below
                failure, local = failure_record(rank, i, work.get(i), exc), exc
                break
        if any_flag(comm, failure is not None):  # nothing is committed for this round
            raise_failures(comm.allgather(failure), comm, local)
        ckpt.save(step, local={"results": frame(mine)}, meta={"parcomp.map": identity})
        step += 1
    everything: dict[int, Any] = {}
    for part in comm.allgather(mine):
        everything.update(part)
    ckpt.close()
    return [everything[i] for i in range(work.n)]
