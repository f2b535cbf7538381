"""Where a job's MPI listens: single-node jobs keep their ranks off the network (PURE).

``parcomp run`` of a job on one machine needs no network between its ranks: MPICH's UCX
and Open MPI's ``btl/sm`` move messages through shared memory.  Left alone, each rank
still opens TCP listening sockets on every interface of the host (UCX's TCP transport,
Open MPI's ``btl/tcp``), reachable from the network while the job runs.
:func:`keep_local` asks the MPI for shared-memory transports only (``UCX_TLS=self,sm``;
``OMPI_MCA_btl=self,sm``) when the job has no host list, unless the user set those
variables.  Multi-node jobs (a hostfile or host list in ``PARCOMP_MPIEXEC_ARGS`` or in
the environment a launcher reads, :data:`HOST_LIST_ENV`, or a Slurm allocation of
several nodes) are left to the site's settings.

What cannot be restricted, and why: the launchers' own control ports.  Hydra's
``mpiexec`` binds its PMI/control port to all interfaces (no option binds it to one);
Open MPI's ``prterun`` refuses to run with only the loopback for its out-of-band
messages ("No network interfaces were found for out-of-band communications").  Both are
the launcher's, not parcomp's, and live as long as the job.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

__all__ = ["HOST_LIST_ENV", "HOST_LIST_OPTIONS", "single_node", "keep_local", "listeners"]

#: Launcher options that name other hosts (Hydra's and Open MPI's).
HOST_LIST_OPTIONS = (
    "-f",
    "-hostfile",
    "--hostfile",
    "-machinefile",
    "--machinefile",
    "-hosts",
    "-host",
    "--host",
    "-H",
)

#: Environment variables through which a launcher finds other hosts by itself: Hydra's
#: host file, and the resource managers Hydra and Open MPI detect (PBS, LSF, SGE), and
#: Open MPI's default host files.
HOST_LIST_ENV = (
    "HYDRA_HOST_FILE",
    "PBS_NODEFILE",
    "LSB_HOSTS",
    "LSB_MCPU_HOSTS",
    "PE_HOSTFILE",
    "OMPI_MCA_orte_default_hostfile",
    "PRTE_MCA_prte_default_hostfile",
)


def single_node(env: MutableMapping[str, str], extra: Sequence[str]) -> bool:
    """Whether the job runs on this machine only: no host list on the launcher's command
    line or in the environment a launcher reads one from, at most one Slurm node."""
    if any(arg.split("=", 1)[0] in HOST_LIST_OPTIONS for arg in extra):
        return False
    if any(env.get(name) for name in HOST_LIST_ENV):
        return False
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1"
    try:
        return int(nodes) <= 1
    except ValueError:
        return False


def keep_local(env: MutableMapping[str, str], vendor: str | None, extra: Sequence[str]) -> bool:
    """For a single-node job, shared-memory transports only (in place; the user's own
    settings are kept).  Returns whether it applied."""
    if not single_node(env, extra):
        return False
    if vendor == "MPICH":
        env.setdefault("UCX_TLS", "self,sm")
        return True
    if vendor == "Open MPI":
        env.setdefault("OMPI_MCA_btl", "self,sm")
        return True
    return False


def listeners(vendor: str | None) -> list[str]:
    """What listens where during a ``parcomp run`` job, for ``parcomp info``."""
    ranks = {
        "MPICH": "none on one machine (UCX_TLS=self,sm); with a host list, UCX's TCP on "
        "every interface (UCX_NET_DEVICES restricts it)",
        "Open MPI": "none on one machine (OMPI_MCA_btl=self,sm); with a host list, btl/tcp "
        "on every interface (OMPI_MCA_btl_tcp_if_include restricts it)",
    }.get(vendor or "", "as this MPI decides (parcomp knows MPICH and Open MPI)")
    launcher = {
        "MPICH": "Hydra's control port on all interfaces (cannot be restricted)",
        "Open MPI": "prterun's out-of-band ports on all interfaces (it refuses the loopback alone)",
    }.get(vendor or "", "unknown")
    return [f"Listeners:     ranks: {ranks}", f"               launcher: {launcher}"]
