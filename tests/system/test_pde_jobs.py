"""jobs/grayscott.py and jobs/wave2d.py end to end on 1..4 ranks: Gray-Scott is the bits of
a serial NumPy run, the wave equation matches the scheme's exact solution to round-off and
converges at order 2 to the PDE's, and both resume on another rank count with the same
answer."""

import re
import tempfile

import pytest

from tests.conftest import BIN, run

PARCOMP = BIN / "parcomp"


def job(script, ranks, *extra, timeout=180):
    proc = run(
        [
            PARCOMP,
            "run",
            "-n",
            ranks,
            "--timeout",
            "150",
            f"jobs/{script}.py",
            "--out",
            tempfile.mkdtemp(prefix=f"{script}-"),
            *extra,
        ],
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def found(pattern, proc):
    match = re.search(pattern, proc.stdout)
    assert match, proc.stdout + proc.stderr[-2000:]
    return match.group(1)


GS = ("--n", "40", "--steps", "60")


@pytest.fixture(scope="module")
def grayscott_1():
    return job("grayscott", 1, *GS, "--verify")


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_grayscott_is_bitwise_the_serial_numpy_reference(grayscott_1, ranks):
    proc = grayscott_1 if ranks == 1 else job("grayscott", ranks, *GS, "--verify")
    assert found(r"NumPy reference: (\w+)", proc) == "yes"
    assert found(r"sha256 = (\w+)", proc) == found(r"sha256 = (\w+)", grayscott_1)


def test_grayscott_overlapped_is_the_same_bits(grayscott_1):
    proc = job("grayscott", 2, *GS, "--overlap")
    assert found(r"sha256 = (\w+)", proc) == found(r"sha256 = (\w+)", grayscott_1)


def test_grayscott_resumes_on_another_rank_count(grayscott_1, tmp_path):
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "10"]
    job("grayscott", 2, "--n", "40", "--steps", "30", *ck)
    second = job("grayscott", 3, *GS, *ck)
    assert "resumed at step 30 on 3 ranks" in second.stderr
    assert found(r"sha256 = (\w+)", second) == found(r"sha256 = (\w+)", grayscott_1)


WAVE = ("--n", "31", "--time", "0.5")


@pytest.fixture(scope="module")
def wave_1():
    return job("wave2d", 1, *WAVE, "--convergence")


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_wave_matches_the_schemes_exact_solution_on_any_rank_count(wave_1, ranks):
    proc = wave_1 if ranks == 1 else job("wave2d", ranks, *WAVE)
    assert float(found(r"scheme's exact\| = (\S+)", proc)) < 1e-12
    assert found(r"sha256 = (\w+)", proc) == found(r"sha256 = (\w+)", wave_1)


def test_wave_converges_at_second_order(wave_1):
    coarse = float(found(r"PDE's exact\|\s+= (\S+)", wave_1))
    order = float(found(r"observed order (\S+)", wave_1))
    assert 1e-5 < coarse < 1e-2  # a real discretisation error, not round-off
    assert 1.9 < order < 2.1


def test_wave_resumes_on_another_rank_count(wave_1, tmp_path):
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "5"]
    first = job("wave2d", 3, *WAVE, *ck, "--stop-at-step", "13")
    assert "stopped at step 13" in first.stdout
    second = job("wave2d", 2, *WAVE, *ck)
    assert "resumed at step 13 on 2 ranks" in second.stderr, second.stderr[-2000:]
    assert found(r"sha256 = (\w+)", second) == found(r"sha256 = (\w+)", wave_1)
    assert float(found(r"scheme's exact\| = (\S+)", second)) < 1e-12


def test_resuming_past_the_requested_steps_is_refused(tmp_path):
    """Was: a run asked for 30 steps resumed a checkpoint of step 60 and printed the
    60-step field as the 30-step one."""
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "20"]
    job("grayscott", 2, "--n", "40", "--steps", "60", *ck)
    proc = run(
        [PARCOMP, "run", "-n", "2", "--timeout", "60", "jobs/grayscott.py", "--n", "40",
         "--steps", "30", "--out", str(tmp_path / "out"), *ck],
        timeout=90,
    )  # fmt: skip
    assert proc.returncode != 0 and "beyond --steps 30" in proc.stderr, proc.stderr[-2000:]
    assert "sha256" not in proc.stdout


def test_grayscott_series_continues_after_a_resume_on_another_rank_count(tmp_path):
    import h5py
    import numpy as np

    out = ["--out", str(tmp_path / "out"), "--series-every", "10"]
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "10"]
    run(
        [PARCOMP, "run", "-n", "2", "--timeout", "60", "jobs/grayscott.py", "--n", "40",
         "--steps", "30", *out, *ck],
        timeout=90,
    )  # fmt: skip
    proc = run(
        [PARCOMP, "run", "-n", "3", "--timeout", "60", "jobs/grayscott.py", "--n", "40",
         "--steps", "60", *out, *ck],
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(tmp_path / "out" / "series.h5", "r") as fh:
        assert list(fh["step"][...]) == [0, 10, 20, 30, 40, 50, 60]
        with h5py.File(tmp_path / "out" / "grayscott.h5", "r") as final:
            assert np.array_equal(fh["u"][-1], final["u"][...])
            assert np.array_equal(fh["v"][-1], final["v"][...])
