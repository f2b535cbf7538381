"""Resumable maps under ``parcomp run`` (issue 27): a rank SIGKILLed at random moments,
preemption signals (twice in a row), resumes on other rank counts.  Every run's answer is
the uninterrupted one (``deterministic=True`` bitwise; keyed equal to a Counter), and a
mapper counting its own calls in side files shows no item lost and only the round in
flight at a kill run twice."""

import collections
import math
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, SCRIPTS, run
from tests.helpers import rank_pids

PARCOMP = BIN / "parcomp"
N, EVERY = 120, 8


def launch(ranks, kind, side, progress=None, every=EVERY, timeout=150):
    argv = [PARCOMP, "run", "-n", ranks, "--timeout", timeout, SCRIPTS / "resumable.py",
            kind, side, N, every] + ([progress] if progress else [])  # fmt: skip
    return [str(a) for a in argv]


def finish(ranks, kind, side, progress):
    proc = run(launch(ranks, kind, side, progress), timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return re.search(r"^RESULT (.*)$", proc.stdout, re.M).group(1)


def calls(side: Path) -> collections.Counter:
    counts = collections.Counter()
    for f in side.glob("calls-*"):
        counts.update(int(v) for v in f.read_text().split())
    return counts


def reference(kind):
    if kind == "fold":
        return repr(sum(i * i for i in range(N)))
    if kind == "map":
        return repr([{"i": i, "v": math.sin(i)} for i in range(N)])
    if kind == "keyed":
        want = collections.Counter()
        for i in range(N):
            want[f"k{i % 7}"] += i
            want[i % 3] += 1
        return repr(sorted(want.items(), key=repr))
    return None  # det: the plain deterministic call's bits (run below)


def started(side: Path, at_least: int, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while sum(calls(side).values()) < at_least and time.monotonic() < end:
        time.sleep(0.02)


@pytest.mark.parametrize("kind", ["map", "det", "keyed"])
def test_sigkill_of_a_rank_at_random_moments_then_resume_on_other_rank_counts(kind, tmp_path):
    side, progress = tmp_path / "side", tmp_path / "progress"
    side.mkdir()
    want = reference(kind)
    if want is None:
        plain = tmp_path / "plain"
        plain.mkdir()
        want = finish(1, kind, plain, None)
    rng = random.Random(f"{kind}-27")
    kills = 0
    for ranks in (3, 2):  # killed twice in a row, on two rank counts
        marker = str(side)
        proc = subprocess.Popen(launch(ranks, kind, side, progress), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        started(side, sum(calls(side).values()) + rng.randint(5, 40))
        pids = rank_pids(marker)
        if pids:
            os.kill(rng.choice(pids), signal.SIGKILL)  # mid-item or mid-commit
            kills += 1
        proc.communicate(timeout=120)
        assert proc.returncode != 0, "the job finished before the kill (make it longer)"
    assert kills == 2
    got = finish(4, kind, side, progress)  # a third rank count finishes it
    assert got == want
    counts = calls(side)
    assert set(counts) == set(range(N)), "an item was lost"
    rerun = sum(c - 1 for c in counts.values())
    # each kill loses at most the round in flight: EVERY items (det: EVERY // leaf leaves,
    # the same number of items)
    assert rerun <= kills * EVERY, (rerun, sorted(x for x, c in counts.items() if c > 1))


@pytest.mark.parametrize("kind", ["map", "det"])
def test_preempted_twice_commits_what_is_finished_and_exits_75(kind, tmp_path):
    side, progress = tmp_path / "side", tmp_path / "progress"
    side.mkdir()
    want = reference(kind)
    if want is None:
        plain = tmp_path / "plain"
        plain.mkdir()
        want = finish(1, kind, plain, None)
    for ranks, signum in ((2, signal.SIGUSR1), (3, signal.SIGTERM)):
        before = sum(calls(side).values())
        proc = subprocess.Popen(launch(ranks, kind, side, progress, every=1000), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        started(side, before + 15)
        proc.send_signal(signum)  # to parcomp run, which passes it to every rank
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 75, err[-3000:]
        assert "RESULT" not in out and "preemption signal" in err, err[-3000:]
    got = finish(2, kind, side, progress)
    assert got == want
    counts = calls(side)
    assert set(counts) == set(range(N))
    # one round of up to 1000 items was in flight at each signal, and still nothing ran
    # twice: every rank finished its item in hand, and all of it was committed
    assert max(counts.values()) == 1, sorted(x for x, c in counts.items() if c > 1)


def test_pi_and_wordcount_jobs_resume_after_a_kill(tmp_path):
    ck = tmp_path / "pi"
    args = ["jobs/pi.py", "--samples", "600000", "--chunk", "20000", "--checkpoint-dir", ck,
            "--every-items", "4"]  # fmt: skip
    plain = run([PARCOMP, "run", "-n", "2", "--timeout", "120", *args[:5]], timeout=150)
    assert plain.returncode == 0, plain.stderr[-2000:]
    killed = run([PARCOMP, "run", "-n", "3", "--timeout", "120", *args, "--die-at-chunk", "17"],
                 timeout=150)  # fmt: skip
    assert killed.returncode != 0
    resumed = run([PARCOMP, "run", "-n", "2", "--timeout", "120", *args], timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr, resumed.stderr[-2000:]
    pi = re.compile(r"pi ~= (\S+)")
    assert pi.search(resumed.stdout).group(1) == pi.search(plain.stdout).group(1)
    wc_dir = tmp_path / "wc"
    wc = ["jobs/wordcount.py", "--generate", "6", "--words", "3000", "--checkpoint-dir", wc_dir,
          "--every-items", "1", "--top", "3"]  # fmt: skip
    first = run([PARCOMP, "run", "-n", "3", "--timeout", "120", *wc], timeout=150)
    again = run([PARCOMP, "run", "-n", "2", "--timeout", "120", *wc], timeout=150)
    assert first.returncode == 0 and again.returncode == 0, again.stderr[-2000:]
    assert "resuming: 6 of 6" in again.stderr
    assert first.stdout.split("\n")[1:] == again.stdout.split("\n")[1:]  # same counts


def test_a_task_failing_on_one_rank_inside_a_collective_ends_the_job(tmp_path):
    """The group cannot agree (one rank waits in the task's collective): after the grace
    the failing rank ends the whole job with its traceback."""
    start = time.monotonic()
    proc = run([PARCOMP, "run", "-n", "2", "--timeout", "60", SCRIPTS / "stuck_task.py"],
               timeout=90, env={"PARCOMP_TASK_GRACE": "1"})  # fmt: skip
    assert proc.returncode not in (0, 124), proc.stderr[-2000:]
    assert "is bad on this rank only" in proc.stderr and "[rank 1/2]" in proc.stderr
    assert "unreachable" not in proc.stdout
    assert time.monotonic() - start < 40


@pytest.mark.parametrize("kind", ["map", "det", "keyed"])
def test_a_relaunch_after_a_lost_rank_resumes_from_the_last_commit(kind, tmp_path):
    """``parcomp run --restarts 1`` (MPICH): the relaunched job resumes the map."""
    side, progress = tmp_path / "side", tmp_path / "progress"
    side.mkdir()
    want = reference(kind) or finish(1, kind, tmp_path, None)
    argv = launch(3, kind, side, progress)
    proc = run([argv[0], "run", "--restarts", "1", *argv[2:]], timeout=200,
               env={"RESUMABLE_DIE_AT": "50"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/1" in proc.stderr and "resuming:" in proc.stderr, proc.stderr[-3000:]
    assert re.search(r"^RESULT (.*)$", proc.stdout, re.M).group(1) == want
    counts = calls(side)
    assert set(counts) == set(range(N))
    assert sum(c - 1 for c in counts.values()) <= EVERY


@pytest.mark.parametrize(
    "kind, deaths", [("map", "50"), ("det", "50"), ("keyed", "50"), ("map", "17,70"), ("det", "17,70"),
                     ("fold", "17,70")],
)  # fmt: skip
def test_ulfm_survivors_redo_only_the_lost_ranks_uncommitted_items(
    kind, deaths, tmp_path, ompi_venv
):
    """``parcomp run --ulfm`` (Open MPI): ranks die inside the map (one, or two one after
    the other on 4 ranks); the survivors shrink and finish the same call, redoing only
    what the dead had not committed; the progress they leave resumes cleanly."""
    side, progress = tmp_path / "side", tmp_path / "progress"
    side.mkdir()
    want = reference(kind) or finish(1, kind, tmp_path, None)
    kills = len(deaths.split(","))
    argv = launch(2 + kills, kind, side, progress)
    proc = run([ompi_venv / "bin" / "parcomp", "run", "--ulfm", *argv[2:]], timeout=200,
               env={"RESUMABLE_DIE_AT": deaths})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart 1/" not in proc.stderr, "recovered inside the job, not relaunched"
    assert "recovered in the map" in proc.stderr and "shrunk to 2 ranks" in proc.stderr
    assert re.search(r"^RESULT (.*)$", proc.stdout, re.M).group(1) == want
    counts = calls(side)
    assert set(counts) == set(range(N))
    # only the dead ranks' items since the last commit: at most one round each
    assert sum(c - 1 for c in counts.values()) <= kills * EVERY, counts
    again = run(launch(2, kind, side, progress), timeout=200)  # MPICH, the same call
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming: {N} of {N}" in again.stderr or "resuming:" in again.stderr
    assert re.search(r"^RESULT (.*)$", again.stdout, re.M).group(1) == want


def shuffle_reference():
    want = collections.Counter()
    for i in range(N):
        for j in range(60):
            want[f"k{(i * 7919 + j) % 4001}"] += 1
    return repr(sorted(want.items(), key=repr))


def in_shuffle(progress: Path) -> bool:
    """Whether a commit taken during the shuffle is there (steps come and go: pruned)."""
    try:
        return any("parcomp.map.shuffle" in m.read_text(errors="replace")
                   for m in progress.glob("step-*/*.json"))  # fmt: skip
    except OSError:
        return False


@pytest.mark.parametrize("again", [3, 2], ids=["same-ranks", "other-ranks"])
def test_sigkill_during_the_shuffle_resumes_it(again, tmp_path):
    """A rank killed while a budgeted shuffle commits its rounds: rerun on the same rank
    count, the delivered rounds are skipped; on another, the shuffle starts over from the
    committed tables.  Either way the counts equal a Counter and no item runs again."""
    side, progress = tmp_path / "side", tmp_path / "progress"
    side.mkdir()
    proc = subprocess.Popen(launch(3, "shuffle", side, progress, every=N), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RESUMABLE_SLEEP": "0"})  # fmt: skip
    end = time.monotonic() + 90
    while not (progress.exists() and in_shuffle(progress)) and time.monotonic() < end:
        assert proc.poll() is None, "the job finished before its shuffle was committed"
        time.sleep(0.005)
    pids = rank_pids(str(side))
    assert pids, "no rank to kill"
    os.kill(pids[0], signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    ran_before = sum(calls(side).values())
    resumed = run(launch(again, "shuffle", side, progress, every=N), timeout=200,
                  env={"RESUMABLE_SLEEP": "0"})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"^RESULT (.*)$", resumed.stdout, re.M).group(1) == shuffle_reference()
    assert sum(calls(side).values()) == ran_before == N, "the map ran again"
    skipped = "resuming the shuffle after" in resumed.stderr
    assert skipped == (again == 3), resumed.stderr[-2000:]


def test_ctrl_c_commits_what_is_finished_then_stops_every_rank(tmp_path):
    """SIGINT (Ctrl-C) to parcomp run during a map: the ranks finish the item in hand,
    agree, commit and stop (status 130); the rerun runs nothing twice."""
    side, progress = tmp_path / "side", tmp_path / "progress"
    side.mkdir()
    proc = subprocess.Popen(launch(3, "map", side, progress, every=1000), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    started(side, 20)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "RESULT" not in out
    assert finish(2, "map", side, progress) == reference("map")
    counts = calls(side)
    assert set(counts) == set(range(N)) and max(counts.values()) == 1, counts
