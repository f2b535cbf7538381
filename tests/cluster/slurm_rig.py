"""A real multi-node Slurm on the rig: slurmctld on node0, one slurmd per node.

Every node runs its own ``munged`` (one key, shared as a cluster's key is; the socket in
the node's private ``/tmp``) and its own ``slurmd -D`` under its own NodeName, hostname
and address; ``slurmctld`` runs on node0.  The configuration, the controller's state and
the logs live in the shared folder, each slurmd's spool in its node's ``/tmp``.  The
daemons are started through ``cluster.py exec`` and die with their nodes (``down``).

Jobs are submitted from node0 with the rig's launcher variables removed from the
environment, so that inside a job Hydra starts its proxies on the allocated nodes through
``srun``, as on a real Slurm cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cluster as rig  # noqa: E402

RIG_VARS = ("HYDRA_LAUNCHER", "HYDRA_LAUNCHER_EXEC", "PRTE_MCA_plm_ssh_agent",
            "OMPI_MCA_plm_rsh_agent", rig.NODE_ENV, "PARCOMP_CLUSTER_NAME")  # fmt: skip


class RigSlurm:
    """Start with :meth:`start`; run Slurm commands on node0 with :meth:`run`."""

    def __init__(self, state: dict, nodes: list[str], cpus: int = 2) -> None:
        self.state = state
        self.nodes = nodes
        self.cpus = cpus
        self.folder = Path(state["shared"]) / "slurm"
        self.conf = self.folder / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    def _exec(self, node: str, argv: list[str]) -> list[str]:
        return [sys.executable, str(HERE / "cluster.py"), "exec", node,
                "env", *(f"-u{v}" for v in RIG_VARS), f"SLURM_CONF={self.conf}",
                *map(str, argv)]  # fmt: skip

    def _write_conf(self) -> None:
        f = self.folder
        addrs = {n: self.state["nodes"][n]["addr"] for n in self.nodes}
        lines = [
            "ClusterName=parcomprig",
            f"SlurmctldHost={self.nodes[0]}({addrs[self.nodes[0]]})",
            "SlurmctldPort=16917",
            "SlurmdPort=16918",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "AuthInfo=socket=/tmp/munge/munge.sock",
            "CredType=cred/munge",
            f"StateSaveLocation={f}/state",
            "SlurmdSpoolDir=/tmp/slurmd",
            "SlurmctldPidFile=/tmp/slurmctld.pid",
            "SlurmdPidFile=/tmp/slurmd.pid",
            f"SlurmctldLogFile={f}/slurmctld.log",
            f"SlurmdLogFile={f}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SlurmdParameters=config_overrides",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "ReturnToService=2",
            "JobRequeue=1",
            "KillWait=5",
            "MinJobAge=600",
            "InactiveLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
        ]
        lines += [f"NodeName={n} NodeAddr={addrs[n]} CPUs={self.cpus} State=UNKNOWN"
                  for n in self.nodes]  # fmt: skip
        lines.append("PartitionName=rig Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 90) -> None:
        f = self.folder
        shutil.rmtree(f, ignore_errors=True)
        (f / "state").mkdir(parents=True)
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for node in self.nodes:
            argv = ["sh", "-c", "mkdir -p /tmp/munge /tmp/slurmd && chmod 700 /tmp/munge && "
                    f"exec munged --key-file={key} --socket=/tmp/munge/munge.sock "
                    "--pid-file=/tmp/munge/munged.pid --log-file=/tmp/munge/munged.log "
                    "--seed-file=/tmp/munge/munge.seed --force"]  # fmt: skip
            done = subprocess.run(self._exec(node, argv), capture_output=True, text=True,
                                  timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"munged on {node}: {done.stderr}")
        self._write_conf()
        daemons = [(self.nodes[0], ["slurmctld", "-D", "-f", self.conf])]
        daemons += [(n, ["slurmd", "-D", "-N", n, "-f", self.conf]) for n in self.nodes]
        for node, argv in daemons:
            log = open(f / f"{argv[0]}-{node}.out", "w")  # lives with the daemon
            self.procs.append(subprocess.Popen(
                self._exec(node, argv), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %T")
            idle = [ln for ln in out.stdout.splitlines() if ln.endswith(" idle")]
            if len(idle) == len(self.nodes):
                return
            time.sleep(0.5)
        log = (f / "slurmctld.log").read_text() if (f / "slurmctld.log").exists() else ""
        self.stop()
        raise RuntimeError(f"rig Slurm did not come up in {timeout} s: {out.stdout}\n{log[-2000:]}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in self.nodes:
            subprocess.run(self._exec(node, ["sh", "-c", "kill $(cat /tmp/munge/munged.pid)"]),
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip

    def run(self, *argv, node: str | None = None, timeout: float = 60,
            cwd: Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """Run a command (``sbatch``, ``scontrol``...) on a node (node0 by default)."""
        return subprocess.run(
            self._exec(node or self.nodes[0], list(argv)), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd or rig.ROOT,
        )  # fmt: skip

    def sbatch(self, script: Path, cwd: Path, env: dict[str, str] | None = None) -> str:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        out = self.run("env", *extra, "sbatch", "--parsable", script, cwd=cwd)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr}")
        return out.stdout.strip().split(";")[0]

    def show(self, job: str) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", job)
        fields = {}
        for token in out.stdout.split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def wait_until(self, job: str, states: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = self.show(job).get("JobState", "UNKNOWN")
        while state not in states and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.show(job).get("JobState", "UNKNOWN")
        return state
