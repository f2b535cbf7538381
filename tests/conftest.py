"""Shared test helpers."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
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


def mounted_tmpfs(mount, options: str, what: str):
    """Mount a real tmpfs with ``options`` at ``mount`` (a generator for fixtures; skips
    where mounting is not allowed, i.e. without root)."""
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount {what} here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A real 900 KiB tmpfs: room for one small checkpoint, not two (needs root, as in CI)."""
    yield from mounted_tmpfs(tmp_path / "disk", "size=900k", "a small tmpfs")


@pytest.fixture
def read_only_dir(tmp_path):
    """A real read-only file system (a tmpfs mounted ro): root's permission checks pass,
    the kernel still refuses writes (needs root, as in CI)."""
    yield from mounted_tmpfs(tmp_path / "ro", "size=1m,ro", "a read-only tmpfs")


def ensure_apt_tool(binary: str, package: str) -> str | None:
    """Install Debian's ``package`` when ``binary`` is missing and that is possible (root,
    apt); return a reason to skip, or None when the tool is there."""
    if shutil.which(binary):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{binary} is not installed (Debian: {package}) and cannot be installed here"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    return None if shutil.which(binary) else f"apt-get could not install {package}"


@pytest.fixture(scope="session")
def ompi_venv():
    """The Open MPI 5 venv (``make ompi-venv``), built here under a lock if it is missing."""
    venv = Path(os.environ.get("PARCOMP_OMPI_VENV") or ROOT / ".venv-ompi")
    stamp = venv / ".parcomp-installed"
    with open(ROOT / ".ompi-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            proc = subprocess.run(
                ["make", "-C", str(ROOT), "ompi-venv", f"OMPI_VENV={venv}"],
                capture_output=True,
                text=True,
                timeout=900,
                stdin=subprocess.DEVNULL,
            )
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return venv


def heat_sha(proc: subprocess.CompletedProcess) -> str:
    """The ``sha256 = ...`` that jobs/heat2d.py prints (its final field)."""
    match = re.search(r"sha256 = (\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr[-3000:]
    return match.group(1)


@pytest.fixture(scope="session")
def heat_reference(tmp_path_factory):
    """``ref(n, steps)``: the checksum of an uninterrupted heat2d run (MPICH, 2 ranks; the
    result is bitwise the same on any rank count), run once per session and size."""
    cache: dict[tuple[int, int], str] = {}

    def ref(n: int, steps: int) -> str:
        if (n, steps) not in cache:
            proc = run(
                [
                    BIN / "parcomp",
                    "run",
                    "-n",
                    "2",
                    "--timeout",
                    "120",
                    "jobs/heat2d.py",
                    "--n",
                    n,
                    "--steps",
                    steps,
                    "--no-png",
                    "--out",
                    tmp_path_factory.mktemp("ref"),
                ],
                timeout=150,
            )
            assert proc.returncode == 0, proc.stderr
            cache[n, steps] = heat_sha(proc)
        return cache[n, steps]

    return ref
