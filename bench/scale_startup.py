"""Start-up at 1-64 ranks with a cold kernel cache: compilations, file-system operations
per rank, time to the first kernel.

Run:  .venv/bin/python bench/scale_startup.py [--ranks 1 2 4 8 16 32 64] [--no-strace]

Each rank count runs bench/scale_startup_job.py (``import parcomp, numpy, numba, h5py``,
then one ``run_stencil`` of the heat kernel) twice, each time with an empty kernel cache:

* untraced: the slowest rank's time to the end of its imports and to its first kernel,
  and the compilations in the whole job (must be 1: compile once per job);
* under ``strace -ff -e trace=%file,getdents64``: per rank, the file-system metadata
  operations (every call naming a path: stat, open, access, readlink, ...; plus directory
  listings), split by where they land: the venv and the Python installation (on a
  cluster usually a shared file system), the project directory, the kernel caches, and
  node-local pseudo-files (/sys, /proc, /dev: MPI's hardware discovery).

Two cache modes: the default (node-local cache, filled once per job over MPI) and the
opt-in shared cache (``PARCOMP_CACHE_DIR``), whose directory stands for a shared file
system here.  On this 2-core machine the times include oversubscription; the operation
counts do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

ROOT = Path(__file__).resolve().parent.parent
PARCOMP = Path(sys.executable).with_name("parcomp")
JOB = ROOT / "bench" / "scale_startup_job.py"
RANK_EXEC = re.compile(r'execve\("[^"]*python[^"]*", \["[^"]*", "-m", "parcomp\.launch\.runner"')
PATH_ARG = re.compile(r'^\w+\((?:AT_FDCWD, |\d+, )?"([^"]*)"')


def run(p: int, env: dict[str, str], trace: Path | None) -> dict[str, float]:
    cmd = [str(PARCOMP), "run", "-n", str(p), "--timeout", "900", str(JOB)]
    if trace is not None:
        cmd = ["strace", "-ff", "-e", "trace=%file,getdents64", "-o", str(trace / "tr"), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=960)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def classify(path: str, places: dict[str, str]) -> str:
    for name, prefix in places.items():
        if path.startswith(prefix):
            return name
    if path.startswith(("/sys", "/proc", "/dev")):
        return "node-local pseudo-files"
    return "other"


def count(trace: Path, places: dict[str, str]) -> list[dict[str, int]]:
    """Per rank process (the traces that run parcomp's runner): operations per place."""
    ranks = []
    for file in trace.iterdir():
        text = file.read_text(errors="replace")
        first = text.split("\n", 1)[0]
        if not RANK_EXEC.match(first):  # not mpiexec's line, which names the runner too
            continue
        tally: dict[str, int] = {}
        for line in text.splitlines():
            m = PATH_ARG.match(line)
            if m is None:
                if line.startswith("getdents64("):
                    tally["directory listings"] = tally.get("directory listings", 0) + 1
                continue
            path = m.group(1)
            if not path:  # fstat of an open descriptor: no path lookup
                continue
            where = classify(path if path.startswith("/") else str(ROOT / path), places)
            tally[where] = tally.get(where, 0) + 1
        ranks.append(tally)
    return ranks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--no-strace", action="store_true")
    args = parser.parse_args()
    if not args.no_strace and shutil.which("strace") is None:
        print("strace not found (apt-get install strace), or use --no-strace", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="parcomp-startup-"))
    venv = sys.prefix  # the venv's root (sys.executable resolves into the base Python)
    base = os.path.realpath(sys.base_prefix)
    print(f"machine: {machine()}\n")
    rows = []
    bad = []
    try:
        for mode in ("node-local (default)", "shared (opt-in)"):
            for p in args.ranks:
                cold = work / f"{p}-{mode[:4]}"
                node_cache, shared = cold / "node", cold / "shared"
                env = {k: v for k, v in os.environ.items() if "CACHE_DIR" not in k}
                env["PARCOMP_NODE_CACHE_DIR"] = str(node_cache)
                if mode.startswith("shared"):
                    env["PARCOMP_CACHE_DIR"] = str(shared)
                timing = run(p, env, None)
                if timing["compiled"] != 1:
                    bad.append(f"{mode}, {p} ranks: {timing['compiled']} compilations")
                places = {
                    "kernel cache, shared": str(shared),
                    "kernel cache, node-local": str(node_cache),
                    "venv": os.path.realpath(venv) + "/",
                    "python install": base + "/",
                    "project (job directory)": str(ROOT) + "/",
                }
                per_rank: list[dict[str, int]] = []
                if not args.no_strace:
                    shutil.rmtree(cold, ignore_errors=True)  # cold again for the traced run
                    trace = work / "trace"
                    shutil.rmtree(trace, ignore_errors=True)
                    trace.mkdir()
                    run(p, env, trace)
                    per_rank = count(trace, places)
                    if len(per_rank) != p:
                        bad.append(f"{mode}, {p} ranks: found {len(per_rank)} rank traces")
                    shutil.rmtree(trace, ignore_errors=True)
                rows.append((mode, p, timing, per_rank))
                med = {
                    k: statistics.median(r.get(k, 0) for r in per_rank) if per_rank else 0
                    for k in (*places, "directory listings", "node-local pseudo-files")
                }
                mx = {k: max((r.get(k, 0) for r in per_rank), default=0) for k in places}
                print(
                    f"{mode:<21} {p:>3} ranks: import {timing['import_s']:6.2f} s, first kernel "
                    f"{timing['first_kernel_s']:6.2f} s, compiled {timing['compiled']}, "
                    f"loaded {timing['loaded']} | per rank (median/max): shared cache "
                    f"{med['kernel cache, shared']:.0f}/{mx['kernel cache, shared']}, node cache "
                    f"{med['kernel cache, node-local']:.0f}/{mx['kernel cache, node-local']}, venv "
                    f"{med['venv']:.0f}, python {med['python install']:.0f}, project "
                    f"{med['project (job directory)']:.0f}, listings {med['directory listings']:.0f}, "
                    f"/sys+/proc+/dev {med['node-local pseudo-files']:.0f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if bad:
        print("FAILED:\n" + "\n".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
