"""Hostile checkpoints: the campaign's manifest mutations and hostile files, on real files.

A 3-rank job writes steps 30 and 60; each test damages step 60 (a copy) and restores in
this process.  Every case must fall back to step 30 with its exact data (never restore
wrong data, never crash, never hang), and ``inspect`` must call step 60 invalid: restore
and inspect agree.  Mutations are applied both as found (the manifest checksum catches
them) and re-signed, as by an adversary who recomputes ``manifest_sha256``.
"""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from parcomp.checkpoint.inspect import inspect_checkpoint
from parcomp.checkpoint.manifest import manifest_digest
from parcomp.checkpoint.restore import load_latest
from tests.conftest import BIN, SCRIPTS, run

STEP60 = "step-00000060"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "ck"
    out = run(
        [
            BIN / "parcomp",
            "run",
            "-n",
            "3",
            "--timeout",
            "120",
            SCRIPTS / "two_checkpoints.py",
            folder,
        ]
    )
    assert out.returncode == 0, out.stderr
    return folder


@pytest.fixture
def ck(pristine, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(pristine, folder)
    return folder


def expected(step):
    i, j = np.meshgrid(np.arange(13), np.arange(11), indexing="ij")
    return 100.0 * i + j + (1000.0 if step == 60 else 0.0)


def restore(folder):
    restored = load_latest(folder, MPI.COMM_SELF)
    assert restored is not None
    return restored.step, restored.arrays["u"].gather()


def assert_falls_back(folder):
    step, data = restore(folder)
    assert step == 30, "restored the damaged step 60"
    assert np.array_equal(data, expected(30))
    valid, text = inspect_checkpoint(folder / STEP60)
    assert not valid, text
    return text


def edit_manifest(folder, mutate, sign):
    path = folder / STEP60 / "manifest.json"
    m = json.loads(path.read_text())
    mutate(m)
    if sign:
        m["manifest_sha256"] = manifest_digest(m)
    path.write_text(json.dumps(m, indent=1, sort_keys=True))


def shards(m):
    return m["arrays"]["u"]["shards"]


MUTATIONS = {
    "step 59": lambda m: m.update(step=59),
    "step 61": lambda m: m.update(step=61),
    "step 0": lambda m: m.update(step=0),
    "step true": lambda m: m.update(step=True),
    "starts swapped": lambda m: (
        lambda s: (
            s.__setitem__(0, {**s[0], "start": s[1]["start"]}),
            s.__setitem__(1, {**s[1], "start": [0, 0]}),
        )
    )(shards(m)),
    "start shifted by one": lambda m: shards(m)[1]["start"].__setitem__(
        0, shards(m)[1]["start"][0] + 1
    ),
    "shard entry removed": lambda m: shards(m).pop(1),
    "shards {}": lambda m: m["arrays"]["u"].update(shards={}),
    "negative shape": lambda m: shards(m)[0]["shape"].__setitem__(1, -11),
    "slab_rows -1": lambda m: [s.update(slab_rows=-1) for s in shards(m)],
    "slab_rows 1": lambda m: [s.update(slab_rows=1) for s in shards(m)],
    "halo 2": lambda m: m["arrays"]["u"].update(halo=[2, 2]),
    "periods flipped": lambda m: m["arrays"]["u"].update(periods=[False, True]),
    "arrays []": lambda m: m.update(arrays=[]),
    "files 5": lambda m: m.update(files=5),
    "dtype <f4": lambda m: m["arrays"]["u"].update(dtype="<f4"),
    "dtype object": lambda m: m["arrays"]["u"].update(dtype="|O"),
    "nprocs 2": lambda m: m.update(nprocs=2),
    "huge global_shape": lambda m: m["arrays"]["u"].update(global_shape=[1000000, 320]),
    "rng seed": lambda m: m["rng"].update(g={"bit_generator": "seed"}),
}


@pytest.mark.parametrize("sign", [False, True], ids=["as-found", "re-signed"])
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_manifest_mutation_falls_back(ck, name, sign):
    edit_manifest(ck, MUTATIONS[name], sign)
    assert_falls_back(ck)


def test_single_bit_flips_in_manifest(ck):
    path = ck / STEP60 / "manifest.json"
    original = path.read_bytes()
    rng = np.random.default_rng(5)
    for bit in rng.choice(len(original) * 8, size=40, replace=False):
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        assert_falls_back(ck)


def test_shard_symlinked_to_a_same_size_file_outside(ck, tmp_path):
    shard = ck / STEP60 / "shard-00001-of-00003.h5"
    outside = tmp_path / "outside.h5"
    shutil.copy(ck / "step-00000030" / "shard-00001-of-00003.h5", outside)
    with open(outside, "r+b") as fh:  # same size as the shard it replaces
        fh.truncate(shard.stat().st_size)
    shard.unlink()
    shard.symlink_to(outside)
    assert_falls_back(ck)


def test_step_directory_symlinked_outside_is_ignored(ck, tmp_path):
    outside = tmp_path / "planted"
    shutil.copytree(ck / STEP60, outside)
    path = outside / "manifest.json"  # a consistent, re-signed step 90 outside the folder
    m = json.loads(path.read_text())
    m["step"] = 90
    m["manifest_sha256"] = manifest_digest(m)
    path.write_text(json.dumps(m))
    (ck / "step-00000090").symlink_to(outside)
    step, data = restore(ck)
    assert step == 60 and np.array_equal(data, expected(60))


def rewrite_shard(ck, change):
    """Apply ``change(h5file)`` to shard 1 of step 60 and re-sign the manifest around it."""
    path = ck / STEP60 / "shard-00001-of-00003.h5"
    with h5py.File(path, "r+") as fh:
        change(fh)
    size = path.stat().st_size
    edit_manifest(
        ck,
        lambda m: [f.update(bytes=size) for f in m["files"] if f["name"] == path.name],
        sign=True,
    )


def test_dataset_as_external_link(ck, tmp_path):
    outside = tmp_path / "ext.h5"
    with (
        h5py.File(ck / STEP60 / "shard-00001-of-00003.h5", "r") as src,
        h5py.File(outside, "w") as dst,
    ):
        src.copy("arrays", dst)

    def change(fh):
        del fh["arrays/u"]
        fh["arrays/u"] = h5py.ExternalLink(str(outside), "/arrays/u")

    rewrite_shard(ck, change)
    assert_falls_back(ck)


def test_dataset_as_virtual_dataset_pointing_outside(ck, tmp_path):
    outside = tmp_path / "virt.h5"
    with h5py.File(ck / STEP60 / "shard-00001-of-00003.h5", "r") as src:
        data, attrs = src["arrays/u"][...], dict(src["arrays/u"].attrs)
    with h5py.File(outside, "w") as dst:
        dst["u"] = data

    def change(fh):
        del fh["arrays/u"]
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[...] = h5py.VirtualSource(str(outside), "u", shape=data.shape)
        dset = fh["arrays"].create_virtual_dataset("u", layout)
        dset.attrs.update(attrs)

    rewrite_shard(ck, change)
    assert_falls_back(ck)


def test_dataset_with_external_raw_storage(ck, tmp_path):
    with h5py.File(ck / STEP60 / "shard-00001-of-00003.h5", "r") as src:
        data, attrs = src["arrays/u"][...], dict(src["arrays/u"].attrs)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data.tobytes())

    def change(fh):
        del fh["arrays/u"]
        dset = fh["arrays"].create_dataset(
            "u", shape=data.shape, dtype=data.dtype, external=[(str(raw), 0, data.nbytes)]
        )
        dset.attrs.update(attrs)

    rewrite_shard(ck, change)
    assert_falls_back(ck)


