"""Surviving node loss: node-local checkpoints with partner copies, and in-job recovery (ULFM).

Real jobs, real faults: a rank is SIGKILLed mid-run and its emulated node's local storage
is deleted with it.  The relaunch path runs on the MPICH wheel (``parcomp run --restarts``);
the in-job path on the Open MPI 5 wheel in its own venv (``parcomp run --ulfm``), which
``make test`` builds (``make ompi-venv``) and this module builds too when it is missing.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest

from tests.conftest import BIN, ROOT, heat_sha, run

PARCOMP = BIN / "parcomp"
STEPS = 80
HEAT = ["jobs/heat2d.py", "--n", "96", "--steps", str(STEPS), "--no-png"]
HOST = socket.gethostname()


def node(local, k):
    return local / f"node-{HOST}-node{k}"


@pytest.fixture(scope="module")
def reference(heat_reference):
    """The uninterrupted run's checksum."""
    return heat_reference(96, STEPS)


def faulty(tmp_path, die_step, die_rank, wipe=(), every=10, flush_every=3):
    return [
        *HEAT,
        "--out",
        tmp_path / "out",
        "--checkpoint-dir",
        tmp_path / "ck",
        "--local-dir",
        tmp_path / "local",
        "--checkpoint-every",
        every,
        "--flush-every",
        flush_every,
        "--die-at-step",
        die_step,
        "--die-rank",
        die_rank,
        *[a for w in wipe for a in ("--die-wipe", w)],
    ]


# ---------------------------------------------------------------- relaunch path (MPICH)


def test_lost_node_is_rebuilt_from_partner_copies_after_relaunch(reference, tmp_path):
    local = tmp_path / "local"
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "4",
            "--restarts",
            "1",
            "--timeout",
            "150",
            *faulty(tmp_path, 45, 2, wipe=[node(local, 1)], flush_every=100),
        ],
        env={"PARCOMP_EMULATE_NODES": "2"},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/1" in proc.stderr
    # node 1 held ranks 2 and 3; both shards came back from node 0's partner copies
    assert re.search(r"node-local step 40: 2 shard\(s\) rebuilt from partner copies", proc.stderr)
    assert "resumed at step 40" in proc.stderr
    assert heat_sha(proc) == reference


def test_lost_node_and_its_partner_fall_back_to_the_flushed_checkpoint(reference, tmp_path):
    local = tmp_path / "local"
    # 3 nodes of one rank; node 1's copies live on node 2: lose both
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "3",
            "--restarts",
            "1",
            "--timeout",
            "150",
            *faulty(tmp_path, 45, 1, wipe=[node(local, 1), node(local, 2)], flush_every=3),
        ],
        env={"PARCOMP_EMULATE_NODES": "1"},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shard(s) lost with their node and their partner's node" in proc.stderr
    # checkpoints at 10..40 locally; every 3rd (30) flushed to the shared directory
    assert re.search(r"restored step 30 from \S*ck/step-00000030", proc.stderr), proc.stderr[-3000:]
    assert heat_sha(proc) == reference


