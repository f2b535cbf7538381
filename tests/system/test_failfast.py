"""Fail fast: an exception on one rank ends the whole job, with that rank's traceback."""

import pytest

from tests.conftest import BIN, MPIEXEC, SCRIPTS, run

PY = BIN / "python"
PARCOMP = BIN / "parcomp"


@pytest.mark.parametrize("size", [2, 3, 4])
def test_plain_mpiexec_rank_raises(size):
    fail = 1
    out = run([MPIEXEC, "-n", size, PY, SCRIPTS / "raise_on_rank.py", fail], timeout=60)
    assert out.returncode != 0
    assert f"[rank {fail}/{size}] RuntimeError: deliberate failure on rank {fail}" in out.stderr
    assert f"[rank {fail}/{size}] Traceback (most recent call last):" in out.stderr
    assert "unreachable" not in out.stdout


def test_parcomp_run_rank_raises():
    out = run(
        [PARCOMP, "run", "-n", "3", "--timeout", "60", SCRIPTS / "raise_on_rank.py", "1"],
        timeout=90,
    )
    assert out.returncode not in (0, 124)
    assert "[rank 1/3] RuntimeError: deliberate failure on rank 1" in out.stderr
    assert "runpy" not in out.stderr, "the runner's own frames are hidden"


def test_parcomp_run_sys_exit_on_one_rank(tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(
        "import sys\nfrom mpi4py import MPI\nc = MPI.COMM_WORLD\n"
        "if c.rank == 2:\n    sys.exit(7)\nc.Barrier()\n"
    )
    out = run([PARCOMP, "run", "-n", "3", "--timeout", "60", script], timeout=90)
    assert out.returncode not in (0, 124)
    assert "[rank 2/3] parcomp: exit status 7, aborting all ranks" in out.stderr


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_exit_all_ends_every_rank_with_its_status_and_message(tmp_path, size):
    """parcomp.exit_all: every rank exits with the status, nobody aborts, and output that
    every rank wrote before it (stdout and stderr) is delivered in full."""
    script = tmp_path / "exit_all.py"
    script.write_text(
        "import parcomp\n"
        "r = parcomp.rank()\n"
        "print('x' * 20000 + f' end of rank {r}')\n"
        "parcomp.exit_all(5, 'every rank stops: not converged')\n"
        "print('unreachable')\n"
    )
    for _ in range(3):  # the abort race this replaces showed up one run in several
        out = run([PARCOMP, "run", "-n", size, "--timeout", "60", script], timeout=90)
        assert out.returncode == 5, out.stderr[-2000:]
        assert out.stderr.count("every rank stops: not converged") == 1, out.stderr[-2000:]
        assert "aborting" not in out.stderr and "unreachable" not in out.stdout
        for r in range(size):
            assert f" end of rank {r}" in out.stdout


def test_exit_all_rejects_a_bad_status(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import parcomp\nparcomp.exit_all(300)\n")
    out = run([PARCOMP, "run", "-n", "2", "--timeout", "60", script], timeout=90)
    assert out.returncode not in (0, 124, 300 % 256)
    assert "status must be an int in 0..255, got 300" in out.stderr


def test_world_size_mismatch_is_detected():
    # Each rank started by a launcher that MPI does not recognise sees a world of 1:
    # PARCOMP_NPROCS says 2 ranks were asked for, so every singleton refuses to run.
    out = run(
        [PY, "-m", "parcomp.launch.runner", SCRIPTS / "raise_on_rank.py"],
        timeout=60,
        env={"PARCOMP_NPROCS": "2"},
    )
    assert out.returncode == 3
    assert "asked for 2 ranks but MPI reports a world of 1" in out.stderr


def test_failfast_can_be_disabled():
    out = run(
        [PY, "-c", "import parcomp, sys; print(sys.excepthook is sys.__excepthook__)"],
        timeout=60,
        env={"PARCOMP_FAILFAST": "0"},
    )
    assert out.stdout.strip() == "True"
    out = run([PY, "-c", "import parcomp"], timeout=60, env={"PARCOMP_FAILFAST": "maybe"})
    assert out.returncode != 0 and "PARCOMP_FAILFAST='maybe'" in out.stderr