def test_fifo_as_manifest_does_not_hang(ck):
    path = ck / STEP60 / "manifest.json"
    path.unlink()
    os.mkfifo(path)
    assert_falls_back(ck)


def test_fifo_as_shard_does_not_hang(ck):
    shard = ck / STEP60 / "shard-00002-of-00003.h5"
    shard.unlink()
    os.mkfifo(shard)
    edit_manifest(
        ck, lambda m: [f.update(bytes=0) for f in m["files"] if f["name"] == shard.name], sign=True
    )
    assert_falls_back(ck)


def test_manifest_linked_to_dev_zero(ck):
    path = ck / STEP60 / "manifest.json"
    path.unlink()
    path.symlink_to("/dev/zero")
    assert_falls_back(ck)


def test_cli_inspect_agrees_with_restore(ck):
    edit_manifest(ck, MUTATIONS["starts swapped"], sign=True)
    out = run([BIN / "parcomp", "inspect", ck])
    assert "step-00000060  INVALID" in out.stdout, out.stdout
    assert "restore would use: step 30" in out.stdout
    assert restore(ck)[0] == 30


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["arrays"]["u"].update(periods=[True, True]),
        lambda m: m["arrays"]["u"].update(halo=[0, 0]),
        lambda m: m["arrays"]["u"].update(halo=[2, 2]),
    ],
    ids=["periods", "halo 0", "halo 2"],
)
def test_downgrade_to_schema_1_does_not_dodge_the_shard_checks(ck, change):
    # was (fault campaign, F1): schema_version 1 without a checksum skipped the comparison
    # with the shard's own attributes: exit 0 and a wrong answer
    def downgrade(m):
        m["schema_version"] = 1
        del m["manifest_sha256"]
        change(m)

    edit_manifest(ck, downgrade, sign=False)
    assert_falls_back(ck)


