"""The one declaration of parcomp's environment variables (parcomp.runtime.config)."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def readme_table() -> set[str]:
    """The variables named in the first column of the README's environment table."""
    names: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `PARCOMP_") or line.startswith("| `NUMBA_CACHE_DIR`"):
            first = line.split("|")[1]
            names |= set(re.findall(r"PARCOMP_[A-Z_]+", first))
    return names


def test_the_readme_table_lists_every_public_setting_and_nothing_else():
    public = {s.name for s in config.SETTINGS.values() if s.public}
    assert readme_table() == public


def test_every_variable_the_library_reads_is_declared():
    """Every PARCOMP_* name in the library's source is a declared setting (a typo, or a
    variable read without a declaration, fails here)."""
    found: set[str] = set()
    for path in (ROOT / "parcomp").rglob("*.py"):
        found |= set(re.findall(r"\"(PARCOMP_[A-Z_]+)\"", path.read_text()))
    assert found <= set(config.SETTINGS), found - set(config.SETTINGS)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("off", False), ("", True)],
)
def test_flags_parse_one_way(raw, value):
    assert config.get("PARCOMP_FAILFAST", {"PARCOMP_FAILFAST": raw}) is value


def test_full_traceback_zero_means_off():
    """It used to be any non-empty value, so ``PARCOMP_FULL_TRACEBACK=0`` turned it on."""
    assert config.get("PARCOMP_FULL_TRACEBACK", {"PARCOMP_FULL_TRACEBACK": "0"}) is False
    assert config.get("PARCOMP_FULL_TRACEBACK", {"PARCOMP_FULL_TRACEBACK": "1"}) is True


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("PARCOMP_FAILFAST", "maybe", "PARCOMP_FAILFAST='maybe': expected one of 1/0"),
        ("PARCOMP_ULFM", "2", "PARCOMP_ULFM='2': expected one of 1/0"),
        ("PARCOMP_ABORT_GRACE", "soon", "PARCOMP_ABORT_GRACE='soon': expected a number"),
        ("PARCOMP_ABORT_GRACE", "-1", "PARCOMP_ABORT_GRACE='-1': must be at least 0"),
        ("PARCOMP_STRANDED_AFTER", "0", "PARCOMP_STRANDED_AFTER='0': must be positive"),
        ("PARCOMP_TILE_CACHE_BYTES", "1M", "PARCOMP_TILE_CACHE_BYTES='1M': expected an integer"),
        ("PARCOMP_EMULATE_NODES", "0", "PARCOMP_EMULATE_NODES='0': must be positive"),
        ("PARCOMP_LOG_LEVEL", "LOUD", "PARCOMP_LOG_LEVEL='LOUD': expected a logging level"),
        ("PARCOMP_RESTART_COUNT", "x", "PARCOMP_RESTART_COUNT='x': expected an integer"),
    ],
)
def test_an_invalid_value_names_the_variable(name, raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.get(name, {name: raw})


def test_defaults_and_kinds():
    assert config.get("PARCOMP_ABORT_GRACE", {}) == 0.1
    assert config.get("PARCOMP_STRANDED_AFTER", {"PARCOMP_STRANDED_AFTER": "2.5"}) == 2.5
    assert config.get("PARCOMP_LOG_LEVEL", {"PARCOMP_LOG_LEVEL": "debug"}) == logging.DEBUG
    assert config.get("PARCOMP_LOG_LEVEL_OTHERS", {}) == logging.WARNING
    assert config.get("PARCOMP_MPIEXEC_ARGS", {"PARCOMP_MPIEXEC_ARGS": "-f h"}) == "-f h"
    assert config.get("PARCOMP_CHECK_COLLECTIVES", {}) is True
    with pytest.raises(ConfigError, match="PARCOMP_NOPE is not a parcomp setting"):
        config.get("PARCOMP_NOPE", {})


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("PARCOMP_STRANDED_AFTER", "soon", "PARCOMP_STRANDED_AFTER='soon': expected a number"),
        # read only on some code paths (the stencil tiles): refused at once too
        ("PARCOMP_TILE_CACHE_BYTES", "1M", "PARCOMP_TILE_CACHE_BYTES='1M': expected an integer"),
    ],
)
def test_parcomp_run_refuses_an_invalid_setting_before_starting(tmp_path, name, raw, message):
    """Before: both values were silently replaced by their defaults."""
    script = tmp_path / "x.py"
    script.write_text("print('ran')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "parcomp", "run", "-n", "1", "--timeout", "60", str(script)],
        capture_output=True, text=True, timeout=90, env={**os.environ, name: raw},
    )  # fmt: skip
    assert proc.returncode == 2 and "ran" not in proc.stdout, proc.stderr
    assert message in proc.stderr


def test_exit_statuses_live_in_one_module_and_launch_needs_no_checkpoint_package():
    from parcomp.runtime import status

    code = (
        "import sys, parcomp.launch.run, parcomp.launch.runner, parcomp.launch.slurm;"
        "print(sorted(m for m in sys.modules if m.startswith('parcomp.checkpoint')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    from parcomp.checkpoint.preempt import PREEMPTED_STATUS
    from parcomp.launch.supervise import TIMEOUT_STATUS
    from parcomp.runtime.failfast import INTERRUPTED_STATUS

    assert (PREEMPTED_STATUS, INTERRUPTED_STATUS, TIMEOUT_STATUS) == (75, 130, 124)
    assert (status.PREEMPTED, status.INTERRUPTED, status.TIMEOUT) == (75, 130, 124)


def test_the_library_reads_its_settings_only_through_config():
    pattern = re.compile(r"(environ|env)\.get\(\s*\"PARCOMP_|getenv\(\"PARCOMP_")  # reads
    readers = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "parcomp").rglob("*.py")
        if p.name != "config.py" and pattern.search(p.read_text())
    ]
    assert readers == []
