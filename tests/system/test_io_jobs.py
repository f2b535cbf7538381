"""Results files from real jobs: heat2d's parallel output and its time series, under a
SIGKILL at a random moment and a relaunch; xarray and ncdump read the series; a full disk
during to_hdf5 leaves the old file and no temporary."""

import os
import random
import shutil
import signal
import subprocess
import threading
import time

import h5py
import numpy as np
import pytest

from tests.conftest import BIN, ensure_apt_tool, load_job, run
from tests.helpers import rank_pids

PARCOMP = BIN / "parcomp"


@pytest.mark.parametrize("seed", [1, 2])
def test_series_survives_a_kill_at_a_random_moment(tmp_path, seed):
    out = tmp_path / f"out-{seed}"
    argv = [
        PARCOMP, "run", "-n", "3", "--timeout", "150", "--restarts", "1",
        "jobs/heat2d.py", "--n", "48", "--steps", "240", "--alpha", "0.2",
        "--series-every", "1", "--checkpoint-dir", tmp_path / "ck", "--checkpoint-every", "15",
        "--step-delay", "0.012", "--no-png", "--out", out,
    ]  # fmt: skip
    killed = []

    def killer():
        # strike at a random moment after the ranks exist (a fixed wall-clock delay from
        # the launch came after the end of the job on a fast, idle machine: CI); the
        # steps alone take at least 240 x 12 ms after the ranks' imports
        # (a delay counted from the ranks' start came before the first checkpoint on a
        # loaded machine: the restart then began afresh and never said "resumed"); now
        # from the first committed checkpoint, when the 240 steps have >= 2.7 s to go
        deadline = time.monotonic() + 90
        while not list((tmp_path / "ck").glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.1, 1.5))
        pids = rank_pids(str(out))
        if pids:
            victim = random.Random(seed).choice(pids)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    thread = threading.Thread(target=killer)
    thread.start()
    proc = run(argv, timeout=240)
    thread.join()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert killed, "the kill came too late: the job had finished (make it longer)"
    assert "resumed at step" in proc.stderr, proc.stderr[-3000:]
    heat = load_job("heat2d")
    with h5py.File(out / "series.h5", "r") as fh:
        steps = fh["step"][...]
        assert np.array_equal(steps, np.arange(241)), steps  # each step once, none missing
        assert np.array_equal(fh["time"][...], steps.astype(float))
        u = fh["u"]
        for k in (0, 1, 17, 100, 239, 240):  # the analytic solution at each recorded step
            assert np.allclose(u[k], heat.exact(48, k, 0.2), rtol=0, atol=1e-12), k
        with h5py.File(out / "heat2d.h5", "r") as final:
            assert np.array_equal(u[240], final["u"][...])
        total = fh["total"][...]
    assert np.allclose(total, [heat.exact(48, k, 0.2).sum() for k in range(241)], rtol=1e-12)


