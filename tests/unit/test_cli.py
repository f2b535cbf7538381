"""The parcomp command line: --help, info, and run's errors."""

import sys

import pytest

from tests.conftest import BIN, MPIEXEC, run

PARCOMP = BIN / "parcomp"


@pytest.mark.parametrize("argv", [[PARCOMP, "--help"], [sys.executable, "-m", "parcomp", "--help"]])
def test_help(argv):
    out = run(argv, timeout=60)
    assert out.returncode == 0
    assert "info" in out.stdout and "run" in out.stdout


def test_run_help_lists_options():
    out = run([PARCOMP, "run", "--help"], timeout=60)
    assert out.returncode == 0
    for flag in ("-n", "--timeout", "-m", "--restarts", "--shrink", "--ulfm"):
        assert flag in out.stdout


def test_info_reports_everything():
    out = run([PARCOMP, "info"], timeout=60, env={"PARCOMP_MPIEXEC": ""})
    assert out.returncode == 0, out.stderr
    import mpi4py
    import numba
    import numpy

    for needle in (
        f"numpy:         {numpy.__version__}",
        f"mpi4py:        {mpi4py.__version__}",
        f"numba:         {numba.__version__}",
        "MPI library:   MPICH",
        "parallel HDF5: no",
        "numba cache:",
        f"mpiexec:       {MPIEXEC}",
        "ULFM:          not with MPICH",
    ):
        assert needle in out.stdout, (needle, out.stdout)
    assert "WARNING" not in out.stdout


def test_info_warns_about_foreign_mpiexec(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'mpiexec (Open MPI) 4.1.4'\n")
    fake.chmod(0o755)
    out = run([PARCOMP, "info"], timeout=60, env={"PARCOMP_MPIEXEC": str(fake)})
    assert out.returncode == 0
    assert "WARNING: mpiexec is Open MPI but mpi4py loaded MPICH" in out.stdout


def test_run_missing_script():
    out = run([PARCOMP, "run", "-n", "2", "no/such/script.py"], timeout=60)
    assert out.returncode == 2
    assert "script not found: 'no/such/script.py'" in out.stderr


@pytest.mark.parametrize("bad", ["0", "-3", "two"])
def test_run_bad_n(bad, tmp_path):
    script = tmp_path / "ok.py"
    script.write_text("print('hi')\n")
    out = run([PARCOMP, "run", "-n", bad, script], timeout=60)
    assert out.returncode == 2
    assert "expected a positive integer" in out.stderr and repr(bad) in out.stderr


def test_run_without_mpiexec(tmp_path):
    script = tmp_path / "ok.py"
    script.write_text("print('hi')\n")
    out = run(
        [PARCOMP, "run", "-n", "2", script],
        timeout=60,
        env={"PARCOMP_MPIEXEC": str(tmp_path / "missing-mpiexec")},
    )
    assert out.returncode == 2
    assert "PARCOMP_MPIEXEC" in out.stderr and "not an executable file" in out.stderr


def test_run_passes_arguments_and_status(tmp_path):
    script = tmp_path / "args.py"
    script.write_text(
        "import sys\nfrom mpi4py import MPI\nc = MPI.COMM_WORLD\n"
        f"open(f'{tmp_path}/rank{{c.rank}}', 'w').write(f'{{c.size}} {{sys.argv[1:]}}')\n"
    )
    out = run([PARCOMP, "run", "-n", "3", script, "--flag", "x"], timeout=60)
    assert out.returncode == 0, out.stderr
    for r in range(3):
        assert (tmp_path / f"rank{r}").read_text() == "3 ['--flag', 'x']"


def test_slurm_help_says_what_the_template_does():
    # was: "runs SCRIPT with srun --mpi=pmi2", while the template runs `parcomp run`
    out = run([BIN / "parcomp", "slurm", "--help"])
    text = " ".join(out.stdout.split())
    assert "parcomp run -n $SLURM_NTASKS" in text
    assert "srun --mpi=pmi2" not in text


def test_slurm_warns_when_the_signal_lead_exceeds_the_walltime():
    out = run(
        [BIN / "parcomp", "slurm", "--time", "00:01:00", "--signal-lead", "90", "jobs/heat2d.py"]
    )
    assert out.returncode == 0
    assert "warning: --signal-lead 90 s is not shorter than the walltime 00:01:00" in out.stderr
    assert out.stdout.startswith("#!/bin/bash")


def test_run_help_lists_hang_after():
    out = run([BIN / "parcomp", "run", "--help"])
    assert "--hang-after S" in out.stdout and "kill -QUIT" in " ".join(out.stdout.split())
