"""A private single-node Slurm for the tests: munged + slurmctld -D + slurmd -D.

Installs Debian's slurmctld, slurmd, slurm-client and munge with apt when running as root
and they are missing.  Everything lives in one temporary folder: its own munge key and
socket, non-default ports, proctrack/linuxproc, task/none, no cgroups, and
``SlurmdParameters=config_overrides`` so the node can declare more CPUs than it has.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


def ensure_installed() -> str | None:
    """Install Slurm if needed; return a reason to skip, or None when ready."""
    if all(shutil.which(cmd) for cmd in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"apt-get could not install Slurm: {done.stderr.strip()[-300:]}"
    return None


class Cluster:
    """Start with :meth:`start`, submit with :meth:`sbatch`, stop with :meth:`stop`."""

    def __init__(self, folder: Path, cpus: int = 8) -> None:
        self.folder = folder
        self.cpus = cpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.procs: list[subprocess.Popen] = []

    def _write_conf(self) -> None:
        f = self.folder
        (f / "state").mkdir()
        (f / "spool").mkdir()
        self.conf.write_text(f"""ClusterName=parcomptest
SlurmctldHost={self.host}
SlurmctldPort=16917
SlurmdPort=16918
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={f}/munge.sock
CredType=cred/munge
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/slurmctld.log
SlurmdLogFile={f}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName={self.host} CPUs={self.cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 60) -> None:
        f = self.folder
        self._write_conf()
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(
            [
                "munged",
                f"--key-file={key}",
                f"--socket={f}/munge.sock",
                f"--pid-file={f}/munged.pid",
                f"--log-file={f}/munged.log",
                f"--seed-file={f}/munge.seed",
                "--force",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for daemon in ("slurmctld", "slurmd"):
            log = open(f / f"{daemon}.out", "w")
            self.procs.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(self.conf)],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True
            )
            if "idle" in out.stdout:
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"Slurm did not come up in {timeout} s: {(f / 'slurmctld.log').read_text()[-2000:]}"
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        pid = self.folder / "munged.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in argv], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def sbatch(self, script: Path, cwd: Path, env: dict[str, str] | None = None) -> str:
        out = subprocess.run(
            ["sbatch", "--parsable", str(script)],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr}")
        return out.stdout.strip().split(";")[0]

    def state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", job)
        for token in out.stdout.split():
            if token.startswith("JobState="):
                return token.split("=", 1)[1]
        return "UNKNOWN"

    def wait_until(self, job: str, states: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = self.state(job)
        while state not in states and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.state(job)
        return state
