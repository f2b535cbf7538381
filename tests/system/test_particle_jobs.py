"""jobs/walkers.py, jobs/md.py and jobs/poisson_fft.py end to end on 1..4 ranks.

Walkers: positions and density are the bits of a serial NumPy run, the mean squared
displacement matches 2 d D t.  MD: the same bits on every rank count, energy conserved,
final forces equal a serial NumPy minimum-image computation.  Both are SIGKILLed mid-run
(a rank at a chosen step, or any rank at a random moment) and resumed on another rank
count with the same answer.  Poisson: the spectral solution meets the exact one to 1e-12.
"""

import os
import random
import re
import signal
import tempfile
import threading
import time

import pytest

from tests.conftest import BIN, run
from tests.helpers import rank_pids

PARCOMP = BIN / "parcomp"


def job(script, ranks, *extra, timeout=200, check=True):
    proc = run(
        [PARCOMP, "run", "-n", ranks, "--timeout", "180", f"jobs/{script}.py", *extra],
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def found(pattern, proc):
    match = re.search(pattern, proc.stdout)
    assert match, proc.stdout + proc.stderr[-2000:]
    return match.group(1)


def out():
    return ("--out", tempfile.mkdtemp(prefix="pjob-"))


WALK = ("--walkers", "6000", "--steps", "60", "--n", "24")
MD = ("--cells", "5", "--steps", "120", "--grid", "6")


@pytest.fixture(scope="module")
def walkers_1():
    return job("walkers", 1, *WALK, "--verify", *out())


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_walkers_are_the_bits_of_a_serial_run(walkers_1, ranks):
    proc = walkers_1 if ranks == 1 else job("walkers", ranks, *WALK, "--verify", *out())
    assert "serial NumPy run: the same bits" in proc.stdout, proc.stdout
    assert found(r"sha256 = (\w+)", proc) == found(r"sha256 = (\w+)", walkers_1)
    assert float(found(r"mass = (\S+)", proc)) == 6000.0


def test_walkers_msd_matches_2dDt(walkers_1):
    msd, expected, sigma = (
        float(v)
        for v in re.search(
            r"msd = (\S+), 2 d D t = (\S+) \(statistical error (\S+)\)", walkers_1.stdout
        ).groups()
    )
    assert expected == pytest.approx(2 * 2 * 0.5**2 / 6 * 60)
    assert abs(msd - expected) <= 4 * sigma


def test_walkers_killed_mid_run_resume_on_another_rank_count(walkers_1, tmp_path):
    ck = tmp_path / "ck"
    first = job(
        "walkers", 3, *WALK, "--checkpoint-dir", ck, "--checkpoint-every", "10",
        "--die-at-step", "35", "--die-rank", "1", *out(), check=False,
    )  # fmt: skip
    assert first.returncode != 0, "the rank was killed"
    second = job("walkers", 2, *WALK, "--checkpoint-dir", ck, "--checkpoint-every", "10", *out())
    assert "resumed at step 30 on 2 ranks" in second.stderr, second.stderr[-2000:]
    assert found(r"sha256 = (\w+)", second) == found(r"sha256 = (\w+)", walkers_1)


@pytest.fixture(scope="module")
def md_1():
    return job("md", 1, *MD, "--verify", *out())


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_md_is_the_same_bits_on_any_rank_count(md_1, ranks):
    proc = md_1 if ranks == 1 else job("md", ranks, *MD, *out())
    assert found(r"sha256 = (\w+)", proc) == found(r"sha256 = (\w+)", md_1)


def test_md_conserves_energy_and_matches_serial_forces(md_1):
    drift = float(found(r"largest relative drift (\S+)", md_1))
    assert 0 < drift < 1e-3
    errors = re.search(r"relative error (\S+) \(forces\), (\S+) \(potential", md_1.stdout)
    assert errors and float(errors.group(1)) < 1e-10 and float(errors.group(2)) < 1e-10


@pytest.mark.parametrize("seed", [1, 2])
def test_md_killed_at_a_random_moment_resumes_on_another_rank_count(md_1, tmp_path, seed):
    ck = tmp_path / "ck"
    marker = str(tmp_path / "first")
    killed = []

    def killer():
        # strike at a random moment once a first checkpoint exists (mid-step, mid-write,
        # mid-collective: wherever the ranks are); 120 steps take at least 4.8 s
        deadline = time.monotonic() + 90
        while not list(ck.glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.1, 2.5))
        pids = rank_pids(marker)
        if pids:
            victim = random.Random(seed).choice(pids)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    thread = threading.Thread(target=killer)
    thread.start()
    first = job(
        "md", 4, *MD, "--checkpoint-dir", ck, "--checkpoint-every", "7",
        "--step-delay", "0.04", "--out", marker, check=False,
    )  # fmt: skip
    thread.join()
    assert killed, "the kill came too late: the job had finished (make it longer)"
    assert first.returncode != 0
    second = job("md", 3, *MD, "--checkpoint-dir", ck, "--checkpoint-every", "7", *out())
    assert "resumed at step" in second.stderr, second.stderr[-2000:]
    assert found(r"sha256 = (\w+)", second) == found(r"sha256 = (\w+)", md_1)


