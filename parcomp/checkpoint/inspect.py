"""Checking saved checkpoints without restoring them (``parcomp inspect``; local, no MPI).

:func:`inspect_checkpoint` checks one checkpoint of the shared tier, :func:`inspect_local`
every step of a node-local tier, :func:`verify_files` reads every saved block as a
restore would: the same reader (:class:`~parcomp.checkpoint.blocks.BlockFiles`), the
same checksums, the same vote between the nodes' copies
(:func:`~parcomp.checkpoint.local.choose_manifest`).  It stands above the restore engine
and the node-local tier, and nothing below imports it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parcomp.checkpoint.blocks import READ_ERRORS, BlockFiles
from parcomp.checkpoint.format import parse_step, step_dir_name
from parcomp.checkpoint.local import choose_manifest
from parcomp.checkpoint.manifest import Manifest
from parcomp.checkpoint.manifest_read import parse_manifest, read_manifest
from parcomp.checkpoint.plan import restore_plan
from parcomp.grid.partition import Partition
from parcomp.runtime.errors import ParcompError

__all__ = ["inspect_checkpoint", "inspect_local", "verify_files"]


def inspect_checkpoint(folder: Path, verify_data: bool = True) -> tuple[bool, str]:
    """Validate one checkpoint in this process alone: ``(valid, one-line description)``.

    The same checks as a restore (:func:`read_manifest`, then the restore engine's own
    reader over every saved block: :func:`verify_files`), so ``parcomp inspect`` and a
    restore always agree on which checkpoint is valid.
    """
    try:
        manifest = read_manifest(folder)
        error = verify_files(folder, manifest) if verify_data else None
        if error:
            return False, f"INVALID: {error}"
        arrays = ", ".join(f"{n}{s.global_shape}:{s.dtype}" for n, s in manifest.arrays.items())
        text = (
            f"step {manifest.step}, {manifest.nprocs} ranks, arrays [{arrays}], scalars "
            f"{sorted(manifest.scalars)}"
        )
        if manifest.local:
            text += (
                ", per-rank data ["
                + ", ".join(_describe_local(n, s) for n, s in manifest.local.items())
                + "]"
            )
        if manifest.rng:
            text += (
                ", RNG states ["
                + ", ".join(
                    f"{n}:{state.get('bit_generator', '?')}" for n, state in manifest.rng.items()
                )
                + "]"
            )
        return True, text
    except (ParcompError, OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        return False, f"INVALID: {exc}"


def _describe_local(name: str, spec: Mapping[str, Any]) -> str:
    """``particles.x:<f8 (2) 1000 rows from 3 ranks (400, 300, 300)`` (a validated spec)."""
    lengths = [int(p["length"]) for p in spec["pieces"]]
    tail = f" {tuple(spec['tail'])}" if spec["tail"] else ""
    return (
        f"{name}:{spec['dtype']}{tail} {sum(lengths)} rows from {len(lengths)} rank(s) "
        f"({', '.join(map(str, lengths))})"
    )


def verify_files(folder: Path, manifest: Manifest, names: set[str] | None = None) -> str | None:
    """Read and verify every saved block (of the files ``names``, default all) exactly as a
    restore onto one rank would, one block at a time; the first problem, or None (local)."""
    plan = restore_plan(
        {name: spec.shards for name, spec in manifest.arrays.items()},
        {
            name: Partition(spec.global_shape, (1,) * len(spec.global_shape), spec.periods)
            for name, spec in manifest.arrays.items()
        },
        None,
        manifest.local,
        {
            name: [(0, sum(p["length"] for p in spec["pieces"]))]
            for name, spec in manifest.local.items()
        },
    )
    files = BlockFiles(folder, manifest)
    try:
        for piece in plan.pieces:
            if names is None or piece.file in names:
                files.read(piece)
                files.forget()
    except READ_ERRORS as exc:
        return str(exc)
    finally:
        files.close()
    return None


def inspect_local(root: Path, verify_data: bool = True) -> list[tuple[int, bool, str]]:
    """Describe the node-local checkpoints visible under ``root`` (local; no MPI).

    For every step: whether each saved shard has at least one good copy among the node
    folders this process can see (all of them when nodes are emulated on one machine, only
    its own on a real cluster), and how many.  Returns ``(step, restorable, text)`` newest
    first.  Copies are verified by the restore engine's own reader.
    """
    node_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("node-"))
    steps = sorted(
        {s for d in node_dirs for p in d.iterdir() if (s := parse_step(p.name)) is not None},
        reverse=True,
    )
    out = []
    for step in steps:
        copies: Counter[str] = Counter()
        problems: list[str] = []
        holders, views = [], []
        for node_dir in node_dirs:
            folder = node_dir / step_dir_name(step)
            if not folder.is_dir():
                continue
            view: dict[str, Any] = {"node": node_dir.name, "digest": None, "error": None}
            try:
                mine = parse_manifest(folder)
                holders.append((node_dir, folder, mine))
                view["digest"] = mine.digest
            except (ParcompError, OSError) as exc:
                problems.append(f"{node_dir.name}: {exc}")
                view["error"] = str(exc)
            views.append(view)
        choice = choose_manifest(views)  # the restore's own vote between the nodes' copies
        if isinstance(choice, str):
            out.append(
                (step, False, f"{choice}" + (f" ({'; '.join(problems)})" if problems else ""))
            )
            continue
        manifest = next(m for _, _, m in holders if m.digest == choice[0])
        for node_dir, folder, mine in holders:
            if mine.digest != manifest.digest:
                problems.append(f"{node_dir.name}: its manifest is outvoted by the other nodes'")
                continue
            for name, nbytes in manifest.files.items():
                path = folder / name
                if not path.is_file() or path.stat().st_size != nbytes:
                    continue
                if verify_data:
                    error = verify_files(folder, manifest, {name})
                    if error:
                        problems.append(f"{node_dir.name}/{name}: {error}")
                        continue
                copies[name] += 1
        missing = sorted(n for n in manifest.files if not copies[n])
        counts = sorted({copies[n] for n in manifest.files})
        text = (
            f"{len(manifest.files)} shards saved on {manifest.nprocs} ranks, in {len(holders)} "
            f"node folder(s); good copies per shard: {'/'.join(map(str, counts))}"
        )
        if missing:
            text += f"; NO good copy of {', '.join(missing)}"
        if problems:
            text += f" ({'; '.join(problems)})"
        out.append((step, not missing, text))
    return out