@pytest.mark.timeout(600)  # may install netcdf-bin with apt first
def test_xarray_and_ncdump_read_the_series(tmp_path):
    import xarray as xr

    out = tmp_path / "out"
    proc = run(
        [PARCOMP, "run", "-n", "2", "--timeout", "120", "jobs/heat2d.py", "--n", "20",
         "--steps", "30", "--series-every", "10", "--no-png", "--out", out],
        timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(out / "series.h5", engine="h5netcdf") as ds:
        assert ds.u.dims == ("time", "x", "y")
        assert list(ds.time.values) == [0.0, 10.0, 20.0, 30.0]
        assert list(ds.x.values) == list(range(20)) and ds.x.attrs["axis"] == "X"
        assert ds.u.attrs["long_name"] == "temperature"
        assert np.array_equal(ds.u.isel(time=-1).values, h5py.File(out / "heat2d.h5")["u"][...])
        history = ds.u.isel(x=5, y=7).values  # a point's history
        heat = load_job("heat2d")
        assert np.allclose(history, [heat.exact(20, k, 0.24)[5, 7] for k in (0, 10, 20, 30)])
    import xml.etree.ElementTree as ET

    root = ET.fromstring((out / "series.xmf").read_text())  # well-formed XDMF
    grids = root.findall("./Domain/Grid/Grid")
    assert [g.find("Time").get("Value") for g in grids] == ["0.0", "10.0", "20.0", "30.0"]
    slab = grids[2].find("Attribute/DataItem")
    assert slab.get("ItemType") == "HyperSlab" and slab.get("Dimensions") == "20 20"
    select, source = slab.findall("DataItem")
    assert select.text.split()[:3] == ["2", "0", "0"]  # record 2's slab of the series
    assert source.text == "series.h5:/u" and source.get("Dimensions") == "4 20 20"
    reason = ensure_apt_tool("ncdump", "netcdf-bin")
    if reason:
        pytest.skip(reason)
    header = subprocess.run(
        ["ncdump", "-h", str(out / "series.h5")], capture_output=True, text=True, timeout=60
    )
    assert header.returncode == 0, header.stderr
    assert "time = UNLIMITED ; // (4 currently)" in header.stdout
    assert "double u(time, x, y)" in header.stdout


def test_to_hdf5_on_a_full_disk_keeps_the_old_file(small_disk):
    script = small_disk.parent / "fill.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from parcomp.arrays.array import DistArray\n"
        "from parcomp.runtime.errors import HDF5Error\n"
        "n = int(sys.argv[2])\n"
        "u = DistArray.fromfunction(lambda i, j: i + j * 0.5, (n, n))\n"
        "try:\n"
        "    u.to_hdf5(sys.argv[1], 'u')\n"
        "except HDF5Error as exc:\n"
        "    sys.stdout.write(f'REFUSED {type(exc).__name__}\\n')  # one write: ranks interleave\n"
        "    raise SystemExit(3)\n"
    )
    target = small_disk / "field.h5"
    ok = run([PARCOMP, "run", "-n", "2", "--timeout", "60", script, target, "40"], timeout=90)
    assert ok.returncode == 0, ok.stderr[-3000:]
    before = {p.name for p in small_disk.iterdir()}
    with h5py.File(target, "r") as fh:
        good = fh["u"][...]
    big = run([PARCOMP, "run", "-n", "2", "--timeout", "60", script, target, "600"], timeout=90)
    assert big.returncode != 0 and "REFUSED HDF5Error" in big.stdout, (
        big.stdout + big.stderr[-3000:]
    )
    assert {p.name for p in small_disk.iterdir()} == before  # no temporary, no new parts
    with h5py.File(target, "r") as fh:
        assert np.array_equal(fh["u"][...], good)


