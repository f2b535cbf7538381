"""Mandelbrot set: irregular work where dynamic scheduling wins.

Run:  parcomp run -n 2 jobs/mandelbrot.py [--width 1200] [--height 800] [--schedule dynamic]

Each image row is one work item of ``parcomp.map``; rows through the set take up to
``--max-iter`` iterations per pixel, rows outside it almost none, so a static block split
leaves some ranks idle.  Rank 0 writes the image (HDF5 dataset ``/iterations`` and a PNG)
and prints the total iteration count and a checksum, the same for any rank count and
schedule.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp.kernels import mandelbrot_row

X0, X1, Y0, Y1 = -2.2, 0.8, -1.2, 1.2


def render(
    width: int,
    height: int,
    max_iter: int,
    schedule: str = "dynamic",
    chunksize: int | None = None,
    progress: bool = False,
    comm=None,
    view: tuple[float, float, float, float] = (X0, X1, Y0, Y1),
) -> np.ndarray | None:
    """The iteration counts image on rank 0 (``None`` elsewhere); ``view`` = (x0, x1, y0, y1).

    Notes
    -----
    Collective over `comm`.
    """
    x0, x1, y0, y1 = view
    ys = np.linspace(y0, y1, height)
    mandelbrot_row(0.0, 2, x0, x1, 1)  # compile / load once before the clock matters
    rows = parcomp.map(
        lambda y: mandelbrot_row(float(y), width, x0, x1, max_iter),
        ys,
        schedule=schedule,
        chunksize=chunksize,
        root=0,
        progress=progress,
        comm=comm,
    )
    return None if rows is None else np.vstack(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--schedule", default="dynamic", choices=["block", "cyclic", "dynamic"])
    parser.add_argument("--out", type=Path, default=Path("out/mandelbrot"))
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.width < 2 or args.height < 1 or args.max_iter < 1:
        raise parcomp.ConfigError("--width >= 2, --height >= 1 and --max-iter >= 1 are required")
    t0 = time.perf_counter()
    image = render(args.width, args.height, args.max_iter, args.schedule, progress=args.progress)
    elapsed = time.perf_counter() - t0
    if image is None:
        return
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    with h5py.File(args.out / "mandelbrot.h5", "w") as fh:
        fh.create_dataset("iterations", data=image, compression="gzip")
        fh.attrs.update({"x_range": [X0, X1], "y_range": [Y0, Y1], "max_iter": args.max_iter})
    plt.imsave(args.out / "mandelbrot.png", np.log1p(image), cmap="magma", origin="lower")
    digest = hashlib.sha256(image.astype("<i4").tobytes()).hexdigest()
    print(
        f"mandelbrot {args.width}x{args.height}, max_iter {args.max_iter}, schedule "
        f"{args.schedule}, {parcomp.size()} ranks: {elapsed:.2f} s"
    )
    print(f"total iterations = {int(image.sum(dtype=np.int64))}; sha256 = {digest}")


if __name__ == "__main__":
    main()