def test_a_checkpoint_of_another_run_is_refused_not_resumed(tmp_path):
    # was (fault campaign, F2): a checkpoint planted from a run with --alpha 0.1 was resumed
    # by a run with the default alpha, exit 0, the other run's answer
    base = [
        BIN / "parcomp",
        "run",
        "-n",
        "2",
        "--timeout",
        "120",
        "jobs/heat2d.py",
        "--n",
        "48",
        "--no-png",
    ]
    other = run(
        [
            *base,
            "--steps",
            "30",
            "--alpha",
            "0.1",
            "--out",
            tmp_path / "a",
            "--checkpoint-dir",
            tmp_path / "ck",
            "--checkpoint-every",
            "10",
        ],
        timeout=150,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    mine = run(
        [
            *base,
            "--steps",
            "60",
            "--out",
            tmp_path / "b",
            "--checkpoint-dir",
            tmp_path / "ck",
            "--checkpoint-every",
            "10",
        ],
        timeout=150,
    )
    assert mine.returncode != 0
    assert "belongs to another run" in mine.stderr and "'alpha': 0.1" in mine.stderr, mine.stderr[
        -2000:
    ]
    assert mine.stderr.count("Traceback") == 1  # once, for both ranks


def test_per_rank_pieces_swapped_in_a_resealed_manifest_fall_back(ck):
    # was: pieces 0 and 1 exchanged (manifest re-signed) restored silently: rank 0 got
    # rank 1's data, and inspect called the checkpoint valid
    restored = load_latest(ck, MPI.COMM_SELF)
    tag = np.concatenate([np.full(r + 1, r + 60.0) for r in range(3)])
    assert restored.step == 60 and np.array_equal(restored.local["tag"], tag)

    def swap(m):
        pieces = m["local"]["tag"]["pieces"]
        for key in ("file", "length", "slab_rows", "slab_checksums"):
            pieces[0][key], pieces[1][key] = pieces[1][key], pieces[0][key]

    edit_manifest(ck, swap, sign=True)
    text = assert_falls_back(ck)
    assert "local array 'tag'" in text and "rank" in text, text
    again = load_latest(ck, MPI.COMM_SELF)
    assert np.array_equal(
        again.local["tag"], np.concatenate([np.full(r + 1, r + 30.0) for r in range(3)])
    )
