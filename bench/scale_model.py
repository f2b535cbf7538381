"""A scaling model to 10,000 ranks from MPI calls counted at 1-64 ranks.

Run:  .venv/bin/python bench/scale_model.py [--ranks 1 2 4 8 16 32 64] [--plot FILE]

1. alpha (latency per message), beta (seconds per byte) and an 8-byte Allreduce are
   measured between 2 ranks of this machine (bench/alphabeta_job.py).
2. bench/mpicount.c (a PMPI library, LD_PRELOADed) counts each rank's MPI calls and bytes
   while bench/scale_model_job.py runs each parcomp path 3 times, every path in its own
   counting section, at each rank count (4 ranks per emulated node).
3. Each collective is priced with its textbook algorithm (log p rounds for allreduce,
   bcast, barrier, comm_dup; (p-1) pieces for allgather, gather at the root and alltoall;
   MPICH's comm_split gathers every rank's (color, key)); point-to-point messages cost
   alpha + bytes*beta.  Calls per path are taken from the largest measured rank count
   and held constant beyond it (the table shows whether they still grew), except where
   the algorithm is known to change with p: the keyed shuffle goes in two hops from 64
   ranks on, and its messages per rank are then scaled as 2 sqrt(p).
4. Each collective's communicator size (and each rank's neighbour-message count) at the
   largest p says how it grows: like p (the whole job), like sqrt(p) (a group of the
   two-hop shuffle) or not at all (a node, fixed neighbours).  The share of the
   modelled time in terms whose cost grows like p (allgather, gather, alltoall,
   comm_split over the whole job: O(p) per rank) is reported at 10,000 ranks.

Prints the per-path counts, the predicted time per call at 64, 1,000 and 10,000 ranks,
and writes a log-log plot.  Needs the venv's mpicc (the mpich wheel ships it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MPIEXEC, machine

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PARCOMP = Path(sys.executable).with_name("parcomp")
MPICC = Path(sys.executable).with_name("mpicc")
sys.path.insert(0, str(BENCH))
from scale_model_job import PATHS  # noqa: E402

REPS = 3


def price(kind: str, calls: float, nbytes: float, peers: float, a: float, b: float) -> float:
    """Seconds for ``calls`` calls of ``kind`` moving ``nbytes`` (this rank's share), on
    communicators with ``peers`` other ranks per call on average."""
    if kind in ("p2p_send", "neighbor_msgs"):  # neighbor_msgs: calls = messages sent
        return calls * a + nbytes * b
    q = peers + 1  # the communicator's size
    if q <= 1:
        return 0.0
    lg = math.ceil(math.log2(q))
    if kind in ("allreduce", "iallreduce"):
        return calls * 2 * lg * a + 2 * nbytes * b
    if kind in ("reduce", "barrier", "ibarrier", "comm_dup"):
        return calls * lg * a * (2 if kind == "comm_dup" else 1) + nbytes * b
    if kind == "bcast":
        return calls * lg * a + nbytes * lg * b
    if kind in ("allgather", "allgatherv", "gather", "gatherv", "scatter", "scatterv"):
        return calls * lg * a + nbytes * peers * b
    if kind in ("alltoall", "alltoallv", "alltoallw"):
        return calls * peers * a + nbytes * b
    if kind == "comm_split":
        return calls * (lg * a + 8 * q * b)
    if kind in ("win_create", "rma"):
        return calls * lg * a
    raise ValueError(kind)


#: kinds whose cost per rank grows linearly in the size of their communicator
LINEAR = {"allgather", "allgatherv", "gather", "gatherv", "alltoall", "alltoallv",
          "alltoallw", "comm_split"}  # fmt: skip
LABEL = {"p": "over the job", "sqrt p": "over ~sqrt p ranks", "1": "fixed"}


def grows(peers_at_top: float, top: int) -> str:
    """How a collective's communicator (or a rank's message count) grows with p, judged
    at the largest measured p: like p (the whole job), like sqrt(p) (a group of the
    two-hop shuffle), or not at all (a node, a fixed set of neighbours)."""
    if peers_at_top >= 0.75 * (top - 1):
        return "p"
    if peers_at_top >= 0.75 * (math.sqrt(top) - 1):
        return "sqrt p"
    return "1"


def scaled(peers_at_top: float, top: int, p: int) -> float:
    law = grows(peers_at_top, top)
    if law == "p":
        return peers_at_top * (p - 1) / (top - 1)
    if law == "sqrt p":
        return peers_at_top * math.sqrt(p) / math.sqrt(top)
    return peers_at_top


def counts(p: int, lib: Path, work: Path) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per path, per kind: (calls, bytes, peers per call) per call of the path, the max
    over ranks."""
    out_dir = work / f"counts{p}"
    out_dir.mkdir()
    env = dict(os.environ, MPICOUNT_DIR=str(out_dir), LD_PRELOAD=str(lib))
    env["PARCOMP_EMULATE_NODES"] = "4"
    cmd = [str(PARCOMP), "run", "-n", str(p), "--timeout", "900", str(BENCH / "scale_model_job.py"),
           str(REPS), str(work / f"data{p}")]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=960)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd}: {res.returncode}\n{res.stdout}\n{res.stderr}")
    table: dict[str, dict[str, tuple[float, float, float]]] = {path: {} for path in PATHS}
    files = sorted(out_dir.iterdir())
    if len(files) != p:
        raise RuntimeError(f"{len(files)} count files for {p} ranks")
    for file in files:
        for line in file.read_text().splitlines():
            section, kind, c, nb, peers = line.split()
            s = int(section)
            if 1 <= s <= len(PATHS):
                path = PATHS[s - 1]
                old = table[path].get(kind, (0.0, 0.0, 0.0))
                per_call = int(peers) / int(c) if kind != "neighbor_msgs" else int(c) / REPS
                table[path][kind] = (
                    max(old[0], int(c) / REPS),
                    max(old[1], int(nb) / REPS),
                    max(old[2], per_call),
                )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--plot", type=Path, default=BENCH / "scale_model.png")
    parser.add_argument("--save", type=Path, help="write the constants and counts (JSON)")
    parser.add_argument("--load", type=Path, help="model saved counts instead of measuring")
    args = parser.parse_args()
    if args.load is not None:
        saved = json.loads(args.load.read_text())
        consts = saved["constants"]
        measured = {int(p): v for p, v in saved["counts"].items()}
        args.ranks = sorted(measured)
        a, b = consts["alpha"], consts["beta"]
        print(f"machine: {saved['machine']} (counts loaded from {args.load})")
        return report(args, measured, a, b)
    work = Path(tempfile.mkdtemp(prefix="parcomp-model-"))
    try:
        lib = work / "libmpicount.so"
        subprocess.run([str(MPICC), "-O2", "-shared", "-fPIC", str(BENCH / "mpicount.c"),
                        "-o", str(lib)], check=True)  # fmt: skip
        ab = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable,
                             str(BENCH / "alphabeta_job.py")],
                            capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
        consts = json.loads(ab.stdout.strip().splitlines()[-1])
        a, b = consts["alpha"], consts["beta"]
        print(f"machine: {machine()}")
        print(
            f"alpha = {a * 1e6:.2f} us, beta = {b * 1e9:.4f} ns/B ({1 / b / 1e9:.1f} GB/s), "
            f"8-byte Allreduce on 2 ranks {consts['allreduce_8B'] * 1e6:.2f} us "
            f"(model 2 alpha log2(2) = {2 * a * 1e6:.2f} us)\n"
        )
        measured = {p: counts(p, lib, work) for p in args.ranks}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.save is not None:
        args.save.write_text(
            json.dumps({"machine": machine(), "constants": consts, "counts": measured})
        )
    return report(args, measured, a, b)


