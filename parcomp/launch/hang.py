"""The supervisor's side of the hang watchdog: notice a hang, collect and print every stack.

Local to the ``parcomp run`` process: it reads files and sends signals to the job's own
processes on this machine; it never talks MPI.

Each rank of a job started by ``parcomp run`` writes a heartbeat and, on ``SIGQUIT``, its
stacks into the job's watchdog folder (:mod:`parcomp.runtime.watchdog`).  :class:`HangWatch`

* tells whether any rank has entered or left a parcomp collective call in the last
  ``hang_after`` seconds (:meth:`HangWatch.stalled`);
* on a hang, a timeout or a ``SIGQUIT`` sent to ``parcomp run``, signals every rank that
  registered (only processes descending from this job's ``mpiexec``), waits for their
  stacks and prints them grouped: identical stacks once, tagged with their ranks
  ("ranks 1-3"), most recent call last, so each block ends with the line the rank is
  blocked on, and headed by the parcomp call each rank is in.

Ranks on other machines (a multi-node job) cannot be signalled from here; the report says
which ranks gave no stack.
"""

from __future__ import annotations

import linecache
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from parcomp.runtime.ranks import format_ranks
from parcomp.runtime.watchdog import STACK_SIGNAL, node_identity, read_beat

__all__ = ["HangWatch", "parse_faulthandler", "descendants", "kill_pids"]

_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+) in (?P<func>.*)$')
_HIDDEN = (
    "<frozen runpy>",
    os.sep + "runpy.py",
    os.path.join("parcomp", "launch", "runner.py"),
    os.path.join("parcomp", "runtime", "watchdog.py"),
)


@dataclass(frozen=True)
class Frame:
    """One stack frame: file, line number, function."""

    file: str
    line: int
    func: str


def parse_faulthandler(text: str) -> list[list[Frame]]:
    """Threads of a :mod:`faulthandler` dump, each as frames oldest first (PURE).

    The thread that handled the signal (``Current thread``, normally the main thread)
    comes first, then the others oldest first (the main thread before those it started).
    parcomp's own watchdog threads are left out (on a multi-node job one of them writes
    the dump, and would otherwise be the ``Current thread``).
    """
    threads: list[tuple[bool, list[Frame]]] = []
    for line in text.splitlines():
        if line.startswith(("Current thread", "Thread 0x", "Stack (most recent")):
            threads.append((line.startswith("Current thread"), []))
            continue
        match = _FRAME.match(line)
        if match and threads:
            threads[-1][1].append(Frame(match["file"], int(match["line"]), match["func"]))
    threads = [
        t
        for t in threads
        if not any(f.file.endswith(_OWN_THREADS[0]) and f.func in _OWN_THREADS[1] for f in t[1])
    ]
    ordered = [t for t in threads if t[0]] + [t for t in reversed(threads) if not t[0]]
    return [list(reversed(frames)) for _, frames in ordered if frames]


#: parcomp's watchdog threads (file, functions): never the stack a hang report shows.
_OWN_THREADS = (os.path.join("parcomp", "runtime", "watchdog.py"), ("watch", "wait"))


def descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (from ``/proc``; Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rank_processes(job_pid: int) -> list[int]:
    """The job's rank processes: descendants running ``python -m parcomp.launch.runner``
    (the launcher's own command line names the runner too; it is not a rank)."""
    out = []
    for pid in descendants(job_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if (
            len(argv) > 2
            and os.path.basename(argv[0]).startswith(b"python")
            and argv[1:3] == [b"-m", b"parcomp.launch.runner"]
        ):
            out.append(pid)
    return out


class HangWatch:
    """The watchdog folder of one job, its heartbeats and its stack dumps.

    Parameters
    ----------
    nprocs : int
        Ranks in the job.
    hang_after : float, optional
        Seconds without progress on any rank that count as a hang (None: only on demand).
    shared : pathlib.Path, optional
        For a multi-node job: a folder every node sees, where the watchdog folder is made.
        Ranks on other nodes cannot be signalled from here; they watch the folder's
        ``dump-request`` file instead and write their stacks when it changes.
    """

    def __init__(
        self, nprocs: int, hang_after: float | None = None, shared: Path | None = None
    ) -> None:
        if shared is None:
            self.folder = Path(tempfile.mkdtemp(prefix="parcomp-watchdog-"))
        else:
            self.folder = Path(tempfile.mkdtemp(prefix=".parcomp-watchdog-", dir=shared))
        self.shared = shared is not None
        self._requests = 0
        self.nprocs = nprocs
        self.hang_after = hang_after
        self._last: list[tuple[int, int] | None] = []
        self._progress_at = time.monotonic()
        self._seen: set[int] = set()  # rank processes seen during start-up
        self._stranded_last: list[tuple[int, int] | None] = []
        self._stranded_since = time.monotonic()

    def reset(self, nprocs: int) -> None:
        """A new attempt (a relaunch): forget the old files and beats."""
        for path in self.folder.iterdir():
            path.unlink(missing_ok=True)
        self.nprocs = nprocs
        self._last = []
        self._progress_at = time.monotonic()
        self._seen = set()
        self._stranded_last = []
        self._stranded_since = time.monotonic()

    def close(self) -> None:
        """Remove the folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _beats(self) -> list[tuple[int, int, int, str] | None]:
        return [read_beat(self.folder / f"rank-{r}.beat") for r in range(self.nprocs)]

    def stalled(self) -> float | None:
        """Seconds since the last progress if that exceeds ``hang_after``, else None."""
        if self.hang_after is None:
            return None
        now = time.monotonic()
        beats = [None if b is None else (b[1], b[2]) for b in self._beats()]
        if beats != self._last:
            self._last = beats
            self._progress_at = now
            return None
        idle = now - self._progress_at
        return idle if idle >= self.hang_after else None

    def stranded(self, after: float) -> str | None:
        """Why the job cannot end, if some rank has finished its script while every other
        started rank has sat inside one parcomp collective for ``after`` seconds.

        A collective over the whole job cannot complete once a rank has left the script:
        the others wait for it for good (a collective called on some ranks only).  None
        otherwise (also while any unfinished rank is outside parcomp: it may still be
        computing).
        """
        beats = self._beats()
        now = time.monotonic()
        state = [None if b is None else (b[1], b[2]) for b in beats]
        if state != self._stranded_last:
            self._stranded_last = state
            self._stranded_since = now
            return None
        done = [r for r, b in enumerate(beats) if b is not None and b[2] == -1]
        waiting = [r for r, b in enumerate(beats) if b is not None and b[2] != -1]
        if not done or not waiting or len(done) + len(waiting) < self.nprocs:
            return None
        if any(beats[r][1] <= beats[r][2] for r in waiting):  # type: ignore[index]
            return None  # a rank outside parcomp: still working
        idle = now - self._stranded_since
        if idle < after:
            return None
        calls = sorted({beats[r][3] for r in waiting})  # type: ignore[index]
        return (
            f"{format_ranks(done)} finished {'its' if len(done) == 1 else 'their'} script "
            f"while {format_ranks(waiting)} {'has' if len(waiting) == 1 else 'have'} waited "
            f"{idle:.0f} s in {', '.join(calls)}, a collective the finished rank(s) never "
            "called (is it inside `if rank == ...:`?): the job cannot end"
        )

    def where(self) -> dict[int, str]:
        """Per rank, the parcomp call it is in (or last left), from its heartbeat."""
        out = {}
        for r, beat in enumerate(self._beats()):
            if beat is None:
                out[r] = "no heartbeat (parcomp not imported yet, or the rank is gone)"
            elif beat[2] == -1:
                out[r] = "finished its script (waiting in MPI_Finalize for the others)"
            elif beat[1] == 0:
                out[r] = "has not called a parcomp collective yet"
            elif beat[1] > beat[2]:
                out[r] = f"in {beat[3]} (parcomp call #{beat[1]})"
            else:
                out[r] = f"outside parcomp; last call was {beat[3]} (#{beat[1]})"
        return out

    def unfinished(self) -> list[int]:
        """Ranks that started (have a heartbeat) but did not finish their script."""
        return [r for r, b in enumerate(self._beats()) if b is not None and b[2] != -1]

    def lost_at_startup(self) -> list[int]:
        """Ranks whose process is gone while some rank has not finished ``MPI_Init``.

        A rank killed while the job starts leaves the others in ``MPI_Init`` for good with
        some MPIs (Open MPI with ULFM recovers only an initialised job): nothing to wait for.
        """
        beats = self._beats()
        present = [b for b in beats if b is not None]
        if len(present) == self.nprocs and all(b[4] for b in present):
            return []  # MPI came up everywhere: a lost rank is for the job (or ULFM) to handle
        lost = []
        for r, b in enumerate(beats):
            if b is None or b[2] == -1:
                continue
            try:
                os.kill(b[0], 0)
            except ProcessLookupError:
                lost.append(r)
            except PermissionError:
                pass
        return lost

    def initialised(self) -> bool:
        """Whether every rank has initialised MPI (from the heartbeats)."""
        beats = self._beats()
        return all(b is not None and b[4] for b in beats)

    def vanished_at_startup(self, job_pid: int) -> bool:
        """Whether a rank process seen earlier ended while some rank has not initialised
        MPI.  It catches a rank killed before its heartbeat existed, which
        :meth:`lost_at_startup` cannot name; only local processes count (a multi-node job
        is judged by the ranks of this node).  Scans ``/proc`` only during start-up.
        """
        if self.initialised():
            return False
        alive = set(rank_processes(job_pid))
        gone = bool(self._seen - alive)
        self._seen |= alive
        return gone

    def missing_at_startup(self, job_pid: int) -> bool:
        """After a stall in start-up: fewer rank processes alive than ranks (one is gone)."""
        return not self.initialised() and len(rank_processes(job_pid)) < self.nprocs

    def all_started(self) -> bool:
        """Whether every rank has a heartbeat (has imported parcomp)."""
        return all(b is not None for b in self._beats())

    def signal_ranks(self, job_pid: int, signum: int) -> bool:
        """Send ``signum`` to every rank with a heartbeat; False if there were none."""
        mine = set(descendants(job_pid))
        sent = False
        for beat in self._beats():
            if beat is not None and beat[0] in mine and beat[2] != -1:
                try:
                    os.kill(beat[0], signum)
                    sent = True
                except ProcessLookupError:
                    pass
        return sent

    def dump(self, job_pid: int, wait: float = 3.0) -> str:
        """Make every rank write its stacks; return the grouped report.

        Only processes that descend from ``job_pid`` (the ``mpiexec``) are signalled.
        """
        mine = set(descendants(job_pid))
        sizes: dict[int, int] = {}
        remote = False
        for r, beat in enumerate(self._beats()):
            path = self.folder / f"rank-{r}.stack"
            if beat is None or beat[2] == -1:
                continue  # not started, or past the point where it can dump stacks
            here = self.local(r)
            if here and beat[0] not in mine:
                continue  # not this job's
            sizes[r] = path.stat().st_size if path.exists() else 0
            if not here:
                remote = True
                continue
            try:
                os.kill(beat[0], STACK_SIGNAL)
            except ProcessLookupError:
                sizes.pop(r)
        if remote:
            self.request_stacks()
        deadline = time.monotonic() + wait
        stacks: dict[int, str] = {}
        seen: dict[int, int] = {}
        while sizes and time.monotonic() < deadline:
            time.sleep(0.1)
            for r, before in list(sizes.items()):
                path = self.folder / f"rank-{r}.stack"
                size = path.stat().st_size if path.exists() else 0
                if size > before and seen.get(r) == size:  # written, and no longer growing
                    stacks[r] = path.read_text(errors="replace")[before:]
                    sizes.pop(r)
                seen[r] = size
        return self.format(stacks)

    def local(self, rank: int) -> bool:
        """Whether ``rank`` runs on this machine (its node file names this host)."""
        if not self.shared:
            return True
        try:
            where = (self.folder / f"rank-{rank}.node").read_text(encoding="utf-8").strip()
        except OSError:
            return True  # not started yet: nothing remote to ask
        return where == node_identity()

    def request_stacks(self) -> None:
        """Ask the ranks on other nodes for their stacks (they watch ``dump-request``)."""
        self._requests += 1
        tmp = self.folder / "dump-request.tmp"
        tmp.write_text(f"{self._requests} {time.time_ns()}\n", encoding="utf-8")
        os.replace(tmp, self.folder / "dump-request")

    def format(self, stacks: dict[int, str]) -> str:
        """Group identical stacks and lay them out, most recent call last."""
        where = self.where()
        groups: dict[tuple[tuple[Frame, ...], str], list[int]] = {}
        missing = []
        for r in range(self.nprocs):
            threads = parse_faulthandler(stacks.get(r, ""))
            if not threads:
                missing.append(r)
                continue
            frames = tuple(f for f in threads[0] if not f.file.endswith(_HIDDEN))
            groups.setdefault((frames, where[r]), []).append(r)
        lines = []
        for (frames, place), ranks in sorted(groups.items(), key=lambda kv: kv[1][0]):
            lines.append(f"--- {format_ranks(ranks)}: {place}")
            for f in frames:
                lines.append(f'  File "{f.file}", line {f.line}, in {f.func}')
                source = linecache.getline(f.file, f.line).strip()
                if source:
                    lines.append(f"    {source}")
            if frames:
                last = frames[-1]
                lines.append(f"  blocked at {last.file}:{last.line} in {last.func}")
        by_place: dict[str, list[int]] = {}
        for r in missing:
            by_place.setdefault(where[r], []).append(r)
        for place, ranks in by_place.items():
            lines.append(f"--- {format_ranks(ranks)}: {place}; no stack")
        return "\n".join(lines)


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` that still exists (ranks that left the job's process group)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
