"""Command-line options and helpers shared by the particle jobs (walkers, md)."""

from __future__ import annotations

import argparse
from typing import Any


def add_restart_options(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint-dir``/``--checkpoint-every`` and the fault-injection options."""
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint/resume here")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="every N steps")
    parser.add_argument(
        "--die-at-step",
        type=int,
        default=None,
        help="fault injection: SIGKILL a rank at this step (first attempt only)",
    )
    parser.add_argument("--die-rank", type=int, default=0, help="fault injection: which rank dies")
    parser.add_argument(
        "--step-delay", type=float, default=0.0, help="sleep per step (tests: a longer run)"
    )


def checkpointer(args: argparse.Namespace) -> Any:
    """A Checkpointer for ``--checkpoint-dir`` (collective), or None without it."""
    if args.checkpoint_every is not None and args.checkpoint_dir is None:
        import parcomp

        raise parcomp.ConfigError("--checkpoint-every needs --checkpoint-dir")
    if args.checkpoint_dir is None:
        return None
    from parcomp import Checkpointer

    return Checkpointer(args.checkpoint_dir, every=args.checkpoint_every)
