"""Real faults against real jobs: SIGKILL, rank-count changes, signals, a full disk, damage."""

import os
import random
import signal
import subprocess
import time

import pytest

from tests.conftest import BIN, ROOT, heat_sha, run

PARCOMP = BIN / "parcomp"
HEAT = ["jobs/heat2d.py", "--n", "96", "--no-png"]


@pytest.fixture(scope="module")
def reference(heat_reference):
    """The checksum of an uninterrupted 80-step run."""
    return heat_reference(96, 80)


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_random_rank_at_random_step_is_survived(reference, tmp_path, trial):
    rnd = random.Random(1000 + trial)
    ranks, step, victim = rnd.choice([2, 3, 4]), rnd.randint(5, 75), None
    victim = rnd.randrange(ranks)
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            ranks,
            "--restarts",
            "2",
            "--timeout",
            "150",
            *HEAT,
            "--steps",
            "80",
            "--checkpoint-dir",
            tmp_path / "ck",
            "--checkpoint-every",
            "7",
            "--die-at-step",
            step,
            "--die-rank",
            victim,
            "--out",
            tmp_path,
        ],
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/2" in proc.stderr, f"rank {victim} of {ranks} should have died at step {step}"
    assert heat_sha(proc) == reference, (ranks, step, victim)


def test_shrink_after_failure(reference, tmp_path):
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "3",
            "--restarts",
            "1",
            "--shrink",
            "--timeout",
            "150",
            *HEAT,
            "--steps",
            "80",
            "--checkpoint-dir",
            tmp_path / "ck",
            "--checkpoint-every",
            "10",
            "--die-at-step",
            "45",
            "--die-rank",
            "2",
            "--out",
            tmp_path,
        ],
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/1 on 2 ranks" in proc.stderr and "saved on 3 ranks" in proc.stderr
    assert heat_sha(proc) == reference


def test_supervisor_gives_up_after_its_budget(tmp_path):
    script = tmp_path / "always_fails.py"
    script.write_text("import parcomp, sys\nsys.exit(3)\n")
    proc = run(
        [PARCOMP, "run", "-n", "2", "--restarts", "2", "--timeout", "60", script], timeout=90
    )
    assert proc.returncode != 0
    assert "restart 2/2" in proc.stderr and "no restarts left (2 used)" in proc.stderr


def test_restore_across_rank_counts_1_2_3_4(reference, tmp_path):
    ck = tmp_path / "ck"
    for ranks, steps in ((1, 20), (2, 40), (3, 60), (4, 80)):
        proc = run(
            [
                PARCOMP,
                "run",
                "-n",
                ranks,
                "--timeout",
                "120",
                *HEAT,
                "--steps",
                steps,
                "--checkpoint-dir",
                ck,
                "--checkpoint-every",
                "20",
                "--out",
                tmp_path,
            ],
            timeout=150,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        if ranks > 1:
            assert f"resumed at step {steps - 20} on {ranks} ranks" in proc.stderr
    assert heat_sha(proc) == reference


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_preemption_signal_checkpoints_and_resumes(reference, tmp_path, signum):
    ck = tmp_path / "ck"
    argv = [
        str(a)
        for a in (
            PARCOMP,
            "run",
            "-n",
            "2",
            "--timeout",
            "120",
            *HEAT,
            "--steps",
            "80",
            "--checkpoint-dir",
            ck,
            "--checkpoint-every",
            "1000",
            "--step-delay",
            "0.05",
            "--out",
            tmp_path,
        )
    ]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(2.5)  # imports + a few dozen steps
    os.kill(proc.pid, signum)  # parcomp run -> mpiexec -> every rank
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert f"preemption signal {int(signum)} received" in err
    saved = sorted(p.name for p in ck.glob("step-*"))
    assert len(saved) == 1 and 0 < int(saved[0][5:]) < 80, saved
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "3",
            "--timeout",
            "120",
            *HEAT,
            "--steps",
            "80",
            "--checkpoint-dir",
            ck,
            "--checkpoint-every",
            "1000",
            "--out",
            tmp_path,
        ],
        timeout=150,
    )
    assert proc.returncode == 0 and f"resumed at step {int(saved[0][5:])}" in proc.stderr
    assert heat_sha(proc) == reference


def test_full_disk_keeps_previous_checkpoint(small_disk, tmp_path):
    ck = small_disk / "ck"
    base = [
        PARCOMP,
        "run",
        "-n",
        "2",
        "--timeout",
        "120",
        "jobs/heat2d.py",
        "--n",
        "256",
        "--no-png",
        "--checkpoint-dir",
        ck,
        "--checkpoint-every",
        "10",
        "--out",
        tmp_path,
    ]
    proc = run([*base, "--steps", "10"], timeout=150)  # one checkpoint: ~530 KB
    assert proc.returncode == 0, proc.stderr
    full = run([*base, "--steps", "20"], timeout=150)  # the second does not fit
    assert full.returncode != 0
    assert "CheckpointError" in full.stderr and "previous checkpoints kept" in full.stderr
    assert "No space left on device" in full.stderr or "errno = 28" in full.stderr, full.stderr[
        -2000:
    ]
    listing = run([PARCOMP, "inspect", ck], timeout=60)
    assert listing.returncode == 0, listing.stdout
    assert "step-00000010  valid" in listing.stdout and "step-00000020" not in listing.stdout
    assert not [p for p in ck.iterdir() if p.name.startswith(".tmp")], (
        "the failed write was cleaned up"
    )
    again = run([*base, "--steps", "10"], timeout=150)  # and the job still resumes from it
    assert again.returncode == 0 and "resumed at step 10" in again.stderr, again.stderr[-2000:]


def test_inspect_reports_invalid_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            "2",
            "--timeout",
            "120",
            *HEAT,
            "--steps",
            "20",
            "--checkpoint-dir",
            ck,
            "--checkpoint-every",
            "10",
            "--out",
            tmp_path,
        ],
        timeout=150,
    )
    assert proc.returncode == 0
    shard = ck / "step-00000020" / "shard-00001-of-00002.h5"
    with open(shard, "r+b") as fh:
        fh.truncate(100)
    listing = run([PARCOMP, "inspect", ck], timeout=60)
    assert "step-00000020  INVALID" in listing.stdout and "truncated" in listing.stdout
    assert (
        "step-00000010  valid" in listing.stdout and "restore would use: step 10" in listing.stdout
    )
    empty = run([PARCOMP, "inspect", tmp_path / "nope"], timeout=60)
    assert empty.returncode == 2 and "is not a directory" in empty.stderr
