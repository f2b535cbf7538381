"""The checkpoint manifest as one typed value, parsed once from hostile bytes.

PURE; no MPI (reading the file from disk is :mod:`parcomp.checkpoint.manifest_read`).

Everything on disk is hostile until validated.  :meth:`Manifest.parse` turns the bytes of
``manifest.json`` into a :class:`Manifest` or raises :class:`CheckpointSchemaError`, and
nothing else (no ``KeyError``, ``TypeError``, ``RecursionError`` ...; a property-based test
fuzzes it):

* strict JSON: no duplicate keys, bounded nesting, only the known fields;
* integers are integers (not bools, floats or strings) within bounds; shapes are
  non-negative; dtypes come from an allow-list of plain numeric types; names are plain
  file or dataset names; RNG bit generators come from an allow-list;
* every shard's placement is cross-checked against the decomposition it claims: with
  ``global_shape``, ``nprocs``, ``dims`` and ``periods`` the blocks are fully determined
  (:class:`parcomp.grid.partition.Partition`), so a swapped, shifted, removed or resized shard,
  a wrong ``slab_rows`` or a wrong count of slab checksums is refused, as is a halo
  wider than the blocks;
* the data it describes must fit in the bytes its files hold (a shape cannot ask for
  terabytes that are not there), and the step must match the directory's name;
* ``manifest_sha256`` (schema 2) covers the whole manifest: a flipped bit anywhere,
  including in a field that still parses, is detected.

Readers then cross-check the placement stored inside each shard (dataset attributes
``global_start`` / ``global_shape``), see :mod:`parcomp.checkpoint.reader`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from parcomp.checkpoint.format import MASTER
from parcomp.grid.halo import check_halo
from parcomp.grid.partition import Partition
from parcomp.io.slabs import slab_bounds, slab_rows
from parcomp.runtime.errors import CheckpointSchemaError, ParcompError

__all__ = [
    "ALLOWED_DTYPES",
    "ALLOWED_BIT_GENERATORS",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "ArraySpec",
    "ShardSpec",
    "manifest_digest",
]

FORMAT = "parcomp-checkpoint"
SCHEMA_VERSIONS = (1, 2)
#: Largest manifest read (a manifest of 100,000 ranks with a few arrays is ~ 50 MB).
MAX_MANIFEST_BYTES = 256 * 2**20
MAX_NDIM = 16
MAX_NPROCS = 2**24
MAX_STEP = 10**15
MAX_DEPTH = 64
#: Plain numeric dtypes, little/big endian (``np.dtype(...).str``).
ALLOWED_DTYPES = frozenset(
    np.dtype(t).newbyteorder(order).str
    for t in ("?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16")
    for order in ("<", ">")
)
ALLOWED_BIT_GENERATORS = frozenset({"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"})
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_CHECKSUM = re.compile(r"^fletcher64:[0-9a-f]{32}$")
_REQUIRED = {
    "format",
    "schema_version",
    "step",
    "nprocs",
    "arrays",
    "files",
    "scalars",
    "rng",
    "meta",
}
_OPTIONAL = {
    "created_unix",
    "layout",
    "checkpoint_id",
    "nodes",
    "partners",
    "tier",
    "shared_directory",
    "manifest_sha256",
    "local",
}
_TOP = _REQUIRED | _OPTIONAL
_ARRAY = {"global_shape", "dtype", "dims", "periods", "halo", "shards"}
_SHARD = {"rank", "file", "start", "shape", "slab_rows", "slab_checksums", "file_start"}


def _bad(where: str, what: str) -> CheckpointSchemaError:
    return CheckpointSchemaError(f"{where}: {what}")


def manifest_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, without its ``manifest_sha256`` field."""
    body = {k: v for k, v in payload.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


_SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def decode_floats(value: Any) -> Any:
    """Turn the writer's ``{"__float__": "nan"}`` (also inf, -inf) back into floats."""
    if isinstance(value, dict):
        if len(value) == 1 and value.get("__float__") in _SPECIAL:
            return _SPECIAL[value["__float__"]]
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


# ----------------------------------------------------------------------------- typed fields
def _int(value: Any, where: str, lo: int = 0, hi: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, f"expected an integer, got {type(value).__name__} {value!r:.60}")
    if not lo <= value <= hi:
        raise _bad(where, f"{value} is outside [{lo}, {hi}]")
    return value


def _ints(value: Any, where: str, n: int | None, lo: int = 0, hi: int = 2**62) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _bad(where, f"expected a list of integers, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise _bad(where, f"expected {n} entries, got {len(value)}")
    return tuple(_int(v, f"{where}[{i}]", lo, hi) for i, v in enumerate(value))


def _dict(
    value: Any, where: str, keys: set[str] | None = None, need: set[str] = frozenset()
) -> dict:
    if not isinstance(value, dict):
        raise _bad(where, f"expected an object, got {type(value).__name__}")
    if keys is not None:
        unknown = sorted(set(value) - keys)
        if unknown:
            raise _bad(where, f"unknown field(s) {unknown}")
    missing = sorted(need - set(value))
    if missing:
        raise _bad(where, f"missing field(s) {missing}")
    return value


def _plain(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _PLAIN.match(value) or value in (".", ".."):
        raise _bad(
            where,
            f"{value!r:.80} is not a plain name (letters, digits, '_', '-', '.'; no paths, no '..')",
        )
    return value


def _depth(value: Any, where: str, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise _bad(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _depth(v, where, level + 1)
    elif isinstance(value, list):
        for v in value:
            _depth(v, where, level + 1)


@dataclass(frozen=True)
class ShardSpec:
    """One saved block of one array: which rank wrote it, where it lies, its slab sums."""

    rank: int
    file: str
    start: tuple[int, ...]
    shape: tuple[int, ...]
    slab_rows: int
    slab_checksums: tuple[str, ...]
    file_start: tuple[int, ...] | None

    @property
    def nbytes_items(self) -> int:
        """Number of elements in the block."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class ArraySpec:
    """One saved global array: its layout when saved and its shards (one per saving rank)."""

    name: str
    global_shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[int, ...]
    periods: tuple[bool, ...]
    halo: tuple[int, ...]
    shards: tuple[ShardSpec, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array."""
        return math.prod(self.global_shape) * self.dtype.itemsize


class Manifest(Mapping[str, Any]):
    """A validated manifest.

    Typed attributes (``step``, ``nprocs``, ``arrays`` as :class:`ArraySpec`, ``files``,
    ``scalars``, ``rng``, ``meta``, ``digest``); read-only mapping access to the validated
    JSON for the few free-form fields.  Build it with :meth:`parse`.
    """

    def __init__(
        self, data: dict[str, Any], arrays: dict[str, ArraySpec], digest: str, raw: bytes = b""
    ) -> None:
        self._data = data
        #: The bytes it was parsed from (broadcast these, and parse them on every rank).
        self.raw = raw
        self.arrays = arrays
        self.digest = digest
        self.step: int = data["step"]
        self.nprocs: int = data["nprocs"]
        self.files: dict[str, int] = {f["name"]: f["bytes"] for f in data["files"]}
        self.scalars: dict[str, Any] = decode_floats(data["scalars"])
        self.rng: dict[str, Any] = data["rng"]
        self.meta: dict[str, Any] = decode_floats(data["meta"])
        self.single_file: bool = data.get("layout") == "single-file"
        self.version: int = data["schema_version"]
        #: Per-rank data (``local=``): name -> {"dtype", "tail", "pieces"}, validated.
        self.local: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Manifest(step={self.step}, nprocs={self.nprocs}, arrays={sorted(self.arrays)})"

    @property
    def data_bytes(self) -> int:
        """Bytes of all arrays together."""
        return sum(spec.nbytes for spec in self.arrays.values())

    @classmethod
    def parse(cls, raw: bytes, where: str = "manifest", step: int | None = None) -> Manifest:
        """Validate ``raw`` (the bytes of ``manifest.json``).

        Parameters
        ----------
        raw : bytes
            The file's content.
        where : str
            Named in error messages (the file's path).
        step : int, optional
            The step the directory name says; the manifest must agree.

        Raises
        ------
        CheckpointSchemaError
            For every structural problem, and for nothing else.
        """
        try:
            return cls._parse(raw, where, step)
        except CheckpointSchemaError:
            raise
        except RecursionError:
            raise _bad(where, "nested too deeply") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
            raise _bad(where, f"invalid ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _parse(cls, raw: bytes, where: str, dir_step: int | None) -> Manifest:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(where, f"not UTF-8 text ({exc})") from None

        def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in pairs:
                if k in out:
                    raise _bad(where, f"duplicate key {k!r}")
                out[k] = v
            return out

        try:
            data = json.loads(text, object_pairs_hook=no_duplicates)
        except json.JSONDecodeError as exc:
            raise _bad(where, f"not valid JSON ({exc})") from None
        _depth(data, where)
        data = _dict(data, where, _TOP, _REQUIRED)
        if data["format"] != FORMAT:
            raise _bad(where, f"not a parcomp checkpoint manifest (format {data['format']!r:.40})")
        version = data["schema_version"]
        if isinstance(version, bool) or version not in SCHEMA_VERSIONS:
            raise _bad(
                where, f"schema version {version!r:.20}; this parcomp reads {SCHEMA_VERSIONS}"
            )
        digest = manifest_digest(data)
        if version >= 2:
            if data.get("manifest_sha256") != digest:
                raise _bad(
                    where,
                    "manifest checksum mismatch: the manifest was altered or damaged after it "
                    "was written",
                )
        elif "manifest_sha256" in data:
            raise _bad(where, "schema version 1 has no manifest_sha256")
        step = _int(data["step"], f"{where}: step", 0, MAX_STEP)
        if dir_step is not None and step != dir_step:
            raise _bad(where, f"step {step} does not match its directory (step {dir_step})")
        nprocs = _int(data["nprocs"], f"{where}: nprocs", 1, MAX_NPROCS)
        if "created_unix" in data and (
            isinstance(data["created_unix"], bool)
            or not isinstance(data["created_unix"], int | float)
            or not math.isfinite(data["created_unix"])
        ):
            raise _bad(where, "created_unix is not a finite number")
        single = data.get("layout", "shards")
        if single not in ("shards", "single-file"):
            raise _bad(where, f"layout {single!r:.40} is neither 'shards' nor 'single-file'")
        files = cls._files(data["files"], where, nprocs)
        # No arrays is valid: a checkpoint of particles (per-rank data) or scalars only.
        arrays_raw = _dict(data["arrays"], f"{where}: arrays")
        arrays = {
            _plain(name, f"{where}: array name"): _array(
                name, spec, f"{where}: array {name!r}", nprocs, set(files), single == "single-file"
            )
            for name, spec in arrays_raw.items()
        }
        local, local_bytes = _local(data.get("local", {}), where, nprocs, set(files), single)
        total = sum(spec.nbytes for spec in arrays.values()) + local_bytes
        if total > sum(files.values()):
            raise _bad(
                where,
                f"its arrays need {total} bytes but its files hold {sum(files.values())}: a "
                "shape was altered",
            )
        for key in ("scalars", "meta"):
            for name in _dict(data[key], f"{where}: {key}"):
                if not isinstance(name, str):
                    raise _bad(where, f"{key} key {name!r} is not a string")
        for name, state in _dict(data["rng"], f"{where}: rng").items():
            _plain(name, f"{where}: rng name")
            _check_rng(state, f"{where}: rng {name!r}")
        if "nodes" in data and (
            not isinstance(data["nodes"], list)
            or len(data["nodes"]) != nprocs
            or not all(isinstance(n, str) for n in data["nodes"])
        ):
            raise _bad(where, "nodes must list one node name per saving rank")
        if "checkpoint_id" in data and not isinstance(data["checkpoint_id"], str):
            raise _bad(where, "checkpoint_id must be a string")
        if "shared_directory" in data and not isinstance(data["shared_directory"], str):
            raise _bad(where, "shared_directory must be a string")
        if "tier" in data and data["tier"] != "node-local":
            raise _bad(where, f"tier {data['tier']!r:.40} is not 'node-local'")
        if "partners" in data:
            partners = data["partners"]
            if not isinstance(partners, list) or len(partners) != nprocs:
                raise _bad(where, "partners must list one entry per saving rank")
            for i, p in enumerate(partners):
                if p is not None:
                    _int(p, f"{where}: partners[{i}]", 0, nprocs - 1)
        manifest = cls(data, arrays, digest, raw)
        manifest.local = local
        return manifest

    @staticmethod
    def _files(value: Any, where: str, nprocs: int) -> dict[str, int]:
        if not isinstance(value, list) or len(value) > nprocs + 1:
            raise _bad(where, f"files must be a list of at most {nprocs + 1} entries")
        files: dict[str, int] = {}
        for i, entry in enumerate(value):
            entry = _dict(entry, f"{where}: files[{i}]", {"name", "bytes"}, {"name", "bytes"})
            name = _plain(entry["name"], f"{where}: files[{i}].name")
            if name in files:
                raise _bad(where, f"file {name} listed twice")
            files[name] = _int(entry["bytes"], f"{where}: files[{i}].bytes", 0, 2**50)
        return files


def _array(
    name: str, spec: Any, where: str, nprocs: int, files: set[str], single: bool
) -> ArraySpec:

    spec = _dict(spec, where, _ARRAY, _ARRAY)
    shape_raw = spec["global_shape"]
    if not isinstance(shape_raw, list) or not 1 <= len(shape_raw) <= MAX_NDIM:
        raise _bad(where, f"global_shape must list 1 to {MAX_NDIM} extents")
    ndim = len(shape_raw)
    global_shape = _ints(shape_raw, f"{where}: global_shape", ndim, 1, 2**50)
    if not isinstance(spec["dtype"], str) or spec["dtype"] not in ALLOWED_DTYPES:
        raise _bad(where, f"dtype {spec['dtype']!r:.40} is not a plain numeric dtype")
    dtype = np.dtype(spec["dtype"])
    dims = _ints(spec["dims"], f"{where}: dims", ndim, 1, MAX_NPROCS)
    if math.prod(dims) != nprocs:
        raise _bad(where, f"process grid {dims} does not have nprocs={nprocs} ranks")
    periods_raw = spec["periods"]
    if not isinstance(periods_raw, list) or len(periods_raw) != ndim:
        raise _bad(where, f"periods must list {ndim} booleans")
    if not all(isinstance(p, bool) for p in periods_raw):
        raise _bad(where, "periods must be booleans")
    halo = _ints(spec["halo"], f"{where}: halo", ndim, 0, 2**31)
    try:
        partition = Partition(global_shape, dims, tuple(periods_raw))
        check_halo(partition, halo)
    except ParcompError as exc:
        raise _bad(where, f"layout does not fit: {exc}") from None
    shards_raw = spec["shards"]
    if not isinstance(shards_raw, list) or len(shards_raw) != nprocs:
        raise _bad(where, f"shards must list one block per saving rank ({nprocs})")
    shards = []
    for rank, entry in enumerate(shards_raw):
        at = f"{where}: shards[{rank}]"
        entry = _dict(entry, at, _SHARD, _SHARD - {"file_start"})
        if _int(entry["rank"], f"{at}.rank", 0, nprocs - 1) != rank:
            raise _bad(at, f"rank {entry['rank']} out of order")
        file = _plain(entry["file"], f"{at}.file")
        if single and file != MASTER:
            raise _bad(at, f"a single-file checkpoint keeps every block in {MASTER}")
        if file not in files and not single:
            raise _bad(at, f"file {file} is not among the checkpoint's files")
        want = partition.local_range(rank)
        start = _ints(entry["start"], f"{at}.start", ndim)
        shape = _ints(entry["shape"], f"{at}.shape", ndim)
        if start != tuple(a for a, _ in want) or shape != tuple(b - a for a, b in want):
            raise _bad(
                at,
                f"placement start {list(start)} shape {list(shape)} is not rank {rank}'s block "
                f"of {list(global_shape)} over grid {list(dims)} (start "
                f"{[a for a, _ in want]}, shape {[b - a for a, b in want]})",
            )
        file_start = None
        if single or "file_start" in entry:
            if "file_start" not in entry:
                raise _bad(at, "a single-file block needs file_start")
            file_start = _ints(entry["file_start"], f"{at}.file_start", ndim)
            if file_start != start:
                raise _bad(at, f"file_start {list(file_start)} differs from start {list(start)}")
        rows = _int(entry["slab_rows"], f"{at}.slab_rows", 1, 2**50)
        if rows != slab_rows(shape, dtype.itemsize):
            raise _bad(at, f"slab_rows {rows} is not what the writer uses for this block")
        sums = entry["slab_checksums"]
        count = len(slab_bounds(shape[0], rows))
        if not isinstance(sums, list) or len(sums) != count:
            raise _bad(at, f"expected {count} slab checksums")
        if not all(isinstance(c, str) and _CHECKSUM.match(c) for c in sums):
            raise _bad(at, "slab checksums must be 'fletcher64:<32 hex digits>'")
        shards.append(ShardSpec(rank, file, start, shape, rows, tuple(sums), file_start))
    return ArraySpec(name, global_shape, dtype, dims, tuple(periods_raw), halo, tuple(shards))


def _local(
    value: Any, where: str, nprocs: int, files: set[str], single: str
) -> tuple[dict[str, Any], int]:
    """Validate the per-rank data section; return it and the bytes it describes."""

    section = _dict(value, f"{where}: local")
    if section and single == "single-file":
        raise _bad(where, "a single-file checkpoint holds no per-rank data")
    total = 0
    for name, spec in section.items():
        at = f"{where}: local {_plain(name, f'{where}: local name')!r}"
        spec = _dict(spec, at, {"dtype", "tail", "pieces"}, {"dtype", "tail", "pieces"})
        if not isinstance(spec["dtype"], str) or spec["dtype"] not in ALLOWED_DTYPES:
            raise _bad(at, f"dtype {spec['dtype']!r:.40} is not a plain numeric dtype")
        itemsize = np.dtype(spec["dtype"]).itemsize
        if not isinstance(spec["tail"], list) or len(spec["tail"]) >= MAX_NDIM:
            raise _bad(at, "tail must list the trailing extents")
        tail = _ints(spec["tail"], f"{at}: tail", None, 0, 2**40)
        pieces = spec["pieces"]
        if not isinstance(pieces, list) or len(pieces) != nprocs:
            raise _bad(at, f"pieces must list one entry per saving rank ({nprocs})")
        for rank, entry in enumerate(pieces):
            pat = f"{at}: pieces[{rank}]"
            keys = {"rank", "file", "length", "slab_rows", "slab_checksums"}
            entry = _dict(entry, pat, keys, keys)
            if _int(entry["rank"], f"{pat}.rank", 0, nprocs - 1) != rank:
                raise _bad(pat, "rank out of order")
            if _plain(entry["file"], f"{pat}.file") not in files:
                raise _bad(pat, f"file {entry['file']} is not among the checkpoint's files")
            length = _int(entry["length"], f"{pat}.length", 0, 2**50)
            rows = _int(entry["slab_rows"], f"{pat}.slab_rows", 1, 2**50)
            if rows != slab_rows((length, *tail), itemsize):
                raise _bad(pat, f"slab_rows {rows} is not what the writer uses for this piece")
            sums = entry["slab_checksums"]
            count = len(slab_bounds(length, rows))
            if not isinstance(sums, list) or len(sums) != count:
                raise _bad(pat, f"expected {count} slab checksums")
            if not all(isinstance(c, str) and _CHECKSUM.match(c) for c in sums):
                raise _bad(pat, "slab checksums must be 'fletcher64:<32 hex digits>'")
            total += length * math.prod(tail) * itemsize
    return section, total


def _check_rng(state: Any, where: str) -> None:
    state = _dict(state, where)
    kind = state.get("bit_generator")
    if kind not in ALLOWED_BIT_GENERATORS:
        raise _bad(
            where, f"bit_generator {kind!r:.40} is not one of {sorted(ALLOWED_BIT_GENERATORS)}"
        )
    try:
        getattr(np.random, kind)().state = state
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise _bad(where, f"not a valid {kind} state ({type(exc).__name__}: {exc})") from None
