"""Rank-side entry point of ``parcomp run``: ``python -m parcomp.launch.runner [-m] TARGET ...``.

COMMUNICATES: initialises MPI; aborts the job on failure.

Imports parcomp (installing the fail-fast hook even if the script does not import parcomp),
checks that the world size equals ``$PARCOMP_NPROCS`` (a mismatched ``mpiexec`` or
``srun`` without PMI starts N singletons of size 1 instead of one job), and runs the target
as ``__main__``.  A ``sys.exit`` with a non-zero status on any rank aborts all ranks.
"""

from __future__ import annotations

import os
import runpy
import sys

from parcomp.launch.cleanup import die_with_parent
from parcomp.runtime import config
from parcomp.runtime.failfast import (
    JobExit,
    _failfast_enabled,
    _failfast_excepthook,
    abort,
    install_excepthook,
    report_and_abort,
)
from parcomp.runtime.ranks import world_rank_size
from parcomp.runtime.status import BAD_INPUT, SIZE_MISMATCH
from parcomp.runtime.status import PREEMPTED as PREEMPTED_STATUS
from parcomp.runtime.watchdog import mark_initialized, node_identity

#: Exit status when the world size differs from the number of ranks asked for.
SIZE_MISMATCH_STATUS = SIZE_MISMATCH


#: Exit status when two machines of the job share a hostname.
HOSTNAME_CLASH_STATUS = BAD_INPUT


def _refuse_shared_hostnames(rank: int, size: int) -> None:
    """End the job on every rank when two machines of it have the same hostname.

    parcomp tells nodes apart by hostname (node-local checkpoints and their partner
    copies, one kernel cache per node, one work counter per node): two machines with one
    name would be taken for one node, and losing either would lose data silently.  One
    ``allgather`` of a few bytes at start-up (collective over the world).
    """
    from mpi4py import MPI

    mine = node_identity()
    every = MPI.COMM_WORLD.allgather(mine)
    machines: dict[str, dict[str, list[int]]] = {}
    for r, ident in enumerate(every):
        host, _, where = ident.partition(" ")
        machines.setdefault(host, {}).setdefault(where, []).append(r)
    clashes = {h: m for h, m in machines.items() if len(m) > 1}
    if not clashes:
        return
    if rank == 0:
        for host, places in clashes.items():
            groups = "; ".join(f"ranks {ranks}" for ranks in places.values())
            sys.stderr.write(
                f"[rank 0/{size}] parcomp: {len(places)} different machines have the hostname "
                f"{host!r} ({groups}): parcomp tells nodes apart by hostname (node-local "
                "checkpoints, partner copies, kernel caches), so give each machine its own "
                "name. Nothing was run.\n"
            )
        sys.stderr.flush()
    raise SystemExit(HOSTNAME_CLASH_STATUS)


#: The processes that start ranks: Hydra's proxy, PRRTE's daemons and its launcher.
LAUNCHER_DAEMONS = ("hydra_pmi_proxy", "prted", "prterun", "mpirun")


def _die_with_proxy() -> None:
    """Be killed with the Hydra proxy that started this rank (``PR_SET_PDEATHSIG``).

    A node cut off from the job (its link down) keeps its ranks blocked in MPI for as long
    as TCP waits; when the launcher ends the proxy there, its ranks must go too, not stay
    as orphans; so must the ranks of a job whose ``prterun`` gave up after losing a
    node's daemon (seen on the rig: they went on recovering in-job beside the relaunch).
    Only under the launcher daemons parcomp knows (:data:`LAUNCHER_DAEMONS`), which fork
    their ranks from a thread that lives as long as they do.
    """
    try:
        with open(f"/proc/{os.getppid()}/comm", encoding="utf-8") as fh:
            parent = fh.read().strip()
    except OSError:
        return
    if parent in LAUNCHER_DAEMONS:
        die_with_parent()


def main(argv: list[str] | None = None) -> None:
    """Run the target named in ``argv`` (default ``sys.argv[1:]``) as ``__main__``."""
    args = list(sys.argv[1:] if argv is None else argv)
    module = bool(args) and args[0] == "-m"
    if module:
        args = args[1:]
    if not args:
        sys.stderr.write("usage: python -m parcomp.launch.runner [-m MODULE | SCRIPT] [ARGS...]\n")
        raise SystemExit(2)
    if _failfast_enabled():
        install_excepthook()
    _die_with_proxy()
    target, rest = args[0], args[1:]
    expected = config.get("PARCOMP_NPROCS") or config.get("PARCOMP_EXPECT_NTASKS")
    if expected:
        from mpi4py import MPI  # noqa: F401 - initialise MPI to learn the real world size

        mark_initialized()  # the supervisor tells a start-up failure from a later one
        rank, size = world_rank_size()
        if size != int(expected):
            sys.stderr.write(
                f"[rank {rank}/{size}] parcomp: this job was asked for {expected} ranks but "
                f"MPI reports a world of {size}. The launcher does not match the MPI library "
                "mpi4py loaded (see `parcomp info`), or srun ran without --mpi=pmi2.\n"
            )
            sys.stderr.flush()
            raise SystemExit(SIZE_MISMATCH_STATUS)
        if size > 1:
            _refuse_shared_hostnames(rank, size)
    sys.argv = [target, *rest]
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if isinstance(exc, JobExit):
            raise  # every rank called exit_all together: no abort
        if code == PREEMPTED_STATUS:
            from parcomp.runtime.resilient import note_exit_status

            note_exit_status(code)
            raise  # every rank checkpointed together and exits the same way: no abort
        if code not in (None, 0):
            status = code if isinstance(code, int) else 1
            rank, size = world_rank_size()
            if not isinstance(code, int):
                sys.stderr.write(f"[rank {rank}/{size}] {code}\n")
            if size > 1:
                sys.stderr.write(
                    f"[rank {rank}/{size}] parcomp: exit status {status}, aborting all ranks\n"
                )
            sys.stderr.flush()
            abort(status)
        raise
    except BaseException as exc:  # noqa: BLE001 - report without the runner's own frames
        tb = exc.__traceback__
        while tb is not None and (
            tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__)
            or tb.tb_frame.f_code.co_filename.startswith("<frozen runpy")
        ):
            tb = tb.tb_next
        if sys.excepthook is _failfast_excepthook:
            report_and_abort(type(exc), exc, tb)
        else:
            sys.excepthook(type(exc), exc, tb)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
