"""0.2's module paths and keywords keep working for one release, each with a warning that
names the new spelling; the README's "Renamed" table is exactly what is kept."""

import importlib
import inspect
import re
import subprocess
import sys
import warnings

import pytest

import parcomp
from parcomp import _renamed
from tests.conftest import ROOT

# the modules whose functions carry @renamed_keywords (importing them fills KEYWORDS)
for _name in (
    "parcomp.checkpoint",
    "parcomp.arrays.fft",
    "parcomp.particles",
    "parcomp.launch.run",
):
    importlib.import_module(_name)


@pytest.mark.parametrize("old", sorted(_renamed.MODULES))
def test_old_module_path_warns_and_is_the_new_module(old):
    new = _renamed.MODULES[old]
    # a fresh interpreter: in this one the old name may already sit in sys.modules
    code = (
        "import warnings, importlib, sys\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import parcomp\n"
        f"try:\n    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n    print('WARNED', w)\n"
        "warnings.simplefilter('ignore')\n"
        f"print(importlib.import_module({old!r}) is importlib.import_module({new!r}))\n"
    )
    if old in _renamed.MERGED:  # split in several: every public name of each part is there
        parts = _renamed.MERGED[old]
        code = code.rsplit("print(", 1)[0] + (
            f"m = importlib.import_module({old!r})\n"
            f"print(all(getattr(m, n) is getattr(importlib.import_module(p), n) "
            f"for p in {parts!r} for n in importlib.import_module(p).__all__ if n != 'agreed'))\n"
        )
        new = " + ".join(parts)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"WARNED {old} is now {new}" in out.stdout, out.stdout
    assert out.stdout.strip().endswith("True")


def test_old_comm_agreed_is_still_a_function_call():
    import importlib

    with pytest.warns(DeprecationWarning, match="parcomp.comm is now"):
        comm_v02 = importlib.import_module("parcomp.comm")
    assert comm_v02.agreed(lambda: 42) == 42  # 0.2: agreed(fn, comm) ran fn under agreement
    with pytest.raises(parcomp.ShapeError):
        comm_v02.agreed(lambda: (_ for _ in ()).throw(parcomp.ShapeError("bad")))


@pytest.mark.parametrize(
    ("module", "name", "new"),
    [
        ("parcomp.io.hdf5", "load_hdf5", "parcomp.load_hdf5"),
        ("parcomp.launch.run", "run_job", "parcomp.launch.run.launch_job"),
        ("parcomp.checkpoint.format", "checksum", "parcomp.io.slabs.checksum"),
        ("parcomp.checkpoint.format", "slab_bounds", "parcomp.io.slabs.slab_bounds"),
    ],
)
def test_moved_names_in_kept_modules_warn_and_hand_on(module, name, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{module}.{name} is now {new}"):
        got = getattr(mod, name)
    owner, _, attr = new.rpartition(".")
    assert got is getattr(importlib.import_module(owner), attr)


def test_python_dash_m_with_an_old_path_runs_the_new_module():
    # 0.2's `python -m parcomp.workers` runs parcomp.front.workers (which refuses to run
    # outside an MPI spawn, naming why)
    out = subprocess.run(
        [sys.executable, "-m", "parcomp.workers"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "started by parcomp.Workers" in out.stderr, out.stderr


def test_checkpointer_old_attribute_names(tmp_path):
    ck = parcomp.Checkpointer(tmp_path / "ck", every=4, handle_signals=False)
    with pytest.warns(
        DeprecationWarning, match=r"Checkpointer\.every_steps is now Checkpointer\.every"
    ):
        assert ck.every_steps == 4


def test_old_names_in_kept_packages_warn_and_hand_on():
    import parcomp.io
    import parcomp.launch

    with pytest.warns(
        DeprecationWarning, match=r"parcomp\.io\.load_hdf5 is now parcomp\.load_hdf5"
    ):
        assert parcomp.io.load_hdf5 is parcomp.load_hdf5
    with pytest.warns(DeprecationWarning, match="launch_job"):
        assert parcomp.launch.run_job is parcomp.launch.launch_job


def test_renamed_keyword_is_passed_on_with_a_warning(monkeypatch):
    monkeypatch.setattr(_renamed, "KEYWORDS", {})  # the demo is not a real rename

    @_renamed.renamed_keywords("demo", old="new")
    def demo(*, new=None):
        return new

    with pytest.warns(DeprecationWarning, match=r"demo\(old=\.\.\.\) is now demo\(new=\.\.\.\)"):
        assert demo(old=3) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert demo(new=4) == 4  # the new name: no warning
    with pytest.raises(TypeError, match="give new= only"):
        demo(old=1, new=2)


def _function(where):
    return {
        "Checkpointer": parcomp.Checkpointer.__init__,
        "Checkpointer.restore": parcomp.Checkpointer.restore,
        "DistParticles.restore": parcomp.DistParticles.restore,
        "DistParticles": parcomp.DistParticles.__init__,
        "parcomp.launch.launch_job": importlib.import_module("parcomp.launch.run").launch_job,
        **{
            f"parcomp.fft.{n}": getattr(parcomp.fft, n)
            for n in ("fftn", "ifftn", "rfftn", "irfftn")
        },
    }[where]


@pytest.mark.parametrize("where", sorted(_renamed.KEYWORDS))
def test_each_new_keyword_is_in_the_signature_and_the_old_is_not(where):
    params = inspect.signature(_function(where)).parameters
    for old, new in _renamed.KEYWORDS[where].items():
        assert new in params and old not in params, (where, old, new, list(params))


def test_checkpointer_takes_its_old_keywords(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"Checkpointer\(every_steps=\.\.\.\) is now"):
        ck = parcomp.Checkpointer(tmp_path / "ck", every_steps=5, handle_signals=False)
    assert ck.every == 5


def test_readme_table_is_the_renamed_tables():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Renamed in 0.3", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|$", section, re.M))
    want = {(f"`import {o}`", f"`{n}`") for o, n in _renamed.MODULES.items()}
    want |= {(f"`{o}`", f"`{n}`") for o, n in _renamed.NAMES.items()}
    want |= {
        (f"`{w}({o}=)`", f"`{w}({n}=)`") for w, m in _renamed.KEYWORDS.items() for o, n in m.items()
    }
    assert rows == want, (rows - want, want - rows)


def test_map_is_not_exported_by_import_star():
    assert "map" not in parcomp.__all__
    namespace: dict = {}
    exec("from parcomp import *", namespace)
    assert (
        "map" not in namespace
        and parcomp.map is importlib.import_module("parcomp.mapreduce.items").map
    )
