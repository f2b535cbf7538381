"""Checkpoint/restart to HDF5 (see :mod:`parcomp.checkpoint.format` for the layout).

COMMUNICATES (the Checkpointer's collective methods); the format and inspection are local.

Three pieces, each in one place:

* the typed manifest (:mod:`~parcomp.checkpoint.manifest`): parsed once from hostile
  bytes, valid or a ``CheckpointSchemaError``;
* one commit protocol (:mod:`~parcomp.checkpoint.transaction`): stage, reserve, write,
  agree, commit, prune, with stores for the shared directory, one mpio file and the
  node-local tier (:mod:`~parcomp.checkpoint.local`);
* one restore engine (:mod:`~parcomp.checkpoint.restore`): a pure plan
  (:mod:`~parcomp.checkpoint.plan`) executed by direct reads or ``Alltoallv``.

The ``Checkpointer`` is the policy over them (:mod:`~parcomp.checkpoint.checkpointer`,
:mod:`~parcomp.checkpoint.saving`).
"""

from parcomp.checkpoint.checkpointer import Checkpointer
from parcomp.checkpoint.inspect import inspect_checkpoint
from parcomp.checkpoint.preempt import PREEMPTED_STATUS, Preempted
from parcomp.checkpoint.reader import Restored, list_checkpoints

__all__ = [
    "Checkpointer",
    "Restored",
    "Preempted",
    "PREEMPTED_STATUS",
    "inspect_checkpoint",
    "list_checkpoints",
]
