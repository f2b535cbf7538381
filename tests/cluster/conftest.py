"""The cluster rig for the tests in this folder: 4 nodes, 2 Gbit/s links, built once per
session and removed at its end (``tests/cluster/cluster.py``).  Not root, or no
``ip``/``unshare``/``nsenter``: every test here is skipped with the reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cluster as rig  # noqa: E402

ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent
PARCOMP = BIN / "parcomp"
NODES = 4


@pytest.fixture(scope="session")
def cluster():
    why = rig.can_run()
    if why:
        pytest.skip(why)
    rig.down()
    state = rig.up(NODES)
    yield state
    rig.down()


@pytest.fixture
def shared(cluster):
    """A fresh folder on the cluster's shared file system (the same path on every node)."""
    path = Path(cluster["shared"]) / f"t-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def on(node: str, argv, timeout: float = 120, cwd: Path | str | None = None, env=None):
    """Run ``argv`` on ``node`` (from the host, entering its namespaces); completed process."""
    cmd = [sys.executable, str(HERE / "cluster.py"), "exec", node, *map(str, argv)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def start(node: str, argv, cwd: Path | str | None = None, env=None) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE / "cluster.py"), "exec", node, *map(str, argv)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or ROOT,
        env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def parcomp_run(hosts: str, ranks: int, script, *args, cwd, timeout=150, extra=()):
    """``parcomp run`` of a job on node0 (the first node of the allocation) over ``hosts``."""
    argv = [PARCOMP, "run", "-n", ranks, "--hosts", hosts, "--timeout", timeout - 20, *extra,
            script, *args]  # fmt: skip
    return on("node0", argv, timeout=timeout, cwd=cwd)


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, text[-3000:]
    return match.group(1)


def node_processes(node: str) -> list[str]:
    """Every process on ``node`` other than its first one and the listing itself."""
    proc = on(node, ["ps", "-eo", "pid=,args="], timeout=30)
    out = []
    for line in proc.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid == "1" or args.startswith(("ps -eo", "nsenter")):
            continue
        out.append(line.strip())
    return out


def wait_clean(nodes, within: float = 15.0) -> dict[str, list[str]]:
    """The processes left on ``nodes`` after waiting up to ``within`` seconds for none."""
    deadline = time.monotonic() + within
    while True:
        left = {n: node_processes(n) for n in nodes}
        if not any(left.values()) or time.monotonic() > deadline:
            return {n: p for n, p in left.items() if p}
        time.sleep(0.5)


def cluster_env() -> dict:
    return dict(os.environ)


def supervisor_pid(proc: subprocess.Popen, within: float = 20.0) -> int:
    """The host PID of the ``parcomp run`` that ``start`` launched on a node."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for pid in rig.descendants(proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"parcomp") for a in argv[:2]) and b"run" in argv[1:3]:
                return pid
        time.sleep(0.05)
    raise AssertionError("parcomp run did not start")
