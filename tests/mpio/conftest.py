"""MPI tests of the mpio writer: the same pytest hooks as tests/mpi."""

from tests.mpi.conftest import any_comm, pytest_collection_modifyitems, pytest_configure

__all__ = ["any_comm", "pytest_collection_modifyitems", "pytest_configure"]
