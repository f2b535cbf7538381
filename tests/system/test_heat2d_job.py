"""jobs/heat2d.py end to end: same checksum on 1..4 ranks, readable HDF5, a PNG."""

import re

import h5py
import numpy as np
import pytest

from tests.conftest import BIN, load_job, run

PARCOMP = BIN / "parcomp"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = {}
    for n in (1, 2, 3, 4):
        folder = tmp_path_factory.mktemp(f"heat{n}")
        proc = run(
            [
                PARCOMP,
                "run",
                "-n",
                n,
                "--timeout",
                "120",
                "jobs/heat2d.py",
                "--n",
                "96",
                "--steps",
                "60",
                "--out",
                folder,
            ],
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        out[n] = (proc.stdout, proc.stderr, folder)
    return out


def test_checksum_identical_on_1_to_4_ranks(results):
    sums = {
        n: re.search(r"sha256 = (\w+)", stdout).group(1) for n, (stdout, _, _) in results.items()
    }
    assert len(set(sums.values())) == 1, sums


def test_hdf5_matches_numpy_reference(results):
    heat = load_job("heat2d")
    from parcomp.kernels import heat_step_2d_numpy

    i, j = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    u = heat.initial(96)(i, j)
    for _ in range(60):
        padded = np.pad(u, 1)
        nxt = np.zeros_like(padded)
        heat_step_2d_numpy(padded, nxt, 0.24)
        u = nxt[1:-1, 1:-1]
    for n, (stdout, _, folder) in results.items():
        with h5py.File(folder / "heat2d.h5", "r") as fh:
            field = fh["u"][...]
            assert fh.attrs["ranks"] == n and fh.attrs["steps"] == 60
        assert np.array_equal(field, u), f"{n} ranks"
        assert heat.checksum(field) in stdout
        assert (folder / "heat2d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not list(folder.glob(".heat2d.h5.tmp-*")), "no temp file left behind"


def test_progress_only_on_rank0(results):
    _, stderr, _ = results[3]
    assert "[rank 0/3] INFO parcomp.jobs.heat2d: step 60/60 (100%)" in stderr
    assert "[rank 1/3] INFO" not in stderr and "[rank 2/3] INFO" not in stderr


def test_bad_flags():
    proc = run(
        [PARCOMP, "run", "-n", "2", "--timeout", "60", "jobs/heat2d.py", "--alpha", "0.3"],
        timeout=90,
    )
    assert proc.returncode != 0
    assert "--alpha must be in (0, 0.25]" in proc.stderr
