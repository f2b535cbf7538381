"""Finding the right mpiexec and spotting one that belongs to another MPI."""

import os
import stat
from pathlib import Path

import pytest

from parcomp.launch.mpiexec import (
    MPIIdentity,
    find_mpiexec,
    loaded_mpi_identity,
    mpiexec_argv,
    mpiexec_identity,
    mpiexec_mismatch,
    parse_mpiexec_version,
)
from parcomp.runtime.errors import ConfigError, MPIExecNotFoundError
from parcomp.runtime.library import parse_library_version
from tests.conftest import MPIEXEC


def _fake_launcher(tmp_path: Path, text: str) -> Path:
    """An executable printing another MPI's --version text (stands in for a second MPI)."""
    path = tmp_path / "bin" / "mpiexec"
    path.parent.mkdir()
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_default_is_the_venv_mpiexec(monkeypatch):
    monkeypatch.delenv("PARCOMP_MPIEXEC", raising=False)
    assert find_mpiexec() == MPIEXEC


def test_venv_mpiexec_matches_loaded_library():
    launcher = mpiexec_identity(MPIEXEC)
    library = loaded_mpi_identity()
    assert launcher.vendor == library.vendor == "MPICH"
    assert launcher.version == library.version
    assert mpiexec_mismatch(launcher, library) == []


def test_open_mpi_launcher_is_flagged(tmp_path):
    fake = _fake_launcher(
        tmp_path,
        "mpiexec (Open MPI) 4.1.4\n\nReport bugs to https://www.open-mpi.org/community/help/",
    )
    ident = mpiexec_identity(fake)
    assert ident.vendor == "Open MPI" and ident.version == "4.1.4"
    problems = mpiexec_mismatch(ident, loaded_mpi_identity())
    assert problems and "mpiexec is Open MPI but mpi4py loaded MPICH" in problems[0]


def test_other_prefix_is_flagged(tmp_path):
    library = loaded_mpi_identity()
    fake = _fake_launcher(tmp_path, f"HYDRA build details:\n    Version:   {library.version}\n")
    problems = mpiexec_mismatch(mpiexec_identity(fake), library)
    assert problems and "lives under" in problems[0]


def test_explicit_env_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("PARCOMP_MPIEXEC", str(tmp_path / "nope"))
    with pytest.raises(MPIExecNotFoundError, match="PARCOMP_MPIEXEC"):
        find_mpiexec()
    fake = _fake_launcher(tmp_path, "x")
    monkeypatch.setenv("PARCOMP_MPIEXEC", str(fake))
    assert find_mpiexec() == fake


def test_parse_library_versions():
    assert parse_library_version("MPICH Version:      4.2.0\nMPICH Release date") == (
        "MPICH",
        "4.2.0",
    )
    assert parse_library_version("Open MPI v5.0.3, package: Open MPI ...") == ("Open MPI", "5.0.3")
    assert parse_library_version("Intel(R) MPI Library 2021.11 for Linux*") == (
        "Intel MPI",
        "2021.11",
    )
    assert parse_library_version("something else") == (None, None)
    assert parse_mpiexec_version("mpirun (Open MPI) 5.0.3") == ("Open MPI", "5.0.3")
    assert parse_mpiexec_version("garbage") == (None, None)


def test_unknown_launcher_is_flagged():
    problems = mpiexec_mismatch(MPIIdentity(None, None), MPIIdentity("MPICH", "5.0"))
    assert "could not identify" in problems[0]


def test_argv():
    argv = mpiexec_argv(3, ["python", "x.py"], mpiexec=Path("/m/mpiexec"))
    assert argv == ["/m/mpiexec", "-n", "3", "python", "x.py"]
    argv = mpiexec_argv(3, ["p"], mpiexec=Path("/m/mpiexec"), vendor="Open MPI")
    assert "--oversubscribe" in argv
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            mpiexec_argv(bad, ["p"], mpiexec=Path("/m/mpiexec"))
    assert os.path.basename(argv[0]) == "mpiexec"


def test_thread_pools_get_each_rank_its_share_of_the_cores():
    from parcomp.launch.run import THREAD_VARIABLES, threads_per_rank

    env = {}
    threads_per_rank(env, 1)
    assert {env[k] for k in THREAD_VARIABLES} == {str(os.cpu_count() or 1)}
    env = {"OMP_NUM_THREADS": "5"}
    threads_per_rank(env, 10**6)  # more ranks than cores: at least one thread
    assert env["OMP_NUM_THREADS"] == "5" and env["OPENBLAS_NUM_THREADS"] == "1"
    env = {"SLURM_CPUS_PER_TASK": "8"}  # ranks may span nodes: Slurm's figure wins
    threads_per_rank(env, 64)
    assert env["MKL_NUM_THREADS"] == "8" and env["NUMBA_NUM_THREADS"] == "8"
