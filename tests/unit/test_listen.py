"""Which jobs parcomp run keeps off the network (parcomp.launch.listen, PURE): one machine
only; any host list, on the command line or where a launcher reads one from the
environment, leaves the transports alone (restricting them would cut a cluster job)."""

import pytest

from parcomp.launch.listen import HOST_LIST_ENV, keep_local, single_node


def test_a_plain_job_is_single_node_and_asks_for_shared_memory():
    env = {}
    assert single_node(env, [])
    assert keep_local(env, "MPICH", []) and env["UCX_TLS"] == "self,sm"
    env = {}
    assert keep_local(env, "Open MPI", []) and env["OMPI_MCA_btl"] == "self,sm"
    env = {"UCX_TLS": "rc,sm"}  # the user's own setting stays
    keep_local(env, "MPICH", [])
    assert env["UCX_TLS"] == "rc,sm"


@pytest.mark.parametrize(
    "extra", [["-f", "hosts"], ["--hostfile=h"], ["-hosts", "a,b"], ["-H", "a"]]
)
def test_a_host_list_on_the_command_line_is_left_alone(extra):
    env = {}
    assert not keep_local(env, "MPICH", extra) and "UCX_TLS" not in env


@pytest.mark.parametrize("name", HOST_LIST_ENV)
def test_a_host_list_in_the_environment_is_left_alone(name):
    env = {name: "/some/hosts"}
    assert not single_node(env, []) and not keep_local(env, "MPICH", [])
    assert "UCX_TLS" not in env


def test_a_slurm_allocation_of_several_nodes_is_left_alone():
    assert not single_node({"SLURM_JOB_NUM_NODES": "2"}, [])
    assert single_node({"SLURM_JOB_NUM_NODES": "1"}, [])
