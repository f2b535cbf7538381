"""A deadlock fails quickly instead of hanging CI: pytest-timeout and the launcher's timeout."""

import time

from tests.conftest import BIN, SCRIPTS, run

PARCOMP = BIN / "parcomp"


def test_launcher_timeout_kills_deadlocked_job():
    t0 = time.monotonic()
    out = run([PARCOMP, "run", "-n", "2", "--timeout", "3", SCRIPTS / "deadlock.py"], timeout=60)
    assert out.returncode == 124
    assert "exceeded its timeout of 3 s" in out.stderr
    assert time.monotonic() - t0 < 50  # hang guard, not a performance figure


def test_pytest_timeout_fails_deadlocked_mpi_test():
    out = run(
        [
            PARCOMP,
            "run",
            "-n",
            "2",
            "--timeout",
            "60",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--with-mpi",
            "--timeout",
            "3",
            "-q",
            SCRIPTS / "deadlock_case.py",
        ],
        timeout=90,
    )
    assert out.returncode not in (0, 124), out.stdout + out.stderr
    assert "Timeout" in out.stdout + out.stderr
