"""parcomp's Slurm batch scripts against a real slurmctld/slurmd started by the tests."""

import re
import shlex
import time

import pytest

from parcomp.launch.slurm import SlurmOptions, render_sbatch
from parcomp.runtime.errors import ConfigError
from tests.conftest import BIN, ROOT, run
from tests.slurm.cluster import Cluster, ensure_installed

PARCOMP = BIN / "parcomp"
pytestmark = pytest.mark.timeout(330)  # requeue cycles take minutes; a hang still fails
GOLDEN = {
    "slurm/heat2d.sbatch": [
        "--ntasks",
        "4",
        "--time",
        "00:30:00",
        "jobs/heat2d.py",
        "--n",
        "4096",
        "--steps",
        "5000",
        "--checkpoint-dir",
        "out/heat2d-ckpt",
        "--checkpoint-seconds",
        "300",
        "--out",
        "out/heat2d",
    ],
    "slurm/pi.sbatch": [
        "--ntasks",
        "4",
        "--time",
        "00:20:00",
        "jobs/pi.py",
        "--samples",
        "4000000000",
        "--checkpoint-dir",
        "out/pi-ckpt",
        "--every-seconds",
        "30",
    ],
    "slurm/kmeans.sbatch": [
        "--ntasks",
        "4",
        "--time",
        "00:20:00",
        "jobs/kmeans.py",
        "--points",
        "20000000",
        "--checkpoint-dir",
        "out/kmeans-ckpt",
    ],
}


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_templates_match_golden_files(path):
    out = run([PARCOMP, "slurm", *GOLDEN[path]], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / path).read_text(), f"regenerate with: parcomp slurm -o {path} ..."


def test_rendered_script_has_the_required_parts():
    text = render_sbatch(
        SlurmOptions("jobs/x.py", ("--a", "b c"), ntasks=3, time="5", signal_lead=30)
    )
    for needle in (
        "#SBATCH --ntasks=3",
        "#SBATCH --time=5",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@30",
        '-m parcomp run -n "$SLURM_NTASKS"',
        "trap forward USR1 TERM",
        'kill -0 "$child"',
        'scontrol requeue "$SLURM_JOB_ID"',
        "SLURM_RESTART_COUNT",
        "--numba-cache DIR",
        "PARCOMP_EXPECT_NTASKS",
        "jobs/x.py --a 'b c'",
    ):
        assert needle in text, needle


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ntasks", 0, "ntasks must be a positive integer"),
        ("time", "soon", "time 'soon'"),
        ("script", "job.sh", "must be a Python file"),
        ("name", "a b", "job name 'a b'"),
    ],
)
def test_bad_options(field, value, message):
    kwargs = {"script": "jobs/pi.py", field: value}
    with pytest.raises(ConfigError, match=re.escape(message)):
        render_sbatch(SlurmOptions(**kwargs))


# ----------------------------------------------------------------------------- real Slurm
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    t0 = time.monotonic()
    c.start()
    print(f"private Slurm up in {time.monotonic() - t0:.1f} s")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def reference(heat_reference):
    return heat_reference(96, 80)


def submit(cluster, tmp_path, ntasks, time_limit, lead, *job_args, env=None):
    script = tmp_path / "job.sbatch"
    log = tmp_path / "job-%j.out"
    argv = [
        PARCOMP,
        "slurm",
        "-o",
        script,
        "--ntasks",
        ntasks,
        "--time",
        time_limit,
        "--signal-lead",
        lead,
        "--log",
        log,
        "jobs/heat2d.py",
        "--n",
        "96",
        "--steps",
        "80",
        "--no-png",
        "--out",
        tmp_path / "out",
        "--checkpoint-dir",
        tmp_path / "ck",
        *job_args,
    ]
    made = run(argv, timeout=60)
    assert made.returncode == 0, made.stderr
    job = cluster.sbatch(script, ROOT, env=env)
    return job, tmp_path / f"job-{job}.out"


def release_until_done(cluster, job, timeout=240):
    """Requeued jobs wait ~120 s (BeginTime); release each time until the job ends."""
    deadline = time.monotonic() + timeout
    requeues = 0
    while time.monotonic() < deadline:
        state = cluster.wait_until(
            job,
            ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PENDING"),
            deadline - time.monotonic(),
        )
        if state != "PENDING":
            return state, requeues
        if "Restarts=0" in cluster.run("scontrol", "show", "job", job).stdout:
            time.sleep(0.5)  # not started yet
            continue
        requeues += 1
        time.sleep(2)  # a release within the requeue's second gets "Job credential revoked"
        cluster.run("scontrol", "update", f"jobid={job}", "StartTime=now")
        cluster.wait_until(job, ("RUNNING", "COMPLETED", "FAILED"), 30)
    return cluster.state(job), requeues


def test_job_completes_with_the_right_result(cluster, reference, tmp_path):
    job, log = submit(cluster, tmp_path, 3, "00:05:00", 60, "--checkpoint-every", "20")
    assert cluster.wait_until(job, ("COMPLETED", "FAILED"), 120) == "COMPLETED", log.read_text()[
        -3000:
    ]
    text = log.read_text()
    assert f"sha256 = {reference}" in text and "on 3 ranks" in text


def test_sigkill_of_a_rank_restarts_inside_the_allocation(cluster, reference, tmp_path):
    job, log = submit(
        cluster,
        tmp_path,
        3,
        "00:05:00",
        60,
        "--checkpoint-every",
        "10",
        "--die-at-step",
        "33",
        "--die-rank",
        "1",
    )
    assert cluster.wait_until(job, ("COMPLETED", "FAILED"), 180) == "COMPLETED", log.read_text()[
        -3000:
    ]
    text = log.read_text()
    assert "restart 1/2 in the allocation" in text and "restored step 30" in text
    assert f"sha256 = {reference}" in text


