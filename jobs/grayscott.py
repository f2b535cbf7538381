"""Gray-Scott reaction-diffusion: two fields, one kernel, bitwise NumPy on any rank count.

Run:  parcomp run -n 2 jobs/grayscott.py [--n 256] [--steps 2000] [--verify]

Two chemical species ``u`` and ``v`` on a periodic ``n x n`` grid (spacing 1)::

    du/dt = Du lap(u) - u v^2 + F (1 - u)
    dv/dt = Dv lap(v) + u v^2 - (F + k) v

stepped with explicit Euler.  One declared kernel (``parcomp.kernels.gray_scott_step``)
reads both fields with ghost cells and writes both; ``run_stencil`` exchanges both halos
in one message per neighbour.  The start is ``u = 1, v = 0`` with a perturbed square in
the middle, noise computed from the global cell index (so it does not depend on the rank
count).  ``--verify`` steps a serial NumPy reference on rank 0 from the same start and
checks the result is the same bits.  It checkpoints and resumes like heat2d
(``--checkpoint-dir``, ``--checkpoint-every``; a resumed run may use another rank count
and more ``--steps``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import DistArray, run_stencil
from parcomp.io import dataset_sha256, save_hdf5
from parcomp.kernels import gray_scott_numpy, gray_scott_step

#: The pattern parameters (Pearson's "mitosis"-like regime) and the species' diffusivities.
DEFAULTS = {"du": 0.16, "dv": 0.08, "f": 0.035, "k": 0.065, "dt": 1.0}


def initial(n: int) -> tuple:
    """Functions of the global indices giving the starting ``u`` and ``v``."""
    lo, hi = n // 2 - max(n // 10, 1), n // 2 + max(n // 10, 1)

    def noise(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        x = np.sin(i * 12.9898 + j * 78.233) * 43758.5453
        return x - np.floor(x)  # in [0, 1), from the cell's global index only

    def square(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (i >= lo) & (i < hi) & (j >= lo) & (j < hi)

    def u0(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.where(square(i, j), 0.5, 1.0) - 0.02 * noise(i, j)

    def v0(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.where(square(i, j), 0.25, 0.0) + 0.02 * noise(j, i)

    return u0, v0


def simulate(
    n: int,
    steps: int,
    params: dict[str, float],
    comm=None,
    checkpointer=None,
    overlap: bool = False,
    progress: bool = False,
    series: Path | None = None,
    series_every: int = 0,
):
    """Step Gray-Scott; returns ``(u, v, seconds)``.  Collective over `comm`.

    With ``series`` and ``series_every``: ``u``, ``v`` and the mean of ``v`` are appended
    to that CF time series every ``series_every`` steps (continued after a restart)."""
    log = parcomp.get_logger("parcomp.jobs.grayscott")
    u0, v0 = initial(n)
    kw = dict(halo=1, periods=True, comm=comm)
    restored = (
        checkpointer.restore(require={"n": n, **params}) if checkpointer is not None else None
    )
    if restored is not None:
        u, v = restored.arrays["u"], restored.arrays["v"]
        start = restored.scalars["step"]
        if start > steps:  # the same on every rank: the restored manifest is agreed
            raise parcomp.ConfigError(
                f"the checkpoint is at step {start}, beyond --steps {steps}: ask for at "
                "least that many steps, or start afresh in another --checkpoint-dir"
            )
        log.info("resumed at step %d on %d ranks", start, u.partition.size)
    else:
        u = DistArray.fromfunction(u0, (n, n), **kw)
        v = DistArray.fromfunction(v0, (n, n), **kw)
        start = 0
    u2, v2 = u.zeros_like(), v.zeros_like()
    args = tuple(params[name] for name in ("du", "dv", "f", "k", "dt"))
    record = None
    if series is not None and series_every:
        from parcomp import Series

        record = Series(
            series,
            {"u": u, "v": v},
            every=series_every,
            long_names={"u": "u concentration", "v": "v concentration", "mean_v": "mean of v"},
            scalars=("mean_v",),
            title=f"Gray-Scott {n}x{n}, F {params['f']}, k {params['k']}",
            resume_at=start if restored is not None else None,
            overwrite=restored is None,
            # synchronous (see heat2d)
        )
        if record.missing(start):  # the start, or a restored step whose record was lost
            record.append(
                start, start * params["dt"], fields={"u": u, "v": v}, scalars={"mean_v": v.mean()}
            )
    t0 = time.perf_counter()
    for step in range(start + 1, steps + 1):
        run_stencil(gray_scott_step, u, v, u2, v2, *args, overlap=overlap)
        u, u2, v, v2 = u2, u, v2, v
        if progress and step % max(steps // 10, 1) == 0:
            log.info("step %d/%d: mean v %.6f", step, steps, v.mean())
        if checkpointer is not None:
            checkpointer.checkpoint_if_due(
                step, arrays={"u": u, "v": v}, scalars={"n": n, **params, "step": step}
            )
        if record is not None and step % series_every == 0:
            time_now = step * params["dt"]
            record.append(step, time_now, fields={"u": u, "v": v}, scalars={"mean_v": v.mean()})
    if checkpointer is not None:
        checkpointer.close()
    if record is not None:
        record.close()
    return u, v, time.perf_counter() - t0


def reference(n: int, steps: int, params: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The serial NumPy reference from the same start (one process, no parcomp)."""
    u0, v0 = initial(n)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    U, V = u0(i, j).astype(np.float64), v0(i, j).astype(np.float64)
    args = tuple(params[name] for name in ("du", "dv", "f", "k", "dt"))
    for _ in range(steps):
        U, V = gray_scott_numpy(U, V, *args)
    return U, V


