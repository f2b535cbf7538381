"""jobs/poisson_cg.py end to end: exact dot products make CG the same bits on 1..4 ranks,
and a run resumed from a checkpoint on another rank count ends with the same solution."""

import re
import tempfile

import pytest

from tests.conftest import BIN, run

PARCOMP = BIN / "parcomp"


def cg(ranks, *extra, timeout=150):
    return run(
        [
            PARCOMP,
            "run",
            "-n",
            ranks,
            "--timeout",
            "120",
            "jobs/poisson_cg.py",
            "--out",
            tempfile.mkdtemp(prefix="cg-"),
            "--n",
            "48",
            *extra,
        ],
        timeout=timeout,
    )


def summary(proc):
    iterations = re.search(r"(\d+) iterations", proc.stdout)
    digest = re.search(r"sha256 = (\w+)", proc.stdout)
    error = re.search(r"max \|u - exact\| = (\S+)", proc.stdout)
    assert iterations and digest and error, proc.stdout + proc.stderr[-2000:]
    return int(iterations.group(1)), digest.group(1), float(error.group(1))


@pytest.fixture(scope="module")
def reference():
    proc = cg(1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return summary(proc)


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_same_iterations_and_bits_on_any_rank_count(reference, ranks):
    proc = cg(ranks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(proc)[:2] == reference[:2]


def test_converges_to_the_exact_solution(reference):
    iterations, _, error = reference
    assert 10 < iterations < 500
    assert error < 1e-9  # the 5-point stencil is exact on the quadratic solution


def test_resumes_on_another_rank_count_with_the_same_answer(reference, tmp_path):
    ck = tmp_path / "ck"
    first = cg(2, "--maxiter", "30", "--checkpoint-dir", ck, "--checkpoint-every", "10")
    assert first.returncode == 1 and "did not reach" in first.stderr, first.stderr[-2000:]
    second = cg(3, "--checkpoint-dir", ck, "--checkpoint-every", "10")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at iteration 30 on 3 ranks" in second.stderr
    assert summary(second)[:2] == reference[:2]
