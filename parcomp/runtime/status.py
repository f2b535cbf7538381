"""The exit statuses of parcomp jobs, in one place (PURE; imports nothing).

``parcomp run``, the rank runner, the checkpointer and the Slurm template all speak
these; a script or a scheduler can rely on them:

====  ======================  ==========================================================
  0   ``OK``                  the job finished
  1   ``FAILED``              a rank failed (its traceback is printed)
  2   ``BAD_INPUT``           bad options or settings, an unusable host list, or two
                              machines of the job sharing a hostname: nothing ran
  3   ``SIZE_MISMATCH``       the MPI world is not the size asked for (a launcher that
                              started singletons)
 75   ``PREEMPTED``           asked to stop (SIGTERM, SIGUSR1/2), checkpointed: requeue it
124   ``TIMEOUT``             the job exceeded ``--timeout`` or hung (``--hang-after``),
                              as coreutils ``timeout``
130   ``INTERRUPTED``         Ctrl-C, as a shell reports it
====  ======================  ==========================================================
"""

from __future__ import annotations

__all__ = ["OK", "FAILED", "BAD_INPUT", "SIZE_MISMATCH", "PREEMPTED", "TIMEOUT", "INTERRUPTED"]

OK = 0
FAILED = 1
BAD_INPUT = 2
SIZE_MISMATCH = 3
PREEMPTED = 75
TIMEOUT = 124
INTERRUPTED = 130
