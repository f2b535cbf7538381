"""A checkpoint written collectively into one file (site MPI, parallel HDF5) is restored by
the wheel's serial h5py on another rank count, with the same result as an unbroken run."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import numpy as np

from tests.conftest import BIN, ROOT, heat_sha, run

PARCOMP = BIN / "parcomp"
HEAT = ["jobs/heat2d.py", "--n", "90", "--no-png"]


def mpio_venv() -> Path:
    """The site-MPI venv (``make mpio-venv``), built here under a lock if it is missing."""
    venv = Path(os.environ.get("PARCOMP_MPIO_VENV") or ROOT / ".venv-mpio")
    with open(ROOT / ".mpio-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".parcomp-installed").exists():
            proc = subprocess.run(
                [ROOT / "tests" / "scripts" / "mpio_venv.sh", venv],
                capture_output=True,
                text=True,
                timeout=1500,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
            )
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return venv


def test_one_file_checkpoint_resumes_with_the_wheel_on_other_ranks(heat_reference, tmp_path):
    import h5py

    venv = mpio_venv()
    ck = tmp_path / "ck"
    first = run(
        [
            venv / "bin" / "parcomp",
            "run",
            "-n",
            "3",
            "--timeout",
            "150",
            *HEAT,
            "--steps",
            "40",
            "--checkpoint-dir",
            ck,
            "--checkpoint-every",
            "20",
            "--mpio",
            "--out",
            tmp_path / "a",
        ],
        env={"PARCOMP_MPIEXEC": "/usr/bin/mpiexec.mpich"},
        timeout=200,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    step = ck / "step-00000040"
    assert sorted(p.name for p in step.iterdir()) == ["manifest.json", "master.h5"]
    with h5py.File(step / "master.h5", "r") as fh:  # the wheel's serial h5py reads it
        u = fh["arrays/u"]
        assert not u.is_virtual and u.shape == (90, 90) and fh.attrs["nprocs"] == 3
        with h5py.File(tmp_path / "a" / "heat2d.h5", "r") as out:
            assert np.array_equal(u[...], out["u"][...])
    resumed = run(
        [
            PARCOMP,
            "run",
            "-n",
            "2",
            "--timeout",
            "150",
            *HEAT,
            "--steps",
            "80",
            "--checkpoint-dir",
            ck,
            "--out",
            tmp_path / "b",
        ],
        timeout=200,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 40 on 2 ranks" in resumed.stderr
    assert heat_sha(resumed) == heat_reference(90, 80)
