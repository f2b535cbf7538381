"""MPI tests: run under ``parcomp run -n N -m pytest --with-mpi tests/mpi`` for N = 1..4."""

from __future__ import annotations

import pytest
from mpi4py import MPI


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("mpi") is None:
            item.add_marker(pytest.mark.mpi)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if MPI.COMM_WORLD.Get_rank() != 0:
        config.option.verbose = -1  # only rank 0 lists the tests; every rank still reports
        _one_mpi_header(config)


def _one_mpi_header(config):
    """pytest-mpi prints its "MPI Information" section on every rank: keep rank 0's only."""
    for plugin in list(config.pluginmanager.get_plugins()):
        if type(plugin).__name__ != "MPIPlugin":
            continue

        class QuietMPIPlugin(type(plugin)):
            def pytest_terminal_summary(self):
                pass

        quiet = QuietMPIPlugin()
        quiet.__dict__.update(plugin.__dict__)
        config.pluginmanager.unregister(plugin)
        config.pluginmanager.register(quiet, "mpi-quiet")


@pytest.fixture(params=["COMM_SELF", "COMM_WORLD"])
def any_comm(request):
    """The same test on a communicator of size 1 and on the whole job (as mpi4py's tests do)."""
    comm = getattr(MPI, request.param).Dup()
    yield comm
    comm.Free()
