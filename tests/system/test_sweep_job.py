"""jobs/sweep.py: an ensemble of heat2d runs of 2 ranks each; every run meets the exact
discrete solution, the table is read back by xarray and pandas, and a sweep killed mid-way
and rerun on another rank count skips the committed runs and gives the same table."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import BIN, ROOT, run
from tests.helpers import rank_pids

PARCOMP = BIN / "parcomp"
ALPHAS = "0.05,0.1,0.15,0.2,0.25,0.12"


def sweep(ranks, out, *extra, check=True):
    proc = run([PARCOMP, "run", "-n", ranks, "--timeout", "150", "jobs/sweep.py", "--alphas",
                ALPHAS, "--n", "48", "--steps", "120", "--out", out, *extra], timeout=180)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def table(path):
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.to_dataframe()


def test_sweep_runs_meet_the_exact_solution_and_the_table_reads_back(tmp_path):
    sweep(4, tmp_path / "a")
    frame = table(tmp_path / "a" / "sweep.h5")
    assert list(frame["alpha"]) == [float(a) for a in ALPHAS.split(",")]
    assert (frame["ranks"] == 2).all() and (frame["steps"] == 120).all()
    assert (frame["error"] < 1e-13).all(), frame
    import h5py

    with h5py.File(tmp_path / "a" / "sweep.h5") as f:  # plain h5py users see the columns too
        assert f["error"].attrs["units"] == "1" and f["error"].dims[0][0].name == "/run"


def test_a_killed_sweep_resumes_on_another_rank_count_with_the_same_table(tmp_path):
    whole = tmp_path / "whole"
    sweep(2, whole)
    want = table(whole / "sweep.h5")
    out = tmp_path / "killed"
    marker = str(out)
    argv = [str(a) for a in [PARCOMP, "run", "-n", "4", "--timeout", "150", "jobs/sweep.py",
            "--alphas", ALPHAS, "--n", "48", "--steps", "4000", "--every", "200", "--out", out]]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90
    while not (out / "runs").exists() or not any((out / "runs").glob("*/step-*")):
        assert time.monotonic() < deadline and proc.poll() is None, "no run checkpointed"
        time.sleep(0.05)
    pids = rank_pids(marker)
    os.kill(pids[-1], signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    resumed = sweep(2, out, "--steps", "4000", "--every", "200", check=True)
    assert "resumed at step" in resumed.stderr or "resuming" in resumed.stderr
    got = table(out / "sweep.h5")
    sweep(2, tmp_path / "long", "--steps", "4000", "--every", "200")  # never killed
    ref = table(tmp_path / "long" / "sweep.h5")
    assert np.array_equal(got["total"].to_numpy(), ref["total"].to_numpy())  # bitwise
    assert np.array_equal(got["alpha"].to_numpy(), want["alpha"].to_numpy())
    assert (got["error"] < 1e-12).all()
