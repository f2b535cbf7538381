"""The supervisor under outside signals: preemption is final, its death ends the job.

Real ``parcomp run`` jobs; signals sent at chosen and at random moments.
"""

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, SCRIPTS, run

PARCOMP = BIN / "parcomp"


def heat(tmp_path, steps=400, restarts=2):
    return [
        str(a)
        for a in (
            PARCOMP,
            "run",
            "-n",
            "2",
            "--timeout",
            "120",
            "--restarts",
            restarts,
            "jobs/heat2d.py",
            "--n",
            "128",
            "--steps",
            steps,
            "--checkpoint-dir",
            tmp_path / "ck",
            "--checkpoint-every",
            "1000",
            "--step-delay",
            "0.02",
            "--no-png",
            "--out",
            tmp_path,
        )
    ]


def start(argv):
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def alive(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return out.stdout.split()


# From 0.3 s: parcomp run's handlers are in place ~0.1 s after its interpreter starts (the
# Python start-up itself); before that a signal ends it with the default action, which
# the Slurm template also treats as a preemption (tests/slurm).
@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0, 2.5])
def test_two_signals_50_ms_apart_checkpoint_once_and_exit_75(tmp_path, delay):
    # was (1 of 14 in the campaign): Hydra ended the ranks on the second SIGTERM,
    # parcomp run restarted the job and it finished with 0 instead of 75
    proc = start(heat(tmp_path))
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert "restart" not in err, err[-3000:]
    saved = list((tmp_path / "ck").glob("step-*")) if (tmp_path / "ck").exists() else []
    assert len(saved) <= 1, saved  # one checkpoint, or none yet at start-up


def test_random_signal_storms_always_end_in_75(tmp_path):
    rng = random.Random(12)
    for trial in range(4):
        folder = tmp_path / f"t{trial}"
        proc = start(heat(folder))
        time.sleep(rng.uniform(0.3, 3.0))
        for _ in range(rng.randint(1, 4)):
            proc.send_signal(rng.choice([signal.SIGTERM, signal.SIGUSR1]))
            time.sleep(rng.uniform(0.0, 0.2))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 75, (trial, err[-3000:])
        assert "restart" not in err


def test_sigkill_of_parcomp_run_ends_the_job_within_2_s():
    # was (6 of 6): mpiexec re-parented to PID 1 and the ranks kept checkpointing
    proc = start([str(PARCOMP), "run", "-n", "3", "--timeout", "120", str(SCRIPTS / "sleeper.py")])
    assert proc.stdout.readline().strip() == "started"
    assert len(alive("sleeper.py")) >= 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 2.0
    while alive("sleeper.py") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive("sleeper.py"), "ranks survived their supervisor"
    assert not alive("hydra_pmi_proxy.*sleeper") and not alive("mpiexec.*sleeper")