def test_a_read_only_target_is_a_clear_error_on_every_rank(read_only_dir):
    script = read_only_dir.parent / "ro.py"
    script.write_text(
        "import sys\n"
        "from parcomp.arrays.array import DistArray\n"
        "from parcomp.runtime.errors import HDF5Error\n"
        "from parcomp.io import Series\n"
        "u = DistArray.zeros((8, 8))\n"
        "for what in ('to_hdf5', 'series'):\n"
        "    try:\n"
        "        if what == 'to_hdf5':\n"
        "            u.to_hdf5(sys.argv[1] + '/f.h5')\n"
        "        else:\n"
        "            Series(sys.argv[1] + '/s.h5', {'u': u}).append(0, 0.0, fields={'u': u})\n"
        "    except HDF5Error as exc:\n"
        "        sys.stdout.write(f'REFUSED {what}: {exc}\\n')  # one write: no interleaving\n"
        "        sys.stdout.flush()\n"
    )
    proc = run([PARCOMP, "run", "-n", "3", "--timeout", "60", script, read_only_dir], timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for what in ("to_hdf5", "series"):
        assert proc.stdout.count(f"REFUSED {what}:") == 3, proc.stdout  # every rank
    assert proc.stdout.count("is not writable") == 6, proc.stdout  # a clear reason
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("how", ["relaunch", "ulfm"])
def test_the_restored_steps_record_is_not_lost(tmp_path, how, request):
    """Killed at step 23 with a checkpoint at 20: the record of step 20 was appended after
    that checkpoint (asynchronously: committed by the next append, which never came).
    The resumed run must append it again from the restored state; it was missing."""
    common = [
        "--n", "40", "--steps", "40", "--series-every", "5", "--checkpoint-dir", tmp_path / "ck",
        "--checkpoint-every", "10", "--die-at-step", "23", "--die-rank", "1", "--no-png",
        "--out", tmp_path / "out",
    ]  # fmt: skip
    if how == "ulfm":
        venv = request.getfixturevalue("ompi_venv")
        argv = [venv / "bin" / "parcomp", "run", "--ulfm", "-n", "3", "--timeout", "120"]
    else:
        argv = [PARCOMP, "run", "-n", "3", "--timeout", "120", "--restarts", "1"]
    proc = run([*argv, "jobs/heat2d.py", *common], timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed at step 20" in proc.stderr, proc.stderr[-3000:]
    heat = load_job("heat2d")
    with h5py.File(tmp_path / "out" / "series.h5", "r") as fh:
        assert fh["step"][...].tolist() == list(range(0, 41, 5))
        assert np.allclose(fh["u"][4], heat.exact(40, 20, 0.24), rtol=0, atol=1e-12)


def test_temporaries_of_killed_writes_are_swept_by_the_next_write(tmp_path):
    # was: a .field.h5.tmp-* file stayed after a kill during to_hdf5 (2 of 17 kills);
    # save_hdf5 swept old part folders, never old temporaries
    folder = tmp_path / "out"
    folder.mkdir()
    for seed in range(4):
        proc = subprocess.Popen(
            [PARCOMP, "run", "-n", "2", "--timeout", "120", "tests/scripts/save_loop.py", folder,
             "400"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout.readline().startswith("saved"), "the job did not start saving"
        time.sleep(random.Random(seed).uniform(0.0, 0.4))
        pids = rank_pids("save_loop.py")
        for pid in pids:  # rank 0 writes the temporary: kill every rank at once
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
    # what earlier versions and other users may leave: only our own dead writers' files go
    from parcomp.io.hdf5 import temp_owner

    host = temp_owner().split("-")[1]
    dead = folder / f".field.h5.tmp-999999-{host}-deadbeef"  # a dead writer on this host
    dead.write_bytes(b"half a file")
    live = folder / f".field.h5.tmp-{os.getpid()}-{host}-cafe"  # a live one's: its lease
    live.write_bytes(b"in progress")
    # another node's writer (a shared file system): its pid means nothing here
    remote = folder / ".field.h5.tmp-999997-0badc0de-beef"
    remote.write_bytes(b"another node's")
    link = folder / f".field.h5.tmp-999998-{host}-link"
    link.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text("not ours to delete")
    done = run([PARCOMP, "run", "-n", "2", "--timeout", "120", "tests/scripts/save_loop.py",
                folder, "1"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    left = sorted(p.name for p in folder.iterdir() if p.name.startswith(".field.h5.tmp-"))
    assert left == sorted([live.name, remote.name, link.name]), left
    assert (tmp_path / "elsewhere").read_text() == "not ours to delete"
    parts = [p for p in folder.iterdir() if ".parts-" in p.name]
    assert len(parts) == 1, parts  # the live file's part folder only
    with h5py.File(folder / "field.h5", "r") as fh:
        i, j = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
        assert np.array_equal(fh["u"][...], 100.0 * i + j)


@pytest.mark.parametrize("how", ["absolute-source", "symlinked-part"])
def test_load_hdf5_opens_nothing_outside_the_parts_folder(tmp_path, how):
    # was: load_hdf5 followed virtual sources and symlinked parts outside the output's
    # folder (found with strace by the campaign); now checked the same way
    reason = ensure_apt_tool("strace", "strace")
    if reason is not None:
        pytest.skip(reason)
    strace = shutil.which("strace")
    folder = tmp_path / "out"
    folder.mkdir()
    done = run([PARCOMP, "run", "-n", "2", "--timeout", "120", "tests/scripts/save_loop.py",
                folder, "1"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
    outside = tmp_path / "outside"
    shutil.copytree(parts, outside)
    if how == "absolute-source":
        with h5py.File(folder / "field.h5", "a") as fh:
            sources = [
                (v.vspace.get_select_bounds(), v.file_name) for v in fh["u"].virtual_sources()
            ]
            del fh["u"]
            layout = h5py.VirtualLayout(shape=(40, 30), dtype=np.float64)
            for (lo, hi), name in sources:
                extent = tuple(b - a + 1 for a, b in zip(lo, hi, strict=True))
                source = h5py.VirtualSource(
                    str(outside / name.rsplit("/", 1)[1]), "u", shape=extent
                )
                layout[tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))] = source
            fh.create_virtual_dataset("u", layout)
    else:
        (parts / "rank-00001.h5").unlink()
        (parts / "rank-00001.h5").symlink_to(outside / "rank-00001.h5")
    log = tmp_path / "strace.log"
    read = run(
        [strace, "-f", "-e", "trace=open,openat,openat2", "-o", log, BIN / "python", "-c",
         f"import parcomp; parcomp.load_hdf5({str(folder / 'field.h5')!r}, 'u')"],
        env={"PARCOMP_FAILFAST": "0"}, timeout=120,
    )  # fmt: skip
    assert read.returncode != 0 and "HDF5Error" in read.stderr, read.stderr[-2000:]
    opened = log.read_text()
    assert str(outside) not in opened, [line for line in opened.splitlines() if "outside" in line]
    assert "rank-0000" in opened or how == "absolute-source"  # the parts were looked at
