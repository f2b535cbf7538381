"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "scripts"
BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"


def load_job(name: str):
    """Import ``jobs/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        f"parcomp_job_{name}", ROOT / "jobs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv, timeout=120, env=None, **kw) -> subprocess.CompletedProcess:
    """Run a command with a hard timeout (a hang fails the test instead of CI)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
        cwd=kw.pop("cwd", ROOT),
        **kw,
    )


@pytest.fixture
def job():
    return load_job


@pytest.fixture
def small_disk(tmp_path):
    """A real 900 KiB tmpfs: room for one small checkpoint, not two (needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
