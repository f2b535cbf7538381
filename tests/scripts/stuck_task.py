"""An ensemble task that fails on one rank of its group while the other waits in the
task's own collective: the job must end with the failing rank's traceback, not hang."""

import parcomp


def task(x, comm):
    if comm.Get_rank() == 1:
        raise ValueError(f"parameter {x} is bad on this rank only")
    return comm.allreduce(x)  # rank 0 of the group waits here forever


parcomp.map(task, range(4), ranks_per_task=2)
print("unreachable")
