"""Checkpoint/restart to HDF5 (see :mod:`parcomp.checkpoint.format` for the layout).

COMMUNICATES (the Checkpointer's collective methods); the format and inspection are local.
"""

from parcomp.checkpoint.checkpointer import Checkpointer
from parcomp.checkpoint.preempt import PREEMPTED_STATUS, Preempted
from parcomp.checkpoint.reader import Restored, inspect_checkpoint, list_checkpoints

__all__ = [
    "Checkpointer",
    "Restored",
    "Preempted",
    "PREEMPTED_STATUS",
    "inspect_checkpoint",
    "list_checkpoints",
]