def report(args: argparse.Namespace, measured: dict, a: float, b: float) -> int:
    """Print the counts, the modelled times and the plot."""
    top = max(args.ranks)
    print("MPI calls per call of each path, per rank (max over ranks), by rank count:\n")
    for path in PATHS:
        kinds = sorted({k for p in args.ranks for k in measured[p][path]})
        cells = []
        for k in kinds:
            series = "/".join(f"{measured[p][path].get(k, (0, 0, 0))[0]:.3g}" for p in args.ranks)
            at_top = measured[top][path].get(k, (0, 0, 0))[2]
            law = grows(at_top, top) if at_top else "1"
            tag = f" ({LABEL[law]}{', O(p)' if law == 'p' and k in LINEAR else ''})"
            cells.append(f"{k}{tag} {series}")
        print(f"  {path}: " + ("; ".join(cells) if cells else "no MPI calls"))
    print(f"\n(ranks: {'/'.join(map(str, args.ranks))})\n")
    targets = [64, 1000, 10000]
    print("| path | " + " | ".join(f"p = {t:,}" for t in targets) + " | O(p) share at 10,000 |")
    print("|---|" + "---:|" * len(targets) + "---:|")
    curves = {}
    ps = [2**i for i in range(1, 15)]
    for path in PATHS:
        per = measured[top][path]

        def total(p: int, only_linear: bool = False, per=per) -> float:
            out = 0.0
            for k, (c, nb, peers) in per.items():
                law = grows(peers, top) if peers else "1"
                if only_linear and not (law == "p" and k in LINEAR):
                    continue
                if k == "neighbor_msgs":  # messages per rank: scale the count itself
                    out += price(k, scaled(c, top, p), nb, 0, a, b)
                else:
                    out += price(k, c, nb, scaled(peers, top, p), a, b)
            return out

        row = [total(t) for t in targets]
        share = total(10000, True) / row[-1] if row[-1] else 0.0
        print(
            f"| {path} | "
            + " | ".join(f"{x * 1e6:,.1f} us" for x in row)
            + f" | {100 * share:.0f} % |"
        )
        curves[path] = [total(p) for p in ps]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 5))
        for path, ys in curves.items():
            ax.loglog(ps, [max(y, 1e-9) * 1e6 for y in ys], marker=".", label=path)
        ax.axvline(top, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("ranks p (counts measured up to the dotted line)")
        ax.set_ylabel("modelled MPI time per call, per rank (us)")
        ax.set_title(f"alpha {a * 1e6:.2f} us, beta {b * 1e9:.3f} ns/B (this machine)")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", lw=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")
    except ImportError:
        print("\n(matplotlib missing: no plot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