def test_failed_attempts_leave_no_shared_memory_behind(tmp_path):
    # was: each killed MPICH job left an mpich_shm_* segment in /dev/shm (770 MB after
    # the campaign)
    before = set(os.listdir("/dev/shm"))
    out = subprocess.run(
        [str(PARCOMP), "run", "-n", "3", "--restarts", "1", str(SCRIPTS / "raise_on_rank.py"), "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ended = time.time()
    assert out.returncode != 0
    from parcomp.launch.cleanup import _mapped

    left = {
        n
        for n in set(os.listdir("/dev/shm")) - before
        if n.startswith("mpich_shm_") and os.stat(f"/dev/shm/{n}").st_mtime <= ended
    }
    assert not left - _mapped(), left  # what remains is in use by someone else's live job


def test_a_second_job_cannot_write_into_a_directory_in_use(tmp_path):
    # was: a relaunch shared the directory with the orphaned ranks of the first job
    from mpi4py import MPI

    from parcomp.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path / "ck", handle_signals=False, comm=MPI.COMM_SELF)
    argv = heat(tmp_path, steps=20, restarts=0)
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "another live job writes checkpoints to" in out.stderr, out.stderr[-2000:]
    assert f"pid {os.getpid()}" in out.stderr
    ck.close()  # the lease is given back: now the job may write there
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_disk_full_after_the_reservation_is_a_clean_error(small_disk):
    # was (4 of 6 races): HDF5 met ENOSPC at close and the rank died with SIGSEGV
    out = subprocess.run(
        [
            str(PARCOMP),
            "run",
            "-n",
            "2",
            "--timeout",
            "120",
            str(SCRIPTS / "enospc_after_reservation.py"),
            str(small_disk / "ck"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.count("clean error: True") == 2, out.stdout
    assert out.stdout.count("survived, step 1 intact: True") == 2, out.stdout
    assert "Segmentation fault" not in out.stderr


@pytest.mark.parametrize("restarts", [0, 1])
def test_a_rank_killed_while_the_job_starts_ends_it_or_is_relaunched(ompi_venv, tmp_path, restarts):
    """Open MPI's survivors of a rank killed before MPI_Init finished wait in MPI_Init for
    good (ULFM covers only an initialised job).  The supervisor counts the job's rank
    processes during start-up: one gone ends the attempt within seconds, status 1 (not a
    hang), and ``--restarts`` relaunches it."""
    from parcomp.launch.hang import rank_processes

    script = tmp_path / "job.py"
    script.write_text(
        "from parcomp.runtime.ranks import world_rank_size\nprint('ran on', world_rank_size())\n"
    )
    proc = subprocess.Popen(
        [
            ompi_venv / "bin" / "parcomp",
            "run",
            "--ulfm",
            "-n",
            "3",
            "--timeout",
            "100",
            "--restarts",
            str(restarts),
            script,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    killed = None
    while killed is None and time.monotonic() - t0 < 30 and proc.poll() is None:
        ranks = rank_processes(proc.pid)
        if len(ranks) == 3:
            time.sleep(0.1)  # still importing (MPI_Init comes later), seen by the supervisor
            killed = max(ranks)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    assert killed is not None, err[-2000:]
    assert "ended while the job was starting" in err, err[-3000:]
    if restarts:
        assert proc.returncode == 0, err[-3000:]
        assert "restart 1/1" in err
        assert out.count("ran on") == 3
    else:
        assert proc.returncode == 1, err[-3000:]
        assert took < 20, f"took {took:.1f} s"


def test_each_rank_gets_its_share_of_the_cores_for_thread_pools(tmp_path):
    """BLAS/OpenMP/Numba pools default to cores // ranks (2 ranks starved each other with
    one BLAS thread per core: CG took 9.3 ms per iteration instead of 0.25 ms); a value
    the user set is kept."""
    script = tmp_path / "env.py"
    script.write_text(
        "import os\n"
        "from parcomp.runtime.ranks import world_rank_size\n"
        "if world_rank_size()[0] == 0:\n"
        "    print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])\n"
    )
    share = str(max(1, (os.cpu_count() or 1) // 2))

    def ranks_see(env):
        out = subprocess.run(
            [str(PARCOMP), "run", "-n", "2", "--timeout", "60", str(script)],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    unset = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    assert ranks_see(unset) == [share, share]
    assert ranks_see({**unset, "OPENBLAS_NUM_THREADS": "7", "OMP_NUM_THREADS": "3"}) == ["7", "3"]


def test_open_mpi_leftover_segments_are_swept_and_info_leaves_none(ompi_venv, tmp_path):
    # was: Open MPI's 16 MiB sm_segment.* files stayed (the cleanup knew MPICH's
    # mpich_shm_* names only); every Open MPI singleton, `parcomp info` among them, left one
    from parcomp.launch.cleanup import sweep_orphans

    before = set(os.listdir("/dev/shm"))
    info = run([ompi_venv / "bin" / "parcomp", "info"], timeout=60)
    assert info.returncode == 0, info.stderr
    new = {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("sm_segment.")}
    assert not new, new
    # a leftover of a killed Open MPI job (an old, unmapped segment) is swept
    stale = Path("/dev/shm") / f"sm_segment.parcomp-test.{os.getuid()}.{os.getpid()}.0"
    stale.write_bytes(b"\0" * 4096)
    os.utime(stale, (time.time() - 600, time.time() - 600))
    try:
        assert sweep_orphans() >= 1
        assert not stale.exists()
    finally:
        stale.unlink(missing_ok=True)


def _rank_listeners(pids):
    """(address, port) of every TCP listening socket of ``pids`` (from ``ss -ltnp``)."""
    out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if not any(f"pid={pid}," in line for pid in pids):
            continue
        if any(name in line for name in ('"mpiexec"', '"hydra_pmi_proxy"', '"prterun"')):
            continue  # the launcher's control port, inherited by its children: not a rank's
        found.append(line.split()[3])
    return found


@pytest.mark.parametrize("mpi", ["mpich", "openmpi"])
def test_single_node_ranks_listen_on_no_network_interface(mpi, request, tmp_path):
    # was: each rank listened on the host's addresses (UCX's or btl/tcp's sockets) during
    # a single-node job; the launcher's own ports are documented as not restrictable
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    parcomp_bin = (
        PARCOMP if mpi == "mpich" else request.getfixturevalue("ompi_venv") / "bin" / "parcomp"
    )
    script = tmp_path / "listen_sleeper.py"
    script.write_text(
        "import time, parcomp\n"
        "parcomp.default_comm().Barrier()\n"
        "print('up', flush=True)\n"
        "time.sleep(3)\n"
    )
    proc = start([str(parcomp_bin), "run", "-n", "2", "--timeout", "60", str(script)])
    try:
        assert "up" in proc.stdout.readline()
        time.sleep(0.5)
        pids = alive("listen_sleeper.py")
        ranks = [p for p in pids if "python" in open(f"/proc/{p}/cmdline").read()]
        assert ranks
        exposed = [a for a in _rank_listeners(ranks) if not a.startswith(("127.", "[::1]"))]
        assert not exposed, exposed
    finally:
        proc.wait(timeout=60)  # the job ends by itself: no orphaned rank keeps listening
