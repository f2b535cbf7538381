"""Which MPI library a version string names (PURE).

Used by :mod:`parcomp.runtime.resilient` (is this Open MPI with ULFM?) and by
:mod:`parcomp.launch.mpiexec` (does the ``mpiexec`` match the library mpi4py loaded?).
"""

from __future__ import annotations

import re

__all__ = ["parse_library_version"]


def parse_library_version(text: str) -> tuple[str | None, str | None]:
    """Vendor and version from ``MPI.Get_library_version()`` text."""
    patterns = (
        ("MPICH", r"MPICH Version:\s*(\S+)"),
        ("Open MPI", r"Open MPI v(\S+?),"),
        ("Intel MPI", r"Intel\(R\) MPI Library (\S+)"),
        ("MVAPICH", r"MVAPICH2? Version\s*:?\s*(\S+)"),
    )
    for vendor, pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return vendor, match.group(1)
    if "Open MPI" in text:
        return "Open MPI", None
    if "MPICH" in text:
        return "MPICH", None
    return None, None
