"""``@parcomp.jit``: Numba ``njit`` with a safe cache location.

Local (no communication) in this version.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "jit"]


def cache_dir() -> Path:
    """The directory where Numba caches compiled kernels for parcomp.

    ``$NUMBA_CACHE_DIR`` when set; otherwise ``$PARCOMP_CACHE_DIR/numba``, else
    ``$XDG_CACHE_HOME/parcomp/numba`` (default ``~/.cache/parcomp/numba``): a directory
    owned by the user, never a shared world-writable one.
    """
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("PARCOMP_CACHE_DIR")
    if base:
        return Path(base) / "numba"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "parcomp" / "numba"


def jit(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Compile a kernel with ``numba.njit`` (cache enabled by default)."""
    import numba

    kwargs.setdefault("cache", True)
    numba.config.CACHE_DIR = str(cache_dir())
    return numba.njit(*args, **kwargs)