def test_scancel_usr1_checkpoints_requeues_and_completes(cluster, reference, tmp_path):
    job, log = submit(
        cluster, tmp_path, 2, "00:05:00", 60, "--checkpoint-every", "1000", "--step-delay", "0.05"
    )
    assert cluster.wait_until(job, ("RUNNING",), 60) == "RUNNING"
    time.sleep(3)  # let it take some steps
    sent = cluster.run("scancel", "--signal=USR1", "--batch", job)
    assert sent.returncode == 0, sent.stderr
    state, requeues = release_until_done(cluster, job)
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:]
    assert requeues >= 1 and "preemption signal 10 received" in text and "requeued run 1" in text
    assert f"sha256 = {reference}" in text


def test_walltime_signal_checkpoints_requeues_and_completes(cluster, reference, tmp_path):
    # 80 steps x 0.4 s = 32 s of work under a 1-minute limit whose USR1 comes 50 s early
    job, log = submit(
        cluster, tmp_path, 2, "1", 50, "--checkpoint-every", "1000", "--step-delay", "0.4"
    )
    state, requeues = release_until_done(cluster, job, timeout=300)
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:]
    assert requeues >= 1 and "preemption signal 10 received" in text
    assert f"sha256 = {reference}" in text


def test_srun_without_pmi2_fails_clearly(cluster, tmp_path):
    script = tmp_path / "nopmi.sbatch"
    py = BIN / "python"
    script.write_text(f"""#!/bin/bash
#SBATCH --ntasks=3
#SBATCH --time=00:02:00
#SBATCH --output={tmp_path}/nopmi-%j.out
export PARCOMP_EXPECT_NTASKS=$SLURM_NTASKS
srun {shlex.quote(str(py))} -m parcomp.launch.runner jobs/pi.py --samples 1000
""")
    job = cluster.sbatch(script, ROOT)
    assert cluster.wait_until(job, ("COMPLETED", "FAILED"), 120) == "FAILED"
    text = (tmp_path / f"nopmi-{job}.out").read_text()
    assert "asked for 3 ranks but MPI reports a world of 1" in text and "--mpi=pmi2" in text


def test_ulfm_job_recovers_inside_the_slurm_allocation(cluster, reference, ompi_venv, tmp_path):
    """Open MPI's mpirun inside Slurm (it then needs --bind-to none): in-job recovery."""
    job, log = submit(
        cluster,
        tmp_path,
        3,
        "00:05:00",
        60,
        "--checkpoint-every",
        "10",
        "--local-dir",
        tmp_path / "local",
        "--die-at-step",
        "33",
        "--die-rank",
        "1",
        env={
            "PARCOMP_PYTHON": str(ompi_venv / "bin" / "python"),
            "PARCOMP_ULFM": "1",
            "PARCOMP_EMULATE_NODES": "1",
        },
    )
    assert cluster.wait_until(job, ("COMPLETED", "FAILED"), 180) == "COMPLETED", log.read_text()[
        -3000:
    ]
    text = log.read_text()
    assert "lost world rank(s) [1]" in text and "recovered in-job on 2 ranks" in text, text[-3000:]
    assert "restart 1/2" not in text and "resumed at step 30 on 2 ranks" in text
    assert f"sha256 = {reference}" in text


def test_a_preempted_ensemble_map_commits_requeues_and_resumes(cluster, tmp_path):
    """jobs/sweep.py (resumable map of heat2d runs, ranks_per_task=1) under the Slurm
    template: USR1 mid-sweep commits the finished runs (the running ones checkpoint
    themselves), exits 75, requeues; the requeued job resumes to the same table as an
    uninterrupted sweep."""
    sweep = ["jobs/sweep.py", "--alphas", "0.05,0.1,0.15,0.2,0.25,0.12", "--ranks-per-task",
             "1", "--n", "48", "--steps", "3000", "--every", "100"]  # fmt: skip
    whole = run([PARCOMP, "run", "-n", "2", "--timeout", "150", *sweep, "--out",
                 tmp_path / "whole"], timeout=180)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-2000:]
    script, log = tmp_path / "sweep.sbatch", tmp_path / "sweep-%j.out"
    made = run([PARCOMP, "slurm", "-o", script, "--ntasks", "2", "--time", "00:05:00",
                "--signal-lead", "60", "--log", log, *sweep, "--out", tmp_path / "out"],
               timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    job = cluster.sbatch(script, ROOT)
    assert cluster.wait_until(job, ("RUNNING",), 60) == "RUNNING"
    runs = tmp_path / "out" / "runs"
    deadline = time.monotonic() + 90
    while not (runs.exists() and any(runs.glob("*/step-*"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    sent = cluster.run("scancel", "--signal=USR1", "--batch", job)
    assert sent.returncode == 0, sent.stderr
    state, requeues = release_until_done(cluster, job)
    text = (tmp_path / f"sweep-{job}.out").read_text()
    assert state == "COMPLETED", text[-3000:]
    assert requeues >= 1 and "exiting with status 75" in text and "requeued run 1" in text
    import h5py

    with (
        h5py.File(tmp_path / "whole" / "sweep.h5") as a,
        h5py.File(tmp_path / "out" / "sweep.h5") as b,
    ):
        assert (a["total"][()] == b["total"][()]).all() and (b["error"][()] < 1e-12).all()
