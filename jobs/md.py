"""Lennard-Jones molecular dynamics with a cutoff: ghosts, migration, energy conservation.

Run:  parcomp run -n 2 jobs/md.py [--cells 6] [--steps 400] [--verify]

``4 --cells^3`` atoms start on an FCC lattice at reduced density ``--density`` in a
periodic cube, with velocities from a hash of their ids (zero total momentum, scaled to
``--temperature``).  They interact through the Lennard-Jones potential (epsilon = sigma =
1), cut at ``--rc`` and shifted to zero there, and move by velocity Verlet with time step
``--dt``.  Each step: a half kick, a drift, ``DistParticles.migrate`` (periodic wrap),
``ghosts(rc)`` (copies of the neighbours' atoms within ``rc`` of this rank's block,
corners included, shifted across the periodic boundary), the forces (a Numba kernel,
``parcomp.kernels.lj_forces``), a half kick.

Every sum runs in a canonical order (atoms and ghosts by id, energies by exact sums), so
positions, velocities and energies are the same bits on any rank count.  The total
energy is conserved: the job exits 1 if its largest relative deviation from the start
exceeds ``--tolerance`` (default 1e-3; a few 1e-5 measured at the defaults).  ``--verify``
checks the final forces and potential energy against a serial NumPy minimum-image
computation on the gathered atoms (1e-10 relative).  It checkpoints and resumes on any rank count
(``--checkpoint-dir``/``--checkpoint-every``) with the same answer.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import DistArray, DistParticles, exact_allsum
from parcomp.kernels import lj_forces, lj_forces_numpy
from parcomp.testing import inject_failure

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other jobs' helpers
from jobtools import add_restart_options, checkpointer
from walkers import splitmix64

BASIS = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])


def lattice(ids: np.ndarray, cells: int, side: float) -> np.ndarray:
    """FCC positions of atoms ``ids`` (4 per unit cell), from the id alone."""
    b, c = ids % 4, ids // 4
    ix, iy, iz = c // (cells * cells), (c // cells) % cells, c % cells
    a = side / cells
    return (np.stack([ix, iy, iz], axis=1) + BASIS[b] + 0.25) * a


def velocities(ids: np.ndarray, seed: int) -> np.ndarray:
    """Uniform velocities in [-1, 1) per axis from a hash of (seed, id, axis)."""
    with np.errstate(over="ignore"):
        out = np.empty((ids.size, 3))
        for axis in range(3):
            z = splitmix64(ids.astype(np.uint64) * np.uint64(3) + np.uint64(axis) + np.uint64(seed))
            out[:, axis] = (z >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0
    return out


def forces(p: DistParticles, rc: float) -> np.ndarray:
    """Forces on this rank's atoms (and their potential energies in ``p["e"]``)."""
    p.ghosts(rc)
    x, gx = p["x"], p.ghost_fields["x"]
    cand = np.concatenate((x, gx))
    ids = np.concatenate((p["id"], p.ghost_fields["id"]))
    cand = np.ascontiguousarray(cand[np.lexsort((cand[:, 2], cand[:, 1], cand[:, 0], ids))])
    f = np.empty_like(x)
    e = np.empty(x.shape[0])
    lj_forces(x, cand, rc * rc, 4.0 * (rc**-12 - rc**-6), f, e)
    p["e"] = e
    return f


def energies(p: DistParticles) -> tuple[float, float]:
    """(kinetic, potential) over all ranks, exact sums: the same bits on any rank count."""
    v = p["v"]
    kinetic = exact_allsum(0.5 * (v * v).sum(axis=1), p.comm)
    return kinetic, exact_allsum(p["e"], p.comm)


