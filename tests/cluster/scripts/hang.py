"""A hang across nodes: every rank reduces once, then rank ``--stuck`` never reaches the
second reduction (it sleeps in ``stuck_here``), while the others wait in it."""

import argparse
import time

import parcomp


def stuck_here() -> None:
    while True:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stuck", type=int, default=2)
    args = parser.parse_args()
    parcomp.allreduce(1.0)
    if parcomp.rank() == 0:
        print("first reduction done", flush=True)
    if parcomp.rank() == args.stuck:
        stuck_here()
    parcomp.allreduce(2.0)


if __name__ == "__main__":
    main()
