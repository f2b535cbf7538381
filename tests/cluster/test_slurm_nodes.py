"""Slurm across the rig's nodes: slurmctld on node0 and one slurmd per node
(``slurm_rig.py``), jobs rendered by ``parcomp slurm`` and submitted with ``sbatch``.

Inside a job, Hydra starts its proxies on the allocated nodes through ``srun`` (the slurmd
of each node logs the step's launch); a USR1 preemption checkpoints, exits 75 and requeues,
and the requeued run, on two other nodes, resumes and gives the uninterrupted answer."""

from __future__ import annotations

import re
import time

import pytest
from conftest import PARCOMP, ROOT, on
from slurm_rig import RigSlurm

from tests.slurm.cluster import ensure_installed

pytestmark = pytest.mark.timeout(400)
NODES = ["node0", "node1", "node2", "node3"]


@pytest.fixture(scope="module")
def slurm(cluster):
    why = ensure_installed()
    if why:
        pytest.skip(why)
    s = RigSlurm(cluster, NODES)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(heat_reference):
    return heat_reference(96, 80)


def submit(slurm, shared, ntasks, nodes, *job_args):
    script = shared / "job.sbatch"
    made = on("node0", [PARCOMP, "slurm", "-o", script, "--ntasks", ntasks, "--nodes", nodes,
                        "--time", "00:05:00", "--signal-lead", 60, "--log",
                        shared / "job-%j.out", "jobs/heat2d.py", "--n", 96, "--steps", 80,
                        "--no-png", "--out", shared / "out", "--checkpoint-dir", shared / "ck",
                        *job_args])  # fmt: skip
    assert made.returncode == 0, made.stderr
    job = slurm.sbatch(script, ROOT)
    return job, shared / f"job-{job}.out"


def launched_on(slurm, job: str) -> list[str]:
    """The nodes whose slurmd launched a step of ``job`` (Hydra's proxies, through srun)."""
    out = []
    for node in NODES:
        log = slurm.folder / f"slurmd-{node}.log"
        if log.exists() and re.search(rf"launch task StepId={job}\.\d+ ", log.read_text()):
            out.append(node)
    return out


def test_a_job_on_all_four_nodes_gives_the_one_rank_answer(slurm, shared, reference):
    job, log = submit(slurm, shared, 4, 4, "--checkpoint-every", 20)
    state = slurm.wait_until(job, ("COMPLETED", "FAILED"), 150)
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:]
    assert f"sha256 = {reference}" in text and "on 4 ranks" in text
    assert slurm.show(job)["NodeList"] == "node[0-3]"
    assert launched_on(slurm, job) == NODES  # one proxy per node, started by srun


def test_usr1_preemption_requeues_onto_other_nodes_with_the_same_answer(slurm, shared, reference):
    job, log = submit(slurm, shared, 4, 2, "--checkpoint-every", 1000, "--step-delay", 0.1)
    assert slurm.wait_until(job, ("RUNNING",), 60) == "RUNNING"
    first = slurm.show(job)["NodeList"]
    assert first == "node[0-1]"
    deadline = time.monotonic() + 60
    while "step 8/80" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the job took no step"
        time.sleep(0.2)
    sent = slurm.run("scancel", "--signal=USR1", "--batch", job)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 90
    while slurm.show(job).get("Restarts", "0") == "0" or slurm.show(job)["JobState"] != "PENDING":
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    # the nodes it ran on are taken away (as a preempting job would take them)
    drained = slurm.run("scontrol", "update", "nodename=node[0-1]", "state=drain",
                        "reason=parcomp-test")  # fmt: skip
    assert drained.returncode == 0, drained.stderr
    try:
        time.sleep(2)  # a release within the requeue's second gets "Job credential revoked"
        slurm.run("scontrol", "update", f"jobid={job}", "StartTime=now")
        state = slurm.wait_until(job, ("COMPLETED", "FAILED", "CANCELLED"), 150)
        text = log.read_text()
        assert state == "COMPLETED", text[-3000:]
        assert slurm.show(job)["NodeList"] == "node[2-3]"
        assert "preemption signal 10 received" in text and "requeued run 1" in text
        restored = re.search(r"resumed at step (\d+) on 4 ranks", text) or re.search(
            r"restored step (\d+)", text
        )
        assert restored and 8 <= int(restored.group(1)) < 80, text[-3000:]
        assert f"sha256 = {reference}" in text
        assert text.count("sha256 = ") == 1  # the preempted run printed no answer
        assert launched_on(slurm, job) == NODES  # both runs' proxies through srun
    finally:
        slurm.run("scontrol", "update", "nodename=node[0-1]", "state=resume")
