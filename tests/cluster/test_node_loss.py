"""Losing a node for real: every process of it killed at once and its /tmp and /dev/shm
gone (the node-local checkpoint tier with it), at chosen and at random moments.
``parcomp run --restarts`` probes the hosts, relaunches on the survivors with as many
ranks as they hold (N -> M) and restores from the partner copies: the uninterrupted
answer.  Two adjacent nodes lost (a shard and its copy) fall back to the shared tier,
with a message saying so.  The many-trial campaign is ``bench/cluster_campaign.py``."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import PARCOMP, ROOT, found, on, rig, start, wait_clean

HOSTS = "node0,node1,node2,node3"
ARGS = ("--n", "256", "--steps", "1200", "--step-delay", "0.004")


def heat_args(shared):
    return (*ARGS, "--local-dir", "/dev/shm/job", "--checkpoint-dir", shared / "ckpt",
            "--checkpoint-every", "40", "--flush-every", "5", "--out", shared / "out",
            "--no-png")  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import subprocess

    out = tmp_path_factory.mktemp("ref")
    proc = subprocess.run(
        [PARCOMP, "run", "-n", "1", "--timeout", "120", "jobs/heat2d.py", *ARGS, "--out", out,
         "--no-png"], capture_output=True, text=True, timeout=150, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return found(r"sha256 = (\w+)", proc.stdout)


@pytest.fixture
def nodes_back(cluster):
    yield
    for node in cluster["nodes"]:
        rig.revive(node)


class Job:
    """A heat2d job started on node0; its stderr read as it comes."""

    def __init__(self, shared, restarts=2, hosts=HOSTS, ranks=4):
        self.proc = start(
            "node0",
            [PARCOMP, "run", "-n", ranks, "--hosts", hosts, "--restarts", restarts,
             "--timeout", "150", ROOT / "jobs/heat2d.py", *heat_args(shared)],
            cwd=shared,
        )  # fmt: skip
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern, within=60.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            time.sleep(0.01)
        raise AssertionError(f"{pattern!r} never appeared:\n{''.join(self.lines)[-3000:]}")

    def finish(self, within=170):
        out = self.proc.stdout.read()
        self.proc.wait(timeout=within)
        self.reader.join(5)
        return self.proc.returncode, out, "".join(self.lines)


def test_a_lost_node_is_replaced_by_partner_copies_on_fewer_ranks(shared, reference, nodes_back):
    job = Job(shared)
    job.wait_for(r"node-local checkpoint of step 240 committed")
    rig.kill_node("node2")
    status, out, err = job.finish()
    assert status == 0, err[-3000:]
    assert found(r"sha256 = (\w+)", out) == reference
    assert "host(s) node2 unreachable: relaunching on node0, node1, node3 with 3 rank(s)" in err
    assert re.search(r"shard-00002-of-00004\.h5 \(from the partner copy on node3\)", err), err
    assert "on 3 ranks" in out


def test_two_adjacent_nodes_lost_fall_back_to_the_shared_tier(shared, reference, nodes_back):
    job = Job(shared)
    job.wait_for(r"checkpoint of step \d+ flushed to")
    job.wait_for(r"node-local checkpoint of step 280 committed")
    rig.kill_node("node1")
    rig.kill_node("node2")  # node1's shard and its copy (on node2) are both gone
    status, out, err = job.finish()
    assert status == 0, err[-3000:]
    assert found(r"sha256 = (\w+)", out) == reference
    assert "relaunching on node0, node3 with 2 rank(s)" in err
    assert re.search(r"fell back to the shared tier: step \d+ restored from", err), err[-3000:]


@pytest.mark.parametrize("trial", range(3))
def test_a_node_lost_at_a_random_moment_gives_the_answer_or_a_clear_error(
    shared, reference, nodes_back, trial
):
    """Mid-step, mid-checkpoint, mid-partner-exchange or mid-flush, as the moment falls."""
    rnd = random.Random()
    node = rnd.choice(["node1", "node2", "node3"])
    job = Job(shared)
    job.wait_for(r"node-local checkpoints in /dev/shm/job")
    time.sleep(rnd.uniform(0.0, 6.0))
    rig.kill_node(node)
    status, out, err = job.finish()
    if status == 0:
        assert found(r"sha256 = (\w+)", out) == reference
    else:  # never a wrong answer; a clear message
        assert "sha256" not in out
        assert "parcomp run:" in err, err[-3000:]
    assert not wait_clean(["node0"] + [n for n in ("node1", "node2", "node3") if n != node])


def ompi_parcomp():
    venv = Path(os.environ.get("PARCOMP_OMPI_VENV", ROOT / ".venv-ompi"))
    if not (venv / "bin" / "parcomp").exists():
        pytest.skip("no Open MPI venv (make ompi-venv)")
    return venv / "bin" / "parcomp"


def test_ulfm_recovers_in_job_from_a_rank_lost_on_another_node(shared, reference):
    """A rank on node2 killed and node2's node-local folder wiped: the survivors on the
    other nodes shrink, rebuild its shard from the copy on node3 and finish in-job."""
    proc = on("node0", [ompi_parcomp(), "run", "--ulfm", "-n", 4, "--hosts", HOSTS,
                        "--timeout", 150, ROOT / "jobs/heat2d.py", *heat_args(shared),
                        "--die-at-step", 300, "--die-rank", 2, "--die-wipe", "/dev/shm/job"],
              timeout=170, cwd=shared)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert found(r"sha256 = (\w+)", proc.stdout) == reference
    assert "the job lost world rank(s) [2] and recovered in-job on 3 ranks (ULFM)" in proc.stderr
    assert "(from the partner copy on node3)" in proc.stderr


def test_ulfm_cannot_survive_a_lost_node_and_a_relaunch_does(shared, reference, nodes_back):
    """Open MPI 5.0's runtime ends the job when it loses a node's daemon ("PRTE has lost
    communication with a remote daemon ... We cannot recover"): --restarts then relaunches
    on the survivors, whose ranks from the first attempt died with their daemons."""
    job_argv = [ompi_parcomp(), "run", "--ulfm", "--restarts", 2, "-n", 4, "--hosts", HOSTS,
                "--timeout", 150, ROOT / "jobs/heat2d.py", *heat_args(shared)]  # fmt: skip
    proc = start("node0", job_argv, cwd=shared)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while not any("checkpoint of step 240 committed" in line for line in err):
        assert time.monotonic() < deadline, "".join(err)[-3000:]
        time.sleep(0.01)
    rig.kill_node("node2")
    out = proc.stdout.read()
    proc.wait(timeout=170)
    reader.join(5)
    text = "".join(err)
    assert proc.returncode == 0, text[-3000:]
    assert found(r"sha256 = (\w+)", out) == reference
    assert "host(s) node2 unreachable: relaunching on node0, node1, node3 with 3 rank(s)" in text
    assert not wait_clean(["node0", "node1", "node3"], within=10)