def test_ulfm_requested_on_mpich_falls_back_to_relaunch(reference, tmp_path):
    proc = run(
        [
            PARCOMP,
            "run",
            "--ulfm",
            "-n",
            "3",
            "--restarts",
            "1",
            "--timeout",
            "150",
            *faulty(tmp_path, 25, 1),
        ],
        env={"PARCOMP_EMULATE_NODES": "1"},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--ulfm: MPICH has no usable ULFM" in proc.stderr
    assert "restart 1/1" in proc.stderr
    assert heat_sha(proc) == reference


# ---------------------------------------------------------------- in-job path (Open MPI ULFM)


@pytest.mark.parametrize(
    "ranks, per_node, victim",
    [(3, 1, 1), (4, 2, 3), (4, 1, 0)],
    ids=["3-ranks-kill-1", "4-ranks-2-per-node-kill-3", "4-ranks-kill-rank-0"],
)
def test_ulfm_job_survives_sigkill_inside_the_same_mpirun(
    reference, ompi_venv, tmp_path, ranks, per_node, victim
):
    proc = run(
        [
            ompi_venv / "bin" / "parcomp",
            "run",
            "--ulfm",
            "-n",
            ranks,
            "--timeout",
            "150",
            *faulty(tmp_path, 45, victim),
        ],
        env={"PARCOMP_EMULATE_NODES": str(per_node)},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/" not in proc.stderr, "the job must recover without a relaunch"
    assert f"lost world rank(s) [{victim}] (MPI error class" in proc.stderr, proc.stderr[-3000:]
    assert f"shrunk to {ranks - 1} ranks" in proc.stderr
    assert f"resumed at step 40 on {ranks - 1} ranks" in proc.stderr
    assert f"the job lost world rank(s) [{victim}] and recovered in-job" in proc.stderr
    assert f"on {ranks - 1} ranks" in proc.stdout
    assert heat_sha(proc) == reference


def test_open_mpi_without_ulfm_relaunches(reference, ompi_venv, tmp_path):
    proc = run(
        [
            ompi_venv / "bin" / "parcomp",
            "run",
            "-n",
            "3",
            "--restarts",
            "1",
            "--timeout",
            "150",
            *faulty(tmp_path, 45, 1),
        ],
        env={"PARCOMP_EMULATE_NODES": "1"},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/1" in proc.stderr
    assert "resumed at step 40 on 3 ranks" in proc.stderr
    assert heat_sha(proc) == reference


def test_info_says_ulfm_is_available_with_open_mpi(ompi_venv):
    proc = run([ompi_venv / "bin" / "parcomp", "info"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "MPI library:   Open MPI 5" in proc.stdout
    assert "ULFM:          available with `parcomp run --ulfm`" in proc.stdout
    assert "WARNING" not in proc.stdout, proc.stdout


def test_full_node_local_disk_keeps_the_previous_checkpoint(small_disk, tmp_path):
    local = small_disk / "local"
    base = [
        PARCOMP,
        "run",
        "-n",
        "2",
        "--timeout",
        "120",
        "jobs/heat2d.py",
        "--n",
        "160",
        "--no-png",
        "--out",
        tmp_path / "out",
        "--checkpoint-dir",
        tmp_path / "ck",
        "--local-dir",
        local,
        "--checkpoint-every",
        "10",
    ]
    env = {"PARCOMP_EMULATE_NODES": "1"}
    first = run([*base, "--steps", "10"], env=env, timeout=150)  # 4 files of ~100 KB
    assert first.returncode == 0, first.stderr[-3000:]
    full = run([*base, "--steps", "30"], env=env, timeout=150)  # the second does not fit
    assert full.returncode != 0
    assert (
        f"CheckpointError: node-local checkpoint of step 20 in {local} failed; previous "
        "checkpoints kept" in full.stderr
    ), full.stderr[-3000:]
    assert "No space left on device" in full.stderr
    for k in (0, 1):
        names = sorted(p.name for p in node(local, k).iterdir() if p.name != ".parcomp-lease")
        assert names == ["step-00000010"], names  # intact, and no temp folder left
    again = run([*base, "--steps", "10"], env=env, timeout=150)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restored step 10 from the node-local tier" in again.stderr


def test_inspect_a_node_local_tier(tmp_path):
    local = tmp_path / "local"
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "3",
            "--timeout",
            "150",
            *HEAT,
            "--out",
            tmp_path / "out",
            "--checkpoint-dir",
            tmp_path / "ck",
            "--local-dir",
            local,
            "--checkpoint-every",
            "40",
        ],
        env={"PARCOMP_EMULATE_NODES": "1"},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok = run([PARCOMP, "inspect", local], timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 node folder(s) visible" in ok.stdout
    assert (
        "step-00000080  restorable  3 shards saved on 3 ranks, in 3 node folder(s); good copies per shard: 2"
        in ok.stdout
    )
    for k in (1, 2):  # node 1's shard had its only other copy on node 2
        shutil.rmtree(node(local, k) / "step-00000080")
    bad = run([PARCOMP, "inspect", local], timeout=60)
    assert (
        "step-00000080  NOT RESTORABLE" in bad.stdout
        and "NO good copy of shard-00001-of-00003.h5" in bad.stdout
    )
    assert "the node-local tier can supply step 40" in bad.stdout, bad.stdout


@pytest.fixture
def uts_hosts(tmp_path):
    """Two "hosts" on this machine: Hydra starts each proxy in its own UTS namespace."""
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create UTS namespaces here (needs root): {probe.stderr.strip()}")
    hosts = tmp_path / "hosts"
    hosts.write_text("pcnode-a:2\npcnode-b:2\n")
    launcher = ROOT / "tests" / "scripts" / "uts_launcher.sh"
    return f"-f {hosts} -launcher ssh -launcher-exec {launcher}"


def test_node_identity_from_real_hostnames_survives_a_lost_host(reference, uts_hosts, tmp_path):
    local = tmp_path / "local"
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "4",
            "--restarts",
            "1",
            "--timeout",
            "150",
            *faulty(tmp_path, 45, 3, wipe=[local / "node-pcnode-b"], flush_every=100),
        ],
        env={"PARCOMP_MPIEXEC_ARGS": uts_hosts},
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 nodes (2, 2 ranks)" in proc.stderr  # from the hostnames, no override
    assert sorted(p.name for p in local.iterdir()) == ["node-pcnode-a", "node-pcnode-b"]
    assert "restart 1/1" in proc.stderr
    assert re.search(r"node-local step 40: 2 shard\(s\) rebuilt from partner copies", proc.stderr)
    assert "(from the partner copy on pcnode-a)" in proc.stderr
    assert heat_sha(proc) == reference


def ulfm_heat(ompi_venv, tmp_path, *faults):
    """heat2d on 4 ranks (one per emulated node) under --ulfm; rank 1 dies at step 45."""
    return run(
        [
            ompi_venv / "bin" / "parcomp",
            "run",
            "--ulfm",
            "-n",
            "4",
            "--timeout",
            "150",
            *faulty(tmp_path, 45, 1),
            *faults,
        ],
        env={"PARCOMP_EMULATE_NODES": "1"},
        timeout=200,
    )


def test_ulfm_job_survives_two_failures_one_after_the_other(reference, ompi_venv, tmp_path):
    proc = ulfm_heat(ompi_venv, tmp_path, "--die", "65:2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/" not in proc.stderr
    assert "resumed at step 40 on 3 ranks" in proc.stderr
    assert "resumed at step 60 on 2 ranks" in proc.stderr
    assert "lost world rank(s) [1] and recovered in-job on 3 ranks" in proc.stderr
    assert "lost world rank(s) [2] and recovered in-job on 2 ranks" in proc.stderr
    assert heat_sha(proc) == reference


def test_ulfm_job_survives_a_second_failure_during_recovery(reference, ompi_venv, tmp_path):
    """Rank 1 dies at step 45; as the three survivors regroup and start restoring, rank 3
    dies too: they recover again, on two ranks, from the node-local tier (rank 1's shard
    from its partner copy on node 2, rank 3's from node 0), with the uninterrupted answer."""
    proc = ulfm_heat(ompi_venv, tmp_path, "--die-in-recovery", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/" not in proc.stderr
    assert "lost world rank(s) [1] (MPI error class" in proc.stderr, proc.stderr[-3000:]
    assert "lost world rank(s) [3] (MPI error class" in proc.stderr, proc.stderr[-3000:]
    assert "resumed at step 40 on 2 ranks" in proc.stderr, proc.stderr[-3000:]
    assert "rebuilt from partner copies" in proc.stderr
    assert heat_sha(proc) == reference
