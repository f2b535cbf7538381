"""Checkpointer on 1..4 ranks: roundtrip, RNG state, fallback on damage, bad input, async."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer
from parcomp.runtime.errors import CheckpointError, ConfigError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size


@pytest.fixture
def folder(tmp_path_factory):
    path = COMM.bcast(str(tmp_path_factory.mktemp("ckpt")) if RANK == 0 else None)
    return Path(path)


def field(shape, dtype=np.float64):
    return lambda *idx: (sum(i * 10**k for k, i in enumerate(idx)) % 997).astype(dtype)


def test_roundtrip_arrays_scalars_rng_meta(folder):
    u = DistArray.fromfunction(field((37, 23)), (37, 23), halo=1, periods=(True, False))
    g = DistArray.fromfunction(field((9, 8, 7), np.int8), (9, 8, 7), dtype=np.int8)
    rng = np.random.default_rng(123)
    rng.random(5)
    ck = Checkpointer(folder, keep=3)
    path = ck.save(
        12,
        arrays={"u": u, "g": g},
        scalars={"t": 0.1 + 0.2, "tag": "x", "v": np.arange(3)},
        rng={"noise": rng},
        meta={"note": "hello"},
    )
    parallel_assert(path.name == "step-00000012" and (path / "manifest.json").exists())
    expected_next = rng.random()
    restored = Checkpointer(folder).restore()
    parallel_assert(restored is not None and restored.step == 12)
    parallel_assert(restored.scalars == {"t": 0.1 + 0.2, "tag": "x", "v": [0, 1, 2]})
    parallel_assert(restored.meta == {"note": "hello"})
    parallel_assert(restored.generator("noise").random() == expected_next)
    ru, rg = restored.arrays["u"], restored.arrays["g"]
    parallel_assert(
        ru.halo == (1, 1) and ru.partition.periods == (True, False) and rg.dtype == np.int8
    )
    for orig, back in ((u, ru), (g, rg)):
        a, b = orig.gather(0), back.gather(0)
        parallel_assert(np.array_equal(a, b) if RANK == 0 else True)


def test_master_file_is_a_global_view(folder):
    import h5py

    u = DistArray.fromfunction(field((20, 11)), (20, 11))
    path = Checkpointer(folder).save(3, arrays={"u": u}, scalars={"dt": 0.5})
    full = u.gather(0)
    if RANK == 0:
        with h5py.File(path / "master.h5", "r") as fh:
            ok = fh["arrays/u"].is_virtual and np.array_equal(fh["arrays/u"][...], full)
            ok = ok and fh["scalars"].attrs["dt"] == 0.5 and fh.attrs["nprocs"] == SIZE
        parallel_assert(ok)
    else:
        parallel_assert(True)


def test_keep_prunes_only_after_commit(folder):
    u = DistArray.zeros((8, 8))
    ck = Checkpointer(folder, keep=2)
    for step in (1, 2, 3, 4):
        ck.save(step, arrays={"u": u})
    ck.close()  # pruning runs in the background until then
    names = sorted(p.name for p in folder.iterdir())  # .parcomp-lease stays: see lease.py
    parallel_assert(names == [".parcomp-lease", "step-00000003", "step-00000004"], f"{names}")


def test_policy_every_steps_and_checkpoint_if_due(folder):
    u = DistArray.zeros((8, 8))
    ck = Checkpointer(folder, every=3, keep=10)
    saved = [step for step in range(1, 10) if ck.checkpoint_if_due(step, arrays={"u": u})]
    parallel_assert(saved == [3, 6, 9], f"{saved}")


def test_async_write_commits_at_wait(folder):
    u = DistArray.fromfunction(field((30, 30)), (30, 30))
    ck = Checkpointer(folder, asynchronous=True)
    parallel_assert(ck.save(5, arrays={"u": u}) is None)
    before = u.gather(0)
    u.interior[...] = -1.0  # compute continues: the snapshot must not see this
    path = ck.wait()
    parallel_assert(path is not None and path.name == "step-00000005")
    back = Checkpointer(folder).restore().arrays["u"].gather(0)
    parallel_assert(np.array_equal(back, before) if RANK == 0 else True)


def _damage(folder, how):
    """Damage the newest of two checkpoints (rank 0 only)."""
    newest = sorted(folder.glob("step-*"))[-1]
    shard = newest / f"shard-{SIZE - 1:05d}-of-{SIZE:05d}.h5"
    if how == "missing":
        shard.unlink()
    elif how == "truncated":
        with open(shard, "r+b") as fh:
            fh.truncate(shard.stat().st_size // 2)
    elif how == "bitflip":
        import h5py

        with h5py.File(shard, "r") as fh:
            offset = fh["arrays/u"].id.get_chunk_info(0).byte_offset
        with open(shard, "r+b") as fh:
            fh.seek(offset + 17)
            byte = fh.read(1)
            fh.seek(offset + 17)
            fh.write(bytes([byte[0] ^ 0x04]))
    elif how == "manifest":
        (newest / "manifest.json").write_text("{ not json")
    elif how == "escape":
        manifest = json.loads((newest / "manifest.json").read_text())
        manifest["files"][0]["name"] = "../../etc/passwd"
        (newest / "manifest.json").write_text(json.dumps(manifest))
    elif how == "version":
        manifest = json.loads((newest / "manifest.json").read_text())
        manifest["schema_version"] = 99
        (newest / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "how", ["missing", "truncated", "bitflip", "manifest", "escape", "version"]
)
def test_damaged_newest_falls_back_to_previous(folder, how):
    u = DistArray.fromfunction(field((24, 10)), (24, 10))
    ck = Checkpointer(folder, keep=2)
    ck.save(1, arrays={"u": u}, scalars={"which": "old"})
    u.interior[...] += 1.0
    ck.save(2, arrays={"u": u}, scalars={"which": "new"})
    if RANK == 0:
        _damage(folder, how)
    COMM.Barrier()
    restored = Checkpointer(folder).restore()
    parallel_assert(
        restored is not None and restored.step == 1 and restored.scalars["which"] == "old", how
    )
    u.interior[...] -= 1.0
    a, b = u.gather(0), restored.arrays["u"].gather(0)
    parallel_assert(np.array_equal(a, b) if RANK == 0 else True, "the fallback holds the old data")


def test_damage_in_one_ranks_part_of_the_first_array_falls_back_without_hanging(folder):
    a = DistArray.fromfunction(field((20, 9)), (20, 9))
    b = DistArray.fromfunction(field((21, 5)), (21, 5), halo=1)
    ck = Checkpointer(folder, keep=2)
    ck.save(1, arrays={"a": a, "b": b})
    ck.save(2, arrays={"a": a, "b": b})
    if RANK == 0:  # flip a byte in the last rank's shard of the first array only
        import h5py

        shard = folder / "step-00000002" / f"shard-{SIZE - 1:05d}-of-{SIZE:05d}.h5"
        with h5py.File(shard, "r") as fh:
            offset = fh["arrays/a"].id.get_chunk_info(0).byte_offset
        with open(shard, "r+b") as fh:
            fh.seek(offset)
            first = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([first[0] ^ 0x80]))
    COMM.Barrier()
    restored = Checkpointer(folder).restore()
    parallel_assert(restored is not None and restored.step == 1)
    back = restored.arrays["b"].gather(0)
    want = b.gather(0)
    parallel_assert(np.array_equal(back, want) if RANK == 0 else True)


def test_all_damaged_means_none(folder):
    u = DistArray.zeros((12, 6))
    Checkpointer(folder).save(1, arrays={"u": u})
    if RANK == 0:
        _damage(folder, "bitflip")
    COMM.Barrier()
    parallel_assert(Checkpointer(folder).restore() is None)
    parallel_assert(Checkpointer(folder / "nothing-here").restore() is None)


def test_bad_input_is_refused_on_every_rank(folder):
    u = DistArray.zeros((8, 8))
    ck = Checkpointer(folder)
    with pytest.raises(ConfigError, match="must be a DistArray"):
        ck.save(1, arrays={"u": np.zeros(3)})
    with pytest.raises(ConfigError, match=r"array name '\.\./x'"):
        ck.save(1, arrays={"../x": u})
    with pytest.raises(ConfigError, match="step must be an integer from 0 to"):
        ck.save(-1, arrays={"u": u})
    with pytest.raises(ConfigError, match="cannot be stored"):
        ck.save(1, scalars={"f": object()})
    # what the manifest reader would refuse is refused before anything is written
    deep: dict = {}
    for _ in range(70):
        deep = {"d": deep}
    for bad, match in (
        ({"deep": deep}, "nested deeper"),
        ({"big": 2**70}, "does not fit in 64 bits"),
        ({"": 1}, "empty key"),
        ({"s": "\ud800"}, "not valid UTF-8"),
    ):
        with pytest.raises(ConfigError, match=match):
            ck.save(1, arrays={"u": u}, scalars=bad)
    with pytest.raises(ConfigError, match="step must be an integer from 0 to"):
        ck.save(10**16, arrays={"u": u})
    with pytest.raises(ConfigError, match="1 to 16 axes"):
        ck.save(1, arrays={"u": u}, local={"p": np.zeros((1,) * 17)})
    parallel_assert(not any(p.name.startswith("step-") for p in folder.iterdir()))
    with pytest.raises(ConfigError, match="keep must be a positive integer"):
        Checkpointer(folder, keep=0)
    if RANK == 0:
        (folder / "afile").write_text("x")
    COMM.Barrier()
    with pytest.raises(CheckpointError, match="exists and is not a directory"):
        Checkpointer(folder / "afile")
    parallel_assert(not any(p.name.startswith(".tmp") for p in folder.iterdir()))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_files_follow_umask_and_are_not_world_writable(folder, umask):
    u = DistArray.zeros((8, 8))
    old = os.umask(umask)
    try:
        path = Checkpointer(folder).save(1, arrays={"u": u})
    finally:
        os.umask(old)
    modes = [os.stat(p).st_mode & 0o777 for p in path.iterdir()] + [os.stat(path).st_mode & 0o777]
    parallel_assert(all(m & 0o002 == 0 for m in modes), f"{[oct(m) for m in modes]}")
    parallel_assert(
        all(m & umask & 0o770 == 0 for m in modes), f"umask {umask:o}: {[oct(m) for m in modes]}"
    )


def test_restore_with_overrides(folder):
    u = DistArray.fromfunction(field((16, 12)), (16, 12), halo=1)
    Checkpointer(folder).save(1, arrays={"u": u})
    back = Checkpointer(folder).restore(layouts={"u": {"halo": 2, "dims": (SIZE, 1)}})
    arr = back.arrays["u"]
    parallel_assert(arr.halo == (2, 2) and arr.partition.dims == (SIZE, 1))
    a, b = u.gather(0), arr.gather(0)
    parallel_assert(np.array_equal(a, b) if RANK == 0 else True)
    _ = parcomp  # keep the import for the default communicator


def test_mpio_needs_parallel_h5py(folder):
    import h5py

    if h5py.get_config().mpi:  # the site-MPI venv: tests/mpio covers the writer itself
        parallel_assert(Checkpointer(folder, mpio=True).mpio)
        return
    with pytest.raises(ConfigError, match="h5py built with MPI"):
        Checkpointer(folder, mpio=True)
