"""parcomp.arrays.fft against mpi4py-fft (FFTW underneath), 3-D transforms, same run.

Run:  bash bench/install_fft_peer.sh && .venv/bin/python bench/fft.py [--sizes 128 256]

mpi4py-fft is an optional peer (built against Debian's FFTW by
``bench/install_fft_peer.sh``; the tests do not need it).  For each size and rank count
(1 and 2: this machine has 2 cores), one MPI job times, interleaved, barrier to barrier
(the slowest rank), medians of ``--repeats``:

* complex-to-complex forward: ``parcomp.arrays.fft.fftn(a)`` and mpi4py-fft's
  ``PFFT(comm, N, dtype=complex128, grid=(-1,)).forward(u, u_hat, normalize=False)``,
  both with its default ``collapse=False`` and with ``collapse=True`` (axes 1 and 2 in one
  2-D FFTW plan: faster here); the ratio is to the faster of the two;
* real-to-complex forward: ``parcomp.arrays.fft.rfftn(a)`` and ``PFFT(..., dtype=float64)``.

Both start from the same slab decomposition (axis 0 split) and leave the result in
their last pencil (no transpose back: mpi4py-fft's default and parcomp's).  mpi4py-fft
writes into a preallocated output and plans with FFTW_MEASURE; parcomp allocates its
result and transforms with ``numpy.fft`` (pocketfft).  Results are checked against each
other (1e-10 relative) before timing.  The target is parcomp <= 1.2x mpi4py-fft.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))


def worker(n: int, repeats: int) -> None:
    import numpy as np
    from _common import collective_medians, machine
    from mpi4py import MPI
    from mpi4py_fft import PFFT, newDistArray

    from parcomp.arrays import fft
    from parcomp.arrays.array import DistArray

    comm = MPI.COMM_WORLD
    p = comm.size
    out = {}
    for kind, dtype in (("c2c", np.complex128), ("r2c", np.float64)):
        for collapse in (False, True):
            plan = PFFT(comm, (n, n, n), axes=(0, 1, 2), dtype=dtype, grid=(-1,), collapse=collapse)
            u = newDistArray(plan, False)
            u_hat = newDistArray(plan, True)
            rng = np.random.default_rng(comm.rank)
            u[:] = rng.standard_normal(u.shape)
            if kind == "c2c":
                u[:] = u + 1j * rng.standard_normal(u.shape)
            # the same global array as a parcomp DistArray (the same slab decomposition)
            a = DistArray((n, n, n), dtype, dims=(p, 1, 1), comm=comm)
            slices = tuple(slice(lo, hi) for lo, hi in a.local_range)
            if tuple(s.start for s in slices) != tuple(u.substart) or a.local_shape != u.shape:
                raise SystemExit(f"layouts differ: {a.local_range} vs {u.substart} {u.shape}")
            a.interior[...] = u
            transform = fft.fftn if kind == "c2c" else fft.rfftn
            got = transform(a)
            plan.forward(u, u_hat, normalize=False)
            # compare through parcomp's layout: move mpi4py-fft's output into a DistArray
            # of its layout, then redistribute it to parcomp's
            theirs = DistArray(
                got.global_shape,
                np.complex128,
                dims=_dims_of(u_hat, got.global_shape, p),
                comm=comm,
            )
            theirs.interior[...] = u_hat
            theirs = theirs.redistribute(got.partition.dims)
            err = (theirs - got).norm() / got.norm()
            if not err < 1e-10:
                raise SystemExit(f"{kind}: results differ by {err:.2e}")
            peer = f"{kind} mpi4py-fft{' collapse' if collapse else ''}"
            cases = {
                peer: lambda plan=plan, u=u, u_hat=u_hat: plan.forward(u, u_hat, normalize=False),
                f"{kind} parcomp": lambda transform=transform, a=a: transform(a),
            }
            out.update(collective_medians(comm, cases, repeats))
            plan.destroy()
    if comm.rank == 0:
        print(json.dumps({"machine": machine(), "medians": out}))


def _dims_of(u_hat, shape, p):
    """The process grid of mpi4py-fft's output (the one axis it splits)."""
    dims = [1, 1, 1]
    for axis in range(3):
        if u_hat.shape[axis] != shape[axis]:
            dims[axis] = p
    return tuple(dims)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return 0
    try:
        import mpi4py_fft  # noqa: F401
    except ImportError:
        print("mpi4py-fft is not installed: run bash bench/install_fft_peer.sh first")
        return 1
    mpiexec = Path(sys.executable).parent / "mpiexec"
    rows = []
    machine_line = ""
    for n in args.sizes:
        for p in args.ranks:
            cmd = [str(mpiexec), "-n", str(p), sys.executable, str(HERE), "--worker", str(n),
                   "--repeats", str(args.repeats)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if res.returncode != 0:
                print(res.stdout[-2000:], res.stderr[-3000:])
                return 1
            data = json.loads(res.stdout.strip().splitlines()[-1])
            print(json.dumps({"size": n, "ranks": p, **data}), file=sys.stderr)
            machine_line = data["machine"]
            med = data["medians"]
            for kind in ("c2c", "r2c"):
                plain, collapsed = med[f"{kind} mpi4py-fft"], med[f"{kind} mpi4py-fft collapse"]
                rows.append((n, p, kind, plain, collapsed, med[f"{kind} parcomp"]))
    print(f"machine: {machine_line}")
    print(f"forward 3-D transforms, medians of {args.repeats}\n")
    print(
        "| size | ranks | transform | mpi4py-fft | mpi4py-fft collapse=True | parcomp | "
        "parcomp / best mpi4py-fft |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for n, p, kind, plain, collapsed, ours in rows:
        best = min(plain, collapsed)
        print(
            f"| {n}³ | {p} | {kind} | {plain * 1e3:.1f} ms | {collapsed * 1e3:.1f} ms | "
            f"{ours * 1e3:.1f} ms | {ours / best:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
