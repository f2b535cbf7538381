"""The README's example program runs as shown and computes pi."""

import ast
import math
import re

from tests.conftest import BIN, ROOT, run


def test_readme_example_runs_on_3_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# pi_demo\.py.*?)```", text, re.S).group(1)
    script = tmp_path / "pi_demo.py"
    script.write_text(block)
    out = run([BIN / "parcomp", "run", "-n", "3", "--timeout", "60", script], timeout=90)
    assert out.returncode == 0, out.stderr
    value = float(re.search(r"\[rank 0/3\] INFO parcomp.demo: pi ~= (\S+)", out.stderr).group(1))
    assert abs(value - math.pi) < 1e-10
    assert "[rank 1/3]" not in out.stderr  # other ranks stay quiet at INFO


def test_readme_life_example_runs_on_3_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# life\.py.*?)```", text, re.S).group(1)
    script = tmp_path / "life.py"
    script.write_text(
        block + "\nif u.rank == 0:\n    print('cells', int(field.sum()), field.shape)\n"
    )
    out = run([BIN / "parcomp", "run", "-n", "3", "--timeout", "90", script], timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cells 5 (60, 60)" in out.stdout


def test_readme_mapreduce_example_runs_on_3_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# mr_demo\.py.*?)```", text, re.S).group(1)
    script = tmp_path / "mr_demo.py"
    script.write_text(block)
    out = run([BIN / "parcomp", "run", "-n", "3", "--timeout", "90", script], timeout=120)
    assert out.returncode == 0, out.stderr
    harmonic = sum(1.0 / (1 + x) for x in range(100_000))
    assert out.stdout.startswith("[0, 1, 4, 9] ")
    value = float(out.stdout.split()[4])
    assert abs(value - harmonic) < 1e-9
    words = ast.literal_eval(out.stdout[out.stdout.index("{") :].strip())
    assert words == {"a": 1, "b": 3, "c": 1}


def test_readme_particles_example_runs_on_3_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# particles_demo\.py.*?)```", text, re.S).group(1)
    script = tmp_path / "particles_demo.py"
    script.write_text(block)
    out = run([BIN / "parcomp", "run", "-n", "3", "--timeout", "90", script], timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "grid (3, 1) -> (1, 3)" in out.stdout
    errors = [float(e) for e in re.findall(r"round trip error (\S+)", out.stdout)]
    assert len(errors) == 1 and errors[0] < 1e-12
    assert "particles 3000 mass 3000.0" in out.stdout


def test_readme_resumable_map_example_resumes_on_another_rank_count(tmp_path):
    import numpy as np

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(\s*# resume_demo\.py.*?)```", text, re.S).group(1)
    script = tmp_path / "resume_demo.py"
    script.write_text("\n".join(line[2:] for line in block.splitlines()))
    first = run([BIN / "parcomp", "run", "-n", "3", "--timeout", "90", script], timeout=120,
                cwd=tmp_path)  # fmt: skip
    again = run([BIN / "parcomp", "run", "-n", "2", "--timeout", "90", script], timeout=120,
                cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "resuming: 500 of 500" in again.stderr
    ends = [np.random.default_rng(s).standard_normal(10_000).sum() for s in range(500)]
    assert first.stdout == again.stdout == f"500 {np.mean(ends):.12f}\n"
