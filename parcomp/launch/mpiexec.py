"""Which ``mpiexec`` to use, and whether it belongs to the MPI library mpi4py loaded.

PURE apart from reading files and running ``mpiexec --version``; no communication.

Machines often carry a second MPI: Debian's Open MPI ``mpiexec`` first on PATH shadows the
MPICH wheel's, and an MPICH program started by Open MPI's launcher runs as N singletons (or
hangs in spawn).  So parcomp looks for the launcher in this order:

1. ``$PARCOMP_MPIEXEC`` (an explicit choice; it must exist),
2. ``mpiexec`` beside the running Python (the virtual environment's ``bin/``, where the
   ``mpich`` wheel puts it),
3. ``mpiexec`` in ``sys.prefix/bin``,
4. the first ``mpiexec`` on ``PATH`` (a site MPI), which :func:`mpiexec_mismatch` checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError, MPIExecNotFoundError
from parcomp.runtime.library import parse_library_version

__all__ = [
    "MPIIdentity",
    "find_mpiexec",
    "mpiexec_identity",
    "loaded_mpi_identity",
    "mpiexec_mismatch",
    "mpiexec_argv",
    "parse_mpiexec_version",
]


@dataclass(frozen=True)
class MPIIdentity:
    """An MPI implementation: vendor family, version and install prefix (each may be unknown)."""

    vendor: str | None
    version: str | None
    prefix: Path | None = None

    def describe(self) -> str:
        """Human-readable one-liner, e.g. ``MPICH 5.0.2 (/opt/venv)``."""
        text = f"{self.vendor or 'unknown MPI'} {self.version or '(version unknown)'}"
        return f"{text} ({self.prefix})" if self.prefix else text


def find_mpiexec() -> Path:
    """Return the ``mpiexec`` parcomp will launch with.

    Raises
    ------
    MPIExecNotFoundError
        If ``$PARCOMP_MPIEXEC`` names a missing file, or no ``mpiexec`` exists at all.
    """
    explicit = config.get("PARCOMP_MPIEXEC")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MPIExecNotFoundError(
                f"PARCOMP_MPIEXEC={explicit!r} is not an executable file; "
                "point it at your MPI's mpiexec or unset it"
            )
        return path
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        candidate = folder / "mpiexec"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mpiexec")
    if found:
        return Path(found)
    raise MPIExecNotFoundError(
        f"no mpiexec found: not beside {sys.executable}, not in {sys.prefix}/bin, not on PATH. "
        "Install the embedded MPI with `pip install 'parcomp[mpich]'`, or set PARCOMP_MPIEXEC "
        "to your site MPI's mpiexec"
    )


def parse_mpiexec_version(text: str) -> tuple[str | None, str | None]:
    """Vendor and version from ``mpiexec --version`` output."""
    match = re.search(r"\((?:Open MPI|OpenRTE|PRRTE)\)\s*(\S+)", text)
    if match:
        return "Open MPI", match.group(1)
    if "Intel(R) MPI" in text:
        match = re.search(r"Version\s+(\S+)", text)
        return "Intel MPI", match.group(1) if match else None
    if "HYDRA" in text or "Hydra" in text:
        match = re.search(r"Version:\s*(\S+)", text)
        return "MPICH", match.group(1) if match else None
    return None, None


def _prefix_of_bin(path: Path) -> Path:
    resolved = path.resolve()
    return resolved.parent.parent if resolved.parent.name == "bin" else resolved.parent


def mpiexec_identity(mpiexec: Path, timeout: float = 10.0) -> MPIIdentity:
    """Identify an ``mpiexec`` by running ``mpiexec --version`` (bounded by ``timeout``)."""
    try:
        out = subprocess.run(
            [str(mpiexec), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    vendor, version = parse_mpiexec_version(text)
    return MPIIdentity(vendor, version, _prefix_of_bin(Path(mpiexec)))


def _loaded_libmpi() -> Path | None:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and re.search(r"/libmpi(_abi)?\.so", parts[-1]):
                    return Path(parts[-1])
    except OSError:
        return None
    return None


def loaded_mpi_identity() -> MPIIdentity:
    """Identify the MPI library that mpi4py loaded in this process (initialises MPI)."""
    from mpi4py import MPI

    vendor, version = parse_library_version(MPI.Get_library_version())
    lib = _loaded_libmpi()
    prefix = None
    if lib is not None:
        resolved = lib.resolve()
        prefix = (
            resolved.parent.parent if resolved.parent.name.startswith("lib") else resolved.parent
        )
    return MPIIdentity(vendor, version, prefix)


def mpiexec_mismatch(launcher: MPIIdentity, library: MPIIdentity) -> list[str]:
    """Reasons why ``launcher`` may not belong to ``library`` (empty when they match)."""
    problems = []
    if launcher.vendor is None:
        problems.append("could not identify the mpiexec (its --version output is not recognised)")
    elif library.vendor is not None and launcher.vendor != library.vendor:
        problems.append(
            f"mpiexec is {launcher.vendor} but mpi4py loaded {library.vendor}: "
            "ranks would start as separate singletons or hang"
        )
    elif launcher.version and library.version and launcher.version != library.version:
        problems.append(
            f"mpiexec is {launcher.vendor} {launcher.version} but mpi4py loaded "
            f"{library.vendor} {library.version}"
        )
    if (
        not problems
        and launcher.prefix is not None
        and library.prefix is not None
        and launcher.prefix != library.prefix
    ):
        problems.append(
            f"mpiexec lives under {launcher.prefix} but the MPI library mpi4py loaded lives "
            f"under {library.prefix}"
        )
    return problems


def mpiexec_argv(
    nprocs: int,
    program: list[str],
    mpiexec: Path | None = None,
    vendor: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """Build ``[mpiexec, -n, N, ..., *program]``.

    Parameters
    ----------
    nprocs : int
        Number of ranks, at least 1.
    program : list of str
        The command each rank runs.
    mpiexec : pathlib.Path, optional
        Launcher (default: :func:`find_mpiexec`).
    vendor : str, optional
        Launcher family; Open MPI gets ``--oversubscribe`` so that more ranks than cores
        start, as MPICH's Hydra allows by default (not with a host list in ``extra``).
    extra : tuple of str
        Extra launcher options, placed before the program.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ConfigError(f"number of ranks must be a positive integer, got {nprocs!r}")
    if not program:
        raise ConfigError("program to launch is empty")
    launcher = mpiexec if mpiexec is not None else find_mpiexec()
    argv = [str(launcher), "-n", str(nprocs)]
    if vendor == "Open MPI" and not any(a in ("--host", "-H", "--hostfile") for a in extra):
        # one machine: more ranks than cores start, as with Hydra.  Not with a host list:
        # PRRTE then maps every rank onto the first host (measured on the cluster rig)
        argv.append("--oversubscribe")
    return argv + list(extra) + list(program)
