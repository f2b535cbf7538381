"""A checkpoint is readable with the standard HDF5 tools from any directory."""

import re

import h5py
import numpy as np
import pytest

from tests.conftest import BIN, ensure_apt_tool, run


@pytest.mark.timeout(600)  # may install hdf5-tools with apt first
def test_h5dump_reads_the_global_array_across_shards(tmp_path):
    reason = ensure_apt_tool("h5dump", "hdf5-tools")
    if reason:
        pytest.skip(reason)
    ck = tmp_path / "ck"
    proc = run(
        [
            BIN / "parcomp",
            "run",
            "-n",
            "3",
            "--timeout",
            "120",
            "jobs/heat2d.py",
            "--n",
            "30",
            "--steps",
            "5",
            "--no-png",
            "--checkpoint-dir",
            ck,
            "--checkpoint-every",
            "5",
            "--out",
            tmp_path,
        ],
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr
    master = ck / "step-00000005" / "master.h5"
    with h5py.File(master, "r") as fh:
        want = fh["arrays/u"][27:30, 0:3]  # rows in the last rank's shard
    out = run(["h5dump", "-m", "%.17g", "-d", "/arrays/u[27,0;;3,3]", master], timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    data = out.stdout.split("DATA {")[1].split("}")[0]
    numbers = [float(x) for x in re.sub(r"\(\d+,\d+\):", " ", data).replace(",", " ").split()]
    assert np.allclose(numbers, want.ravel(), rtol=0, atol=0), (numbers, want)
