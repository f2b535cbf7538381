"""Reading checkpoints back, on any rank count, verifying every byte.

Local: ``list_checkpoints``, ``open_block``, and :class:`Restored`, what a restore gives.
The collective restore is :mod:`parcomp.checkpoint.restore`; ``parcomp inspect``'s checks
are :mod:`parcomp.checkpoint.inspect`.

The checks every read goes through: a checkpoint directory is listed without following
links; a dataset is used only after :func:`open_block` matched it against the manifest.
Nothing is unpickled: manifests are JSON, data are typed HDF5 datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.format import parse_step
from parcomp.checkpoint.manifest import (
    ALLOWED_BIT_GENERATORS,
    ArraySpec,
    Manifest,
    ShardSpec,
)
from parcomp.runtime.errors import CheckpointError, CheckpointSchemaError

__all__ = [
    "list_checkpoints",
    "open_block",
    "Restored",
]


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Committed-looking checkpoint directories, newest first (not yet validated)."""
    if not directory.is_dir():
        return []
    found = [
        (s, p)
        for p in directory.iterdir()
        if (s := parse_step(p.name)) is not None and p.is_dir() and not p.is_symlink()
    ]
    return sorted(found, reverse=True)


def open_block(fh: Any, folder: Path, manifest: Manifest, spec: ArraySpec, shard: ShardSpec) -> Any:
    """The dataset of ``shard``'s block in the open file ``fh``, checked before any read.

    It must be a plain dataset stored in this file (no soft or external link, no virtual
    dataset, no external raw storage: all could point outside the checkpoint), with the
    manifest's dtype and shape.  What the writer recorded inside the file must be the
    manifest's too: the block's placement (``global_start``, ``global_shape``), the
    decomposition (``halo``, ``dims``, ``periods``) and the file's ``step``, ``nprocs`` and
    ``rank``.  So a swapped or edited placement, halo or periodicity is detected even in a
    manifest rewritten consistently, checksum included.
    """
    import h5py

    where = f"{folder / shard.file}: array {spec.name!r}"
    group = fh.get("arrays", getlink=True)
    if not isinstance(group, h5py.HardLink):
        raise CheckpointSchemaError(f"{where}: /arrays is a {type(group).__name__}, not a group")
    link = fh["arrays"].get(spec.name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise CheckpointSchemaError(
            f"{where}: the dataset is a {type(link).__name__ if link is not None else 'missing link'}"
            " (links to other files are refused)"
        )
    dset = fh["arrays"][spec.name]
    if not isinstance(dset, h5py.Dataset) or dset.is_virtual or dset.external:
        raise CheckpointSchemaError(
            f"{where}: not a plain dataset (virtual datasets and external storage are refused)"
        )
    expected = spec.global_shape if shard.file_start is not None else shard.shape
    if tuple(dset.shape) != tuple(expected) or dset.dtype != spec.dtype:
        raise CheckpointError(
            f"{where}: dataset is {dset.dtype}{dset.shape}, the manifest says "
            f"{spec.dtype}{tuple(expected)}"
        )
    # What the file records must match the manifest.  Schema 2 files record all of it;
    # files of schema 1 (written before) lack the layout attributes, so those are compared
    # whenever present: a manifest downgraded to schema 1 cannot dodge the comparison.
    file_attrs = _attrs(fh, ("step", "nprocs", "rank"))
    _same(where, "step", file_attrs["step"], manifest.step)
    _same(where, "nprocs", file_attrs["nprocs"], manifest.nprocs)
    if shard.file_start is None:
        _same(where, "rank", file_attrs["rank"], shard.rank)
    attrs = _attrs(dset, ("halo", "dims", "periods", "global_start", "global_shape"))
    for key, want in (
        ("halo", spec.halo),
        ("dims", spec.dims),
        ("periods", tuple(int(p) for p in spec.periods)),
    ):
        if attrs[key] is None and manifest.version < 2:
            continue
        try:
            got = tuple(int(v) for v in attrs[key])
        except (TypeError, ValueError):
            got = None
        _same(where, key, got, want)
    if shard.file_start is None:
        try:
            start = tuple(int(v) for v in attrs["global_start"])
            whole = tuple(int(v) for v in attrs["global_shape"])
        except (TypeError, ValueError):
            start = whole = ()
        if start != shard.start or whole != spec.global_shape:
            raise CheckpointSchemaError(
                f"{where}: the shard says it holds the block at {list(start)} of "
                f"{list(whole)}, the manifest places it at {list(shard.start)} of "
                f"{list(spec.global_shape)} (placement altered)"
            )
    return dset


def _attrs(obj: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The attributes ``keys`` of an HDF5 object (None where missing), one lookup each."""
    out = {}
    for key in keys:
        try:
            out[key] = obj.attrs[key]
        except KeyError:
            out[key] = None
    return out


def _same(where: str, key: str, got: Any, want: Any) -> None:
    try:
        value = got if got is None or isinstance(got, tuple) else int(got)
    except (TypeError, ValueError):
        value = None
    if value is None or value != want:
        raise CheckpointSchemaError(
            f"{where}: the file records {key} = {got}, the manifest says {want} (altered)"
        )


class Restored:
    """A checkpoint restored on this rank: step, arrays (re-decomposed), scalars, RNGs, meta."""

    def __init__(self, path: Path, manifest: Manifest, arrays: dict[str, Any]) -> None:
        self.path = path
        self.step: int = manifest.step
        self.saved_nprocs: int = manifest.nprocs
        self.scalars: dict[str, Any] = manifest.scalars
        self.meta: dict[str, Any] = manifest.meta
        self.rng_states: dict[str, Any] = manifest.rng
        self.arrays: dict[str, Any] = arrays
        #: Shards of a node-local checkpoint that were read from their partner copy.
        self.rebuilt: list[str] = []
        #: This rank's share of the per-rank data saved with ``local=``.
        self.local: dict[str, np.ndarray] = {}
        #: Whether the ranks' shares, in rank order, are all of the saved per-rank data.
        self.local_whole = True

    def generator(self, name: str) -> np.random.Generator:
        """The NumPy Generator saved under ``name``, in the exact state it had."""
        try:
            state = self.rng_states[name]
        except KeyError:
            raise CheckpointError(
                f"no RNG {name!r} in checkpoint {self.path}; it has {sorted(self.rng_states)}"
            ) from None
        if state.get("bit_generator") not in ALLOWED_BIT_GENERATORS:  # validated at parse
            raise CheckpointSchemaError(f"RNG {name!r}: bit generator not allowed")
        bit_generator = getattr(np.random, state["bit_generator"])()
        bit_generator.state = state
        return np.random.Generator(bit_generator)

    def __repr__(self) -> str:
        return f"Restored(step={self.step}, path={self.path}, arrays={sorted(self.arrays)}, scalars={sorted(self.scalars)})"
