"""Diagnostics and process hygiene across nodes: a hang report holds the stack of every
rank on every node (ranks elsewhere write theirs into the shared watchdog folder when
asked), within the hang delay plus 5 s; ``kill -QUIT`` prints them without stopping the
job; Ctrl-C and SIGTERM end the ranks on every node; ``SIGKILL`` of ``parcomp run`` leaves
no process on any node.  (Before this work the report listed the ranks of other nodes
as "no stack", and multi-node jobs could not be started by ``parcomp run``.)"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import PARCOMP, ROOT, start, supervisor_pid, wait_clean

HANG = ROOT / "tests/cluster/scripts/hang.py"
HOSTS = "node0,node1,node2,node3"
NODES = HOSTS.split(",")


def hang_job(shared, *options):
    proc = start("node0", [PARCOMP, "run", "-n", 4, "--hosts", HOSTS, *options, HANG],
                 cwd=shared)  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    return proc, out, err


def wait_for(lines, text, within=60.0):
    deadline = time.monotonic() + within
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline, f"{text!r} never came:\n{''.join(lines)[-3000:]}"
        time.sleep(0.01)
    return time.monotonic()


def assert_every_stack(err: str) -> None:
    assert "--- ranks 0-1, 3: in allreduce" in err, err[-4000:]
    assert "--- rank 2: outside parcomp" in err
    assert "blocked at" in err and "in stuck_here" in err
    assert "no stack" not in err


@pytest.mark.parametrize("how", ["--hang-after", "--timeout"])
def test_a_hang_reports_every_ranks_stack_on_every_node(cluster, shared, how):
    options = ("--hang-after", "5", "--timeout", "60") if how == "--hang-after" else (
        "--timeout", "12")  # fmt: skip
    proc, out, err = hang_job(shared, *options)
    began = wait_for(out, "first reduction done")
    proc.wait(timeout=90)
    took = time.monotonic() - began
    assert proc.returncode == 124
    assert_every_stack("".join(err))
    assert took <= (5 if how == "--hang-after" else 12) + 5 + 2, took
    assert not wait_clean(NODES, within=10)


def test_sigquit_prints_every_stack_and_the_job_goes_on(cluster, shared):
    proc, out, err = hang_job(shared, "--timeout", "60")
    wait_for(out, "first reduction done")
    time.sleep(1)
    os.kill(supervisor_pid(proc), signal.SIGQUIT)
    wait_for(err, "blocked at", within=10)
    time.sleep(1)
    assert proc.poll() is None  # still running
    assert_every_stack("".join(err))
    os.kill(supervisor_pid(proc), signal.SIGTERM)
    proc.wait(timeout=30)
    assert not wait_clean(NODES, within=10)


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 75)])
def test_ctrl_c_and_sigterm_reach_every_node(cluster, shared, signum, status):
    """SIGTERM is a preemption to parcomp run (Slurm's signal): status 75, for a requeue."""
    proc, out, err = hang_job(shared, "--timeout", "60")
    wait_for(out, "first reduction done")
    os.kill(supervisor_pid(proc), signum)
    proc.wait(timeout=30)
    assert proc.returncode == status, "".join(err)[-3000:]
    assert not wait_clean(NODES, within=10)


def test_sigkill_of_the_supervisor_leaves_no_process_on_any_node(cluster, shared):
    proc, out, _err = hang_job(shared, "--timeout", "60")
    wait_for(out, "first reduction done")
    os.kill(supervisor_pid(proc), signal.SIGKILL)
    proc.wait(timeout=30)
    assert not wait_clean(NODES, within=15)
