"""Random walkers with a density deposit: particles that move between ranks every step.

Run:  parcomp run -n 2 jobs/walkers.py [--walkers 20000] [--steps 200] [--n 64] [--verify]

``--walkers`` walkers start uniformly in the periodic box ``[0, L)^2`` (``L = --n``, one
cell per unit) and take ``--steps`` steps of ``dx = a (2 u - 1)`` per axis, ``u`` uniform
in ``[0, 1)``.  Each step's ``u`` comes from a hash of (seed, walker id, step, axis)
(SplitMix64), not from a stream, so a walker's path does not depend on which rank moves
it.  Walkers move between ranks with ``DistParticles.migrate`` (periodic wrap) and are
deposited on the grid by cloud-in-cell in canonical (id) order
(``DistParticles(order_by="id")``), so positions and density are the same bits on any rank
count; ``--verify`` checks them against a serial NumPy run on rank 0 (``np.add.at``
deposit, written independently).

The mean squared displacement (of the unwrapped displacement, an extra field) is compared
with ``2 d D t``: here ``D = a^2 / 6`` per step (the variance of a step is ``a^2 / 3``
per axis), and the statistical error of the mean over ``N`` walkers is
``sqrt(2 / d) / sqrt(N)`` relative; the job exits 1 beyond 4 of those.  It checkpoints
(``--checkpoint-dir``/``--checkpoint-every``; the walkers as per-rank data) and resumes
on any rank count with the same answer.
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
from parcomp.testing import inject_failure

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other jobs' helpers
from jobtools import add_restart_options, checkpointer

NDIM = 2
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def steps_for(ids: np.ndarray, step: int, seed: int, a: float) -> np.ndarray:
    """The displacement of walkers ``ids`` at ``step``: shape (m, 2), from the hash only."""
    with np.errstate(over="ignore"):
        base = splitmix64(np.uint64(seed) * _GOLDEN + np.uint64(step))
        out = np.empty((ids.size, NDIM))
        for axis in range(NDIM):
            z = splitmix64(ids.astype(np.uint64) * np.uint64(NDIM) + np.uint64(axis) + base)
            u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
            out[:, axis] = a * (2.0 * u - 1.0)
    return out


def start(walkers: int, n: int, seed: int, rank: int, size: int) -> dict[str, np.ndarray]:
    """This rank's share of the starting walkers (by id; the constructor moves them)."""
    ids = np.arange(rank * walkers // size, (rank + 1) * walkers // size, dtype=np.int64)
    u = steps_for(ids, 0, seed, 0.5) + 0.5  # uniform in [0, 1): "step 0" of the same hash
    return {"x": u * n, "id": ids, "disp": np.zeros((ids.size, NDIM))}


def simulate(args, comm=None, checkpointer=None):
    """Run the walk; returns ``(particles, density, seconds)`` (collective)."""
    log = parcomp.get_logger("parcomp.jobs.walkers")
    n = args.n
    grid = DistArray((n, n), periods=True, comm=comm)
    options = dict(box=[(0.0, float(n))] * NDIM, order_by="id")
    params = {"walkers": args.walkers, "n": n, "a": args.a, "seed": args.seed}
    restored = checkpointer.restore(require=params) if checkpointer is not None else None
    if restored is not None:
        p = DistParticles.restore(grid, restored, "walkers", **options)
        first = restored.scalars["step"]
        if first > args.steps:
            raise parcomp.ConfigError(
                f"the checkpoint is at step {first}, beyond --steps {args.steps}"
            )
        log.info("resumed at step %d on %d ranks", first, grid.partition.size)
    else:
        rank, size = grid.rank, grid.partition.size
        p = DistParticles(grid, start(args.walkers, n, args.seed, rank, size), **options)
        first = 0
    t0 = time.perf_counter()
    for step in range(first + 1, args.steps + 1):
        dx = steps_for(p["id"], step, args.seed, args.a)
        p["x"] += dx
        p["disp"] += dx
        p.migrate()
        inject_failure(step, args.die_at_step, args.die_rank, comm)
        if args.step_delay:
            time.sleep(args.step_delay)
        if step % max(args.steps // 10, 1) == 0:
            log.info("step %d/%d", step, args.steps)
        if checkpointer is not None:
            checkpointer.checkpoint_if_due(
                step, local=p.checkpoint_state("walkers"), scalars={**params, "step": step}
            )
    if checkpointer is not None:
        checkpointer.close()
    density = grid.zeros_like()
    p.deposit(density)
    return p, density, time.perf_counter() - t0


def serial(args) -> tuple[np.ndarray, np.ndarray]:
    """The serial NumPy run: final positions (by id) and the CIC density (np.add.at)."""
    n = args.n
    w = start(args.walkers, n, args.seed, 0, 1)
    x = w["x"]
    for step in range(1, args.steps + 1):
        x += steps_for(w["id"], step, args.seed, args.a)
        out = (x < 0) | (x >= n)
        x[out] = np.mod(x[out], n)
        x[x >= n] = 0.0
    rho = np.zeros((n, n))
    s = x - 0.5
    base = np.floor(s).astype(np.int64)
    frac = s - base
    cells, weights = [], []
    for dx in (0, 1):  # the corners in parcomp's order: (0,0), (0,1), (1,0), (1,1)
        for dy in (0, 1):
            wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
            wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
            cells.append(((base[:, 0] + dx) % n) * n + (base[:, 1] + dy) % n)
            weights.append(wx * wy)
    # walker by walker (id order), corner by corner: each cell sums in canonical order
    np.add.at(rho.reshape(-1), np.stack(cells, axis=1).ravel(), np.stack(weights, axis=1).ravel())
    return x, rho


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=20000, help="number of walkers")
    parser.add_argument("--steps", type=int, default=200, help="time steps")
    parser.add_argument("--n", type=int, default=64, help="grid cells per side (box length)")
    parser.add_argument("--a", type=float, default=0.5, help="largest step per axis")
    parser.add_argument("--seed", type=int, default=2026, help="hash seed")
    parser.add_argument("--verify", action="store_true", help="compare with a serial NumPy run")
    parser.add_argument("--out", type=Path, default=Path("out/walkers"), help="output folder")
    add_restart_options(parser)
    args = parser.parse_args(argv)
    if args.walkers < 1 or args.steps < 0 or args.n < 4 or not 0 < args.a <= 1:
        raise parcomp.ConfigError(
            "need --walkers >= 1, --steps >= 0, --n >= 4 and 0 < --a <= 1 (a step never "
            f"crosses more than one cell); got {args.walkers}, {args.steps}, {args.n}, {args.a}"
        )
    ckpt = checkpointer(args)
    p, density, seconds = simulate(args, checkpointer=ckpt)
    disp = p["disp"]
    msd = exact_allsum((disp * disp).sum(axis=1), p.comm) / args.walkers
    D = args.a**2 / 6.0
    expected = 2 * NDIM * D * args.steps
    sigma = math.sqrt(2.0 / NDIM) / math.sqrt(args.walkers) * expected
    whole = p.gather()
    rho = density.gather()
    from grayscott import make_folder

    make_folder(args.out, p.comm)
    ok = True
    if p.rank == 0:
        import h5py

        path = args.out / "walkers.h5"
        with h5py.File(path, "w") as fh:
            fh["x"] = whole["x"]
            fh["id"] = whole["id"]
            fh["density"] = rho
            fh.attrs["steps"] = args.steps
        digest = hashlib.sha256(whole["x"].tobytes() + rho.tobytes()).hexdigest()
        print(
            f"walkers: {args.walkers} walkers, {args.steps} steps on {p.partition.size} ranks in {seconds:.2f} s"
        )
        print(f"msd = {msd:.6f}, 2 d D t = {expected:.6f} (statistical error {sigma:.6f})")
        print(f"mass = {rho.sum():.6f}")
        print(f"sha256 = {digest}")
        print(f"wrote {path}")
        ok = abs(msd - expected) <= 4 * sigma and math.isclose(
            rho.sum(), args.walkers, rel_tol=1e-12
        )
        if args.verify:
            x_ref, rho_ref = serial(args)
            same = np.array_equal(whole["x"], x_ref) and np.array_equal(rho, rho_ref)
            print(f"serial NumPy run: {'the same bits' if same else 'DIFFERENT'}")
            ok = ok and same
    if not parcomp.agree(ok, comm=p.comm):
        parcomp.exit_all(1, "walkers: a check failed (msd, mass or --verify); see above")


if __name__ == "__main__":
    main()