@pytest.mark.parametrize("ranks,dims", [(1, None), (2, None), (3, None), (4, None), (4, "2,2,1")])
def test_poisson_fft_meets_the_exact_solution(ranks, dims):
    extra = ("--dims", dims) if dims else ()
    proc = job("poisson_fft", ranks, "--n", "32", *extra, *out())
    error = float(found(r"max \|u - exact\| = (\S+)", proc))
    assert error < 1e-12
    assert f"on {ranks} ranks" in proc.stdout


@pytest.mark.parametrize("script,args", [("walkers", WALK), ("md", MD)])
def test_a_checkpoint_beyond_the_requested_steps_is_refused(tmp_path, script, args):
    """(md resumed from step 50 with --steps 30 and wrote the step-50 state as the answer.)"""
    ck = tmp_path / "ck"
    job(script, 2, *args, "--checkpoint-dir", ck, "--checkpoint-every", "10", *out())
    assert list(ck.glob("step-*"))
    fewer = [a if a != args[args.index("--steps") + 1] else "5" for a in args]
    second = job(script, 2, *fewer, "--checkpoint-dir", ck, *out(), check=False)
    assert second.returncode != 0 and "beyond --steps 5" in second.stderr, second.stderr[-2000:]


def test_walkers_killed_twice_once_during_recovery(walkers_1, tmp_path):
    """A SIGKILL at a step on 3 ranks; the resumed run on 2 ranks is killed again at a
    random moment soon after it starts (while it imports, restores or takes its first
    steps); a third run on 4 ranks still ends with the uninterrupted answer."""
    ck = tmp_path / "ck"
    opts = ("--checkpoint-dir", ck, "--checkpoint-every", "10")
    first = job("walkers", 3, *WALK, *opts, "--die-at-step", "35", *out(), check=False)
    assert first.returncode != 0
    marker = str(tmp_path / "second")
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while not rank_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.Random(7).uniform(0.0, 1.0))  # imports, restore, first steps
        pids = rank_pids(marker)
        if pids:
            os.kill(random.Random(7).choice(pids), signal.SIGKILL)
            killed.append(True)

    thread = threading.Thread(target=killer)
    thread.start()
    second = job("walkers", 2, *WALK, *opts, "--step-delay", "0.05", "--out", marker, check=False)
    thread.join()
    assert killed and second.returncode != 0, "the second run was not killed"
    third = job("walkers", 4, *WALK, *opts, *out())
    assert "resumed at step" in third.stderr, third.stderr[-2000:]
    assert found(r"sha256 = (\w+)", third) == found(r"sha256 = (\w+)", walkers_1)