def start(args, grid) -> DistParticles:
    n = 4 * args.cells**3
    side = (n / args.density) ** (1.0 / 3.0)
    rank, size = grid.rank, grid.partition.size
    ids = np.arange(rank * n // size, (rank + 1) * n // size, dtype=np.int64)
    v = velocities(ids, args.seed)
    mean = np.array([exact_allsum(v[:, a], grid.comm) for a in range(3)]) / n
    v -= mean
    scale = math.sqrt(
        3 * (n - 1) * args.temperature / (2 * exact_allsum(0.5 * (v * v).sum(axis=1), grid.comm))
    )
    fields = {
        "x": lattice(ids, args.cells, side),
        "v": v * scale,
        "a": np.zeros((ids.size, 3)),
        "e": np.zeros(ids.size),
        "id": ids,
    }
    return DistParticles(grid, fields, box=[(0.0, side)] * 3, order_by="id")


def simulate(args, comm=None, checkpointer=None):
    """Velocity Verlet; returns ``(particles, energies at start, largest drift, seconds)``."""
    log = parcomp.get_logger("parcomp.jobs.md")
    n = 4 * args.cells**3
    side = (n / args.density) ** (1.0 / 3.0)
    grid = DistArray((args.grid,) * 3, periods=True, comm=comm)
    params = {
        "cells": args.cells,
        "density": args.density,
        "temperature": args.temperature,
        "dt": args.dt,
        "rc": args.rc,
        "seed": args.seed,
    }
    restored = checkpointer.restore(require=params) if checkpointer is not None else None
    if restored is not None:
        p = DistParticles.restore(grid, restored, "atoms", box=[(0.0, side)] * 3, order_by="id")
        first, e0, drift = (
            restored.scalars["step"],
            restored.scalars["e0"],
            restored.scalars["drift"],
        )
        if first > args.steps:  # the same on every rank: the restored manifest is agreed
            raise parcomp.ConfigError(
                f"the checkpoint is at step {first}, beyond --steps {args.steps}: ask for at "
                "least that many steps, or start afresh in another --checkpoint-dir"
            )
        log.info("resumed at step %d on %d ranks", first, grid.partition.size)
    else:
        p = start(args, grid)
        p["a"] = forces(p, args.rc)
        first, drift = 0, 0.0
        kinetic, potential = energies(p)
        e0 = kinetic + potential
    dt = args.dt
    t0 = time.perf_counter()
    for step in range(first + 1, args.steps + 1):
        p["v"] += 0.5 * dt * p["a"]
        p["x"] += dt * p["v"]
        p.migrate()
        p["a"] = forces(p, args.rc)
        p["v"] += 0.5 * dt * p["a"]
        kinetic, potential = energies(p)
        drift = max(drift, abs(kinetic + potential - e0) / abs(e0))
        inject_failure(step, args.die_at_step, args.die_rank, comm)
        if args.step_delay:
            time.sleep(args.step_delay)
        if step % max(args.steps // 10, 1) == 0:
            log.info(
                "step %d/%d: E = %.8f (kinetic %.6f), largest drift %.2e",
                step,
                args.steps,
                kinetic + potential,
                kinetic,
                drift,
            )
        if checkpointer is not None:
            checkpointer.checkpoint_if_due(
                step,
                local=p.checkpoint_state("atoms"),
                scalars={**params, "step": step, "e0": e0, "drift": drift},
            )
    if checkpointer is not None:
        checkpointer.close()
    return p, e0, drift, side, time.perf_counter() - t0


def verify(whole: dict[str, np.ndarray], side: float, rc: float) -> tuple[float, float]:
    """Relative errors of the final forces and potential energy against a serial NumPy
    minimum-image computation on the gathered atoms (rank 0)."""
    f_ref, e_ref = lj_forces_numpy(whole["x"], side, rc)
    f_err = float(np.abs(whole["a"] - f_ref).max() / np.abs(f_ref).max())
    e_err = abs(float(whole["e"].sum()) - e_ref) / abs(e_ref)
    return f_err, e_err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cells", type=int, default=6, help="FCC unit cells per side (4 cells^3 atoms)"
    )
    parser.add_argument("--density", type=float, default=0.8, help="reduced density")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="starting reduced temperature"
    )
    parser.add_argument("--dt", type=float, default=0.004, help="time step")
    parser.add_argument("--steps", type=int, default=400, help="time steps")
    parser.add_argument("--rc", type=float, default=2.5, help="cutoff radius")
    parser.add_argument("--grid", type=int, default=8, help="decomposition cells per side")
    parser.add_argument("--seed", type=int, default=7, help="velocity hash seed")
    parser.add_argument(
        "--tolerance", type=float, default=1e-3, help="largest relative energy drift allowed"
    )
    parser.add_argument(
        "--verify", action="store_true", help="check the final forces against serial NumPy"
    )
    parser.add_argument("--out", type=Path, default=Path("out/md"), help="output folder")
    add_restart_options(parser)
    args = parser.parse_args(argv)
    if args.cells < 1 or args.steps < 0 or not args.density > 0 or not args.dt > 0 or args.grid < 1:
        raise parcomp.ConfigError(
            "need --cells >= 1, --steps >= 0, --density > 0, --dt > 0, --grid >= 1"
        )
    ckpt = checkpointer(args)
    p, e0, drift, side, seconds = simulate(args, checkpointer=ckpt)
    kinetic, potential = energies(p)
    whole = p.gather()
    from grayscott import make_folder

    make_folder(args.out, p.comm)
    ok = True
    if p.rank == 0:
        import h5py

        path = args.out / "md.h5"
        with h5py.File(path, "w") as fh:
            for name in ("id", "x", "v"):
                fh[name] = whole[name]
            fh.attrs["box"] = side
            fh.attrs["steps"] = args.steps
        digest = hashlib.sha256(whole["x"].tobytes() + whole["v"].tobytes()).hexdigest()
        print(
            f"md: {len(whole['id'])} atoms, box {side:.4f}, {args.steps} steps on {p.partition.size} ranks in {seconds:.2f} s"
        )
        print(
            f"energy: start {e0:.10f}, end {kinetic + potential:.10f}, largest relative drift {drift:.3e}"
        )
        print(f"sha256 = {digest}")
        print(f"wrote {path}")
        ok = drift <= args.tolerance
        if args.verify:
            f_err, e_err = verify(whole, side, args.rc)
            same = f_err <= 1e-10 and e_err <= 1e-10
            print(
                f"serial NumPy forces at the end: relative error {f_err:.1e} (forces), "
                f"{e_err:.1e} (potential energy): {'agree' if same else 'DIFFER'} (1e-10)"
            )
            ok = ok and same
    if not parcomp.agree(ok, comm=p.comm):
        parcomp.exit_all(
            1, f"md: a check failed (energy drift above {args.tolerance:g}, or --verify); see above"
        )


if __name__ == "__main__":
    main()
