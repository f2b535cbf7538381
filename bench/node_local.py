"""Surviving node loss (issue 7): node-local write bandwidth, and recovery time in-job vs relaunch.

Run:  make ompi-venv && .venv/bin/python bench/node_local.py [--repeats 5]

1. 2 ranks emulating 2 nodes (``PARCOMP_EMULATE_NODES=1``), a 4096^2 float64 DistArray
   (128 MiB): ``Checkpointer.save`` to the shared directory (``--dir``, on this VM's disk,
   fsynced) against the node-local tier in ``/dev/shm`` with a partner copy on the other
   node, without and with the background flush to the shared directory.
2. The same heat2d job (1024^2, 300 steps, 3 ranks on 3 emulated nodes, node-local
   checkpoints every 50 steps in /dev/shm, flushed every 3rd) with world rank 1 SIGKILLed
   at step 175, recovered three ways: in-job with ULFM (Open MPI 5 wheel, ``parcomp run
   --ulfm``), relaunch with the same Open MPI (``--restarts 1``), and relaunch with the
   MPICH wheel.  Time from the kill (a stamp written just before it) to the job having
   restored its state (heat2d logs ``resumed_at``); medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import BIN, ROOT, machine

HERE = Path(__file__).resolve().parent
OMPI = ROOT / ".venv-ompi" / "bin"


def bandwidth(workdir: Path, repeats: int, ranks_per_node: int) -> dict:
    local = Path(tempfile.mkdtemp(prefix="parcomp-bench-", dir="/dev/shm"))
    env = dict(os.environ, PARCOMP_EMULATE_NODES=str(ranks_per_node), PARCOMP_LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [
            BIN / "parcomp",
            "run",
            "-n",
            "2",
            "--timeout",
            "600",
            HERE / "node_local_worker.py",
            workdir / "shared",
            local,
            str(repeats),
            "4096",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    shutil.rmtree(local, ignore_errors=True)
    shutil.rmtree(workdir / "shared", ignore_errors=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def recovery(bin_dir: Path, ulfm: bool, workdir: Path) -> dict:
    local = Path(tempfile.mkdtemp(prefix="parcomp-bench-", dir="/dev/shm"))
    stamp, failures = workdir / "stamp", workdir / "failures.jsonl"
    for path in (stamp, failures):
        path.unlink(missing_ok=True)
    shutil.rmtree(workdir / "ck", ignore_errors=True)
    env = dict(
        os.environ,
        PARCOMP_EMULATE_NODES="1",
        PARCOMP_FAULT_STAMP=str(stamp),
        PARCOMP_FAILURE_LOG=str(failures),
    )
    argv = [bin_dir / "parcomp", "run", "-n", "3", "--timeout", "120"]
    argv += ["--ulfm"] if ulfm else ["--restarts", "1"]
    argv += [
        ROOT / "jobs" / "heat2d.py",
        "--n",
        "1024",
        "--steps",
        "300",
        "--no-png",
        "--out",
        workdir / "out",
        "--checkpoint-dir",
        workdir / "ck",
        "--local-dir",
        local,
        "--checkpoint-every",
        "50",
        "--flush-every",
        "3",
        "--die-at-step",
        "175",
        "--die-rank",
        "1",
    ]
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, check=False
    )
    shutil.rmtree(local, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-4000:])
    died = float(stamp.read_text())
    resumed = [float(x) for x in re.findall(r"resumed_at=([\d.]+)", proc.stderr)]
    out = {"total": resumed[-1] - died, "sha": re.search(r"sha256 = (\w+)", proc.stdout).group(1)}
    if ulfm:
        event = json.loads(failures.read_text().splitlines()[-1])
        out["detect"] = event["detected_unix"] - died
        out["shrink"] = event["shrunk_unix"] - event["detected_unix"]
        out["restore"] = resumed[-1] - event["shrunk_unix"]
        assert "restart 1/" not in proc.stderr
    else:
        assert "restart 1/1" in proc.stderr
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "bench-node-local")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    for per_node, label in ((1, "2 emulated nodes: partner copies"), (2, "1 node: no partner")):
        bw = bandwidth(args.dir, args.repeats, per_node)
        gib = bw["bytes"] / 2**30
        print(
            f"\ncheckpoint of {gib * 1024:.0f} MiB on 2 ranks, {label}; medians of {args.repeats}:"
        )
        keys = (
            "shared directory",
            "node-local + partner copy",
            "node-local + partner, flush started",
            "flush committed",
        )
        for key in keys:
            name = (
                key
                if per_node == 1
                else key.replace(" + partner copy", "").replace(" + partner", "")
            )
            print(f"  {name:38s} {bw[key] * 1e3:8.1f} ms  {gib / bw[key]:6.2f} GiB/s")
        ratio = bw["shared directory"] / bw["node-local + partner copy"]
        print(f"  node-local speed / shared directory speed: {ratio:.2f}")
    if not (OMPI / "parcomp").exists():
        raise SystemExit(f"{OMPI}/parcomp missing: run `make ompi-venv` first")
    paths = {
        "in-job (ULFM, Open MPI)": (OMPI, True),
        "relaunch (Open MPI)": (OMPI, False),
        "relaunch (MPICH)": (BIN, False),
    }
    results: dict[str, list[dict]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for name, (bin_dir, ulfm) in paths.items():
            results[name].append(recovery(bin_dir, ulfm, args.dir))
    shas = {r["sha"] for rs in results.values() for r in rs}
    print(
        f"\nrecovery of heat2d 1024^2 on 3 ranks, rank 1 killed at step 175, medians of {args.repeats}:"
    )
    for name, rs in results.items():
        total = statistics.median(r["total"] for r in rs)
        line = f"  {name:26s} kill -> resumed {total * 1e3:7.0f} ms (min {min(r['total'] for r in rs) * 1e3:.0f}, max {max(r['total'] for r in rs) * 1e3:.0f})"
        if "detect" in rs[0]:
            parts = {
                k: statistics.median(r[k] for r in rs) * 1e3
                for k in ("detect", "shrink", "restore")
            }
            line += f"; detect {parts['detect']:.0f} ms, shrink {parts['shrink']:.1f} ms, restore+restart {parts['restore']:.0f} ms"
        print(line)
    print(f"  results bitwise identical across all runs: {len(shas) == 1}")


if __name__ == "__main__":
    main()
