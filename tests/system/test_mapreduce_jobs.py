"""The map/reduce jobs end to end under parcomp run: same answers on any rank count."""

import collections
import re

import numpy as np
import pytest

from tests.conftest import BIN, load_job, run

PARCOMP = BIN / "parcomp"


def job(n, *argv, timeout=120):
    out = run([PARCOMP, "run", "-n", n, "--timeout", timeout, *argv], timeout=timeout + 30)
    assert out.returncode == 0, out.stderr
    return out


def test_pi_identical_on_rank_counts_and_schedules():
    seen = set()
    for n, schedule in ((1, "block"), (2, "dynamic"), (3, "cyclic"), (4, "dynamic")):
        out = job(
            n, "jobs/pi.py", "--samples", "3000000", "--chunk", "100000", "--schedule", schedule
        )
        seen.add(re.search(r"pi ~= (\S+)", out.stdout).group(1))
    assert len(seen) == 1, seen
    assert abs(float(seen.pop()) - np.pi) < 5e-3


def test_mandelbrot_matches_numpy_on_any_rank_count(tmp_path):
    from parcomp.kernels import mandelbrot_numpy

    mb = load_job("mandelbrot")
    want = mandelbrot_numpy(np.linspace(mb.Y0, mb.Y1, 60), 90, mb.X0, mb.X1, 80)
    import hashlib

    digest = hashlib.sha256(want.astype("<i4").tobytes()).hexdigest()
    for n, schedule in ((1, "block"), (2, "dynamic"), (3, "dynamic"), (3, "block")):
        out = job(
            n,
            "jobs/mandelbrot.py",
            "--width",
            "90",
            "--height",
            "60",
            "--max-iter",
            "80",
            "--schedule",
            schedule,
            "--out",
            tmp_path / f"{n}{schedule}",
        )
        assert f"sha256 = {digest}" in out.stdout, (n, schedule)
        assert (tmp_path / f"{n}{schedule}" / "mandelbrot.png").exists()


def test_wordcount_matches_counter(tmp_path):
    wc = load_job("wordcount")
    files = wc.generate_corpus(tmp_path, 5, 3000, seed=9)
    want = collections.Counter()
    for f in files:
        want.update(dict(wc.count_file(str(f))))
    top = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    for n in (1, 3):
        out = job(n, "jobs/wordcount.py", *files, "--top", "5")
        assert f"{sum(want.values())} words, {len(want)} distinct" in out.stdout
        for word, count in top:
            assert re.search(rf"^\s+{count}\s+{word}$", out.stdout, re.M), (word, count, out.stdout)


def test_wordcount_missing_file_is_a_clear_error(tmp_path):
    out = run(
        [PARCOMP, "run", "-n", "2", "--timeout", "60", "jobs/wordcount.py", tmp_path / "nope.txt"],
        timeout=90,
    )
    assert out.returncode != 0
    assert "no such file(s)" in out.stderr and "nope.txt" in out.stderr


def test_kmeans_job_runs():
    out = job(2, "jobs/kmeans.py", "--points", "20000", "--k", "4")
    assert re.search(r"k-means: 20000 points, k=4, dim=3, 2 ranks, \d+ iterations", out.stdout)


@pytest.mark.parametrize("n", [2, 3])
def test_progress_bar_on_rank0_only(n):
    out = job(
        n,
        "jobs/pi.py",
        "--samples",
        "2000000",
        "--chunk",
        "100000",
        "--progress",
        "--schedule",
        "dynamic",
    )
    assert out.stderr.count("parcomp.map:   0%") == 1, "one bar, drawn by rank 0 only"
    assert "parcomp.map: 100%" in out.stderr and "20/20" in out.stderr
