"""Progress bars on rank 0 only: ``tqdm.auto`` (a widget in notebooks), else log lines.

Local: the caller supplies global progress (map/reduce reads it from a node-shared counter).
"""

from __future__ import annotations

import time
from typing import Any

from parcomp.runtime.log import get_logger

__all__ = ["Progress"]


class Progress:
    """A progress display that only rank 0 shows.

    Parameters
    ----------
    total : int
        Number of units of work.
    enabled : bool
        Show anything at all (only on rank 0).
    desc : str
        Label.
    """

    def __init__(self, total: int, enabled: bool, desc: str = "parcomp") -> None:
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._log = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)
        except ImportError:  # tqdm is optional: fall back to log lines every ~2 s
            self._log = get_logger("parcomp.progress")
            self._desc = desc

    def update_to(self, done: int) -> None:
        """Set the number of finished units (monotonic; clipped to ``total``)."""
        done = min(max(done, self.done), self.total)
        if self._bar is not None and done > self.done:
            self._bar.update(done - self.done)
        elif self._log is not None and time.monotonic() - self._last > 2.0:
            self._log.info("%s: %d/%d", self._desc, done, self.total)
            self._last = time.monotonic()
        self.done = done

    def close(self) -> None:
        """Finish the display."""
        if self._bar is not None:
            self._bar.close()
