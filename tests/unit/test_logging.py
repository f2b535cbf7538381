"""Rank-tagged logging; rank taken from the launcher's environment before MPI starts."""

import io
import logging
import subprocess
import sys

import pytest

from parcomp.runtime.errors import ConfigError
from parcomp.runtime.log import configure_logging, get_logger

SNIPPET = """
import parcomp
log = parcomp.get_logger("parcomp.test")
log.info("info-line")
log.warning("warning-line")
"""


def _run(env):
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PARCOMP_LOG"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=full, timeout=60
    )


def test_rank0_logs_info_tagged():
    out = _run({"PMI_RANK": "0", "PMI_SIZE": "3"})
    assert "[rank 0/3] INFO parcomp.test: info-line" in out.stderr
    assert "[rank 0/3] WARNING parcomp.test: warning-line" in out.stderr


def test_other_ranks_warning_only():
    out = _run({"PMI_RANK": "2", "PMI_SIZE": "3"})
    assert "info-line" not in out.stderr
    assert "[rank 2/3] WARNING parcomp.test: warning-line" in out.stderr


def test_env_overrides_levels():
    out = _run({"PMI_RANK": "2", "PMI_SIZE": "3", "PARCOMP_LOG_LEVEL_OTHERS": "info"})
    assert "[rank 2/3] INFO parcomp.test: info-line" in out.stderr
    out = _run({"PMI_RANK": "0", "PMI_SIZE": "1", "PARCOMP_LOG_LEVEL": "ERROR"})
    assert "warning-line" not in out.stderr


def test_bad_level_names_valid_ones():
    with pytest.raises(ConfigError, match="expected one of DEBUG, INFO"):
        configure_logging(level="LOUD")


def test_api_configures_stream_and_level():
    stream = io.StringIO()
    try:
        configure_logging(level="DEBUG", stream=stream)
        get_logger("demo").debug("hello %d", 5)
        assert "[rank 0/1] DEBUG parcomp.demo: hello 5" in stream.getvalue()
        configure_logging(level=logging.ERROR, stream=stream)
        get_logger("demo").warning("hidden")
        assert "hidden" not in stream.getvalue()
    finally:
        configure_logging()
