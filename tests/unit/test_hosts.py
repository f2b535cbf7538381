"""Host lists: parsed from --hosts and host files, checked before a multi-node launch."""

import pytest

from parcomp.launch.hosts import (
    Host,
    check_hosts,
    fit_ranks,
    launcher_host_args,
    parse_hosts,
    read_hostfile,
)
from parcomp.runtime.errors import ConfigError


def test_parse_hosts_with_and_without_slots():
    assert parse_hosts("a:2,b, c:3") == [Host("a", 2), Host("b", 1), Host("c", 3)]


@pytest.mark.parametrize(
    "text,message",
    [("", "empty"), ("a:x", "slots 'x'"), ("a:0", "slots '0'"), ("a b", "is not a host name")],
)
def test_bad_host_entries_are_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_hosts(text)


def test_hostfile_forms_and_comments(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# cluster\nn1 slots=4\nn2:2  # two\n\nn3\n")
    assert read_hostfile(path) == [Host("n1", 4), Host("n2", 2), Host("n3", 1)]
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no host"):
        read_hostfile(tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read it"):
        read_hostfile(tmp_path / "missing")


def test_check_hosts_refuses_duplicates_and_too_few_slots():
    with pytest.raises(ConfigError, match="'a' is listed twice"):
        check_hosts([Host("a", 1), Host("a", 2)], 2, resolve=False)
    with pytest.raises(ConfigError, match="3 slot\\(s\\) on 2 host\\(s\\) for -n 4"):
        check_hosts([Host("a", 1), Host("b", 2)], 4, resolve=False)
    check_hosts([Host("a", 1), Host("b", 2)], 3, resolve=False)


def test_check_hosts_resolves_names():
    with pytest.raises(ConfigError, match="does not exist"):
        check_hosts([Host("no-such-host.invalid", 1)], 1)
    check_hosts([Host("localhost", 2)], 2)


def test_launcher_options_and_fitting():
    hosts = [Host("a", 2), Host("b", 1)]
    assert launcher_host_args(hosts, "MPICH") == ["-hosts", "a:2,b:1"]
    assert launcher_host_args(hosts, "Open MPI") == ["--host", "a:2,b:1"]
    assert fit_ranks(hosts, 4) == 3 and fit_ranks(hosts, 2) == 2


def test_open_mpi_forwards_what_the_ranks_read_and_nothing_else():
    from parcomp.launch.run import forward_env_args

    env = {"PARCOMP_WATCHDOG_DIR": "/w", "NUMBA_NUM_THREADS": "1", "PYTHONPATH": "/p",
           "UCX_NET_DEVICES": "eth0", "SSH_AUTH_SOCK": "/s", "DISPLAY": ":0", "HOME": "/root"}  # fmt: skip
    args = forward_env_args(env)
    assert args[::2] == ["-x"] * 4
    assert sorted(args[1::2]) == ["NUMBA_NUM_THREADS", "PARCOMP_WATCHDOG_DIR", "PYTHONPATH",
                                  "UCX_NET_DEVICES"]  # fmt: skip
