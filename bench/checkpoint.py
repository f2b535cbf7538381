"""Checkpoint bandwidth, restore speed, heat2d overhead and recovery time, in one run.

Run:  .venv/bin/python bench/checkpoint.py [--repeats 5] [--dir /work/tmpbench]

1. Durable-write baselines of 128 MiB (4096^2 float64) in this process: ``dd
   conv=fdatasync``, ``np.save`` + fsync, h5py contiguous + fsync.
2. ``mpiexec -n 1`` and ``-n 2`` of bench/checkpoint_worker.py: parcomp save and restore
   of a 4096^2 DistArray against np.save + fsync per rank and a direct h5py read.
3. heat2d 4096^2 on 2 ranks, 150 steps: no checkpoints, a checkpoint every 2 s, and the
   same in async mode; the overhead per checkpoint, and what a checkpoint per minute costs.
4. Recovery: heat2d with a rank SIGKILLed at step 30 under ``parcomp run --restarts 1``:
   time from the kill to the restarted job having restored its state (medians).
Disk caches are warm (no root-only cache dropping): restore reads come from memory.
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
import time
from pathlib import Path

import numpy as np
from _common import BIN, MPIEXEC, ROOT, machine

HERE = Path(__file__).resolve().parent


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def baselines(folder: Path, repeats: int) -> dict[str, float]:
    import h5py

    data = np.random.default_rng(0).random((4096, 4096))

    def dd():
        subprocess.run(
            [
                "dd",
                "if=/dev/zero",
                f"of={folder / 'dd.bin'}",
                "bs=4M",
                "count=32",
                "conv=fdatasync",
            ],
            check=True,
            capture_output=True,
        )

    def npsave():
        with open(folder / "a.npy", "wb") as fh:
            np.save(fh, data)
            fh.flush()
            os.fsync(fh.fileno())

    def h5():
        with h5py.File(folder / "a.h5", "w") as fh:
            fh.create_dataset("u", data=data)
        fsync_file(folder / "a.h5")

    cases = {"dd conv=fdatasync": dd, "np.save+fsync": npsave, "h5py contiguous+fsync": h5}
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in out.items()}


def heat(argv: list[str], timeout: float = 600) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "parcomp"), "run", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return time.perf_counter() - t, proc.stderr + proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "bench-checkpoint")
    args = parser.parse_args()
    folder = args.dir
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    GiB = 2**30
    base = baselines(folder, args.repeats)
    mpi = {}
    for ranks in (1, 2):
        out = subprocess.run(
            [
                str(MPIEXEC),
                "-n",
                str(ranks),
                sys.executable,
                str(HERE / "checkpoint_worker.py"),
                str(folder),
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=1200,
        )
        mpi[ranks] = json.loads(out.stdout.strip().splitlines()[-1])
    # heat2d overhead
    common = [
        "-n",
        "2",
        "jobs/heat2d.py",
        "--n",
        "4096",
        "--steps",
        "150",
        "--no-png",
        "--out",
        str(folder / "h"),
    ]
    runs: dict[str, list[float]] = {"none": [], "sync": [], "async": []}
    counts: dict[str, list[int]] = {"sync": [], "async": []}
    for _ in range(max(3, args.repeats // 2)):
        for mode in runs:
            ck = folder / f"hc-{mode}"
            shutil.rmtree(ck, ignore_errors=True)
            extra = (
                []
                if mode == "none"
                else ["--checkpoint-dir", str(ck), "--checkpoint-seconds", "2", "--keep", "1"]
            )
            if mode == "async":
                extra.append("--async-checkpoint")
            _, text = heat(common + extra)
            seconds = float(
                re.search(r"steps on 2 ranks \(grid \S+ \S+\) in (\S+) s", text).group(1)
            )
            runs[mode].append(seconds)
            if mode != "none":
                counts[mode].append(text.count("committed"))
    # recovery time
    recoveries = []
    for trial in range(args.repeats):
        stamp = folder / f"stamp{trial}"
        env = dict(os.environ, PARCOMP_FAULT_STAMP=str(stamp))
        ck = folder / f"rc{trial}"
        proc = subprocess.run(
            [
                str(BIN / "parcomp"),
                "run",
                "-n",
                "2",
                "--restarts",
                "1",
                "jobs/heat2d.py",
                "--n",
                "1024",
                "--steps",
                "60",
                "--no-png",
                "--checkpoint-dir",
                str(ck),
                "--checkpoint-every",
                "10",
                "--die-at-step",
                "30",
                "--die-rank",
                "1",
                "--out",
                str(folder / "r"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        resumed = float(re.search(r"resumed_at=(\S+)\)", proc.stderr).group(1))
        recoveries.append(resumed - float(stamp.read_text()))
    print(f"machine: {machine()}")
    print(f"folder: {folder} ({os.statvfs(folder).f_bsize} B blocks); medians of {args.repeats}")
    size = 4096 * 4096 * 8
    for name, sec in base.items():
        print(f"  {name:34s} {size / sec / GiB:6.2f} GiB/s")
    for ranks, r in mpi.items():
        for name in (
            "np.save+fsync",
            "parcomp.save",
            "h5py direct read",
            "parcomp.restore",
            "Checkpointer()+restore",
        ):
            print(
                f"  {ranks} rank(s) {name:26s} {r['bytes'] / r[name] / GiB:6.2f} GiB/s aggregate ({r[name] * 1e3:.0f} ms)"
            )
    dd = size / base["dd conv=fdatasync"]
    for ranks, r in mpi.items():
        print(
            f"ratio save/dd, {ranks} rank(s):            {r['bytes'] / r['parcomp.save'] / dd:.3f}  (goal >= 0.8)"
        )
        print(
            f"ratio save/np.save same ranks, {ranks}:     {r['np.save+fsync'] / r['parcomp.save']:.3f}"
        )
        print(
            f"ratio restore/direct read, {ranks} rank(s): {r['h5py direct read'] / r['parcomp.restore']:.3f}  (goal >= 0.85)"
        )
        print(
            f"  ... with Checkpointer() made each time: {r['h5py direct read'] / r['Checkpointer()+restore']:.3f}"
        )
    none = statistics.median(runs["none"])
    for mode in ("sync", "async"):
        t = statistics.median(runs[mode])
        n = statistics.median(counts[mode])
        per = (t - none) / max(n, 1)
        print(
            f"heat2d 4096^2 x150 on 2 ranks: {mode:5s} {t:.2f} s vs {none:.2f} s with {n:.0f} checkpoints: "
            f"{per * 1e3:.0f} ms each -> {100 * per / 60:.2f}% of runtime at one per minute"
        )
    print(
        f"recovery (SIGKILL -> state restored in the relaunched job): median {statistics.median(recoveries):.2f} s "
        f"(min {min(recoveries):.2f}, max {max(recoveries):.2f})"
    )


if __name__ == "__main__":
    main()