def verify(u: DistArray, v: DistArray, n: int, steps: int, params: dict[str, float]) -> bool:
    """Every rank steps the serial NumPy reference and compares its own block (no
    gather); True on every rank iff all blocks are bitwise equal."""
    RU, RV = reference(n, steps, params)
    block = tuple(slice(lo, hi) for lo, hi in u.local_range)
    same = np.array_equal(u.interior, RU[block]) and np.array_equal(v.interior, RV[block])
    return parcomp.agree(same, comm=u.comm)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="grid cells per side (default 256)")
    parser.add_argument("--steps", type=int, default=2000, help="time steps (default 2000)")
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=float, default=value, help=f"default {value}")
    parser.add_argument("--overlap", action="store_true", help="overlap exchange and compute")
    parser.add_argument(
        "--verify", action="store_true", help="compare with a serial NumPy run (rank 0)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/grayscott"), help="output folder")
    parser.add_argument(
        "--series-every", type=int, default=0, help="append u, v to OUT/series.h5 every N steps"
    )
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint/resume here")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="every N steps")
    args = parser.parse_args(argv)
    params = {name: getattr(args, name) for name in DEFAULTS}
    bad = [f"--{k} {v}" for k, v in params.items() if not math.isfinite(v)]
    if bad:
        raise parcomp.ConfigError(f"parameters must be finite numbers, got {', '.join(bad)}")
    if args.checkpoint_every is not None and args.checkpoint_dir is None:
        raise parcomp.ConfigError("--checkpoint-every needs --checkpoint-dir")
    if args.n < 4 or args.steps < 0:
        raise parcomp.ConfigError(f"--n must be >= 4 and --steps >= 0, got {args.n}, {args.steps}")
    if not 0 < params["dt"] * 4 * max(params["du"], params["dv"]) <= 1:
        raise parcomp.ConfigError(
            f"dt * 4 * max(du, dv) = {params['dt'] * 4 * max(params['du'], params['dv']):g} "
            "must be in (0, 1] for the explicit step to be stable"
        )
    ckpt = None
    if args.checkpoint_dir is not None:
        from parcomp import Checkpointer

        ckpt = Checkpointer(args.checkpoint_dir, every=args.checkpoint_every)
    if args.series_every < 0:
        raise parcomp.ConfigError(f"--series-every must be >= 0, got {args.series_every}")
    series = make_folder(args.out, parcomp.default_comm()) / "series.h5"
    u, v, seconds = simulate(
        args.n,
        args.steps,
        params,
        checkpointer=ckpt,
        overlap=args.overlap,
        progress=True,
        series=series,
        series_every=args.series_every,
    )
    mean_v = v.mean()
    # no gather: the fields are written in parallel, rank 0 hashes the file slab by slab
    path = save_hdf5(make_folder(args.out, u.comm) / "grayscott.h5", {"u": u, "v": v})
    same = verify(u, v, args.n, args.steps, params) if args.verify else True
    if u.rank == 0:
        rate = args.n * args.n * args.steps / max(seconds, 1e-9) / 1e6
        print(
            f"grayscott {args.n}x{args.n} on {u.partition.size} ranks: {args.steps} steps in "
            f"{seconds:.2f} s ({rate:.1f} Mcell-steps/s)"
        )
        print(f"mean v = {mean_v:.12f}")
        print(f"sha256 = {dataset_sha256(path, 'u', 'v')}")
        print(f"wrote {path}")
        if args.verify:
            print(f"bitwise equal to the serial NumPy reference: {'yes' if same else 'NO'}")
    if not same:
        parcomp.exit_all(1, "grayscott: the result differs from the serial NumPy reference")


def make_folder(folder: Path, comm) -> Path:
    """Create ``folder`` on rank 0; raise on every rank if that failed (collective)."""
    error = None
    if comm.Get_rank() == 0:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = parcomp.ConfigError(f"cannot create {folder}: {exc}")
    parcomp.raise_if_any(error, comm)
    return folder


if __name__ == "__main__":
    main()
