"""Host lists of multi-node jobs: parsed, checked before anything runs, and passed on.

PURE apart from name resolution and the probes of :func:`probe_hosts` (which start the
launcher); no MPI communication.

``parcomp run --hosts node0:2,node1:2`` or ``--hostfile FILE`` (lines ``name[:slots]`` or
``name slots=N``, ``#`` comments; Hydra's and Open MPI's forms) names the machines of a
job and how many ranks each takes.  Before launching, :func:`check_hosts` refuses a host
list with a duplicate name, fewer slots than ranks, a name that does not resolve, or two
names for one address (MPICH would take them for one node and its shared memory).  The
launcher options come from :func:`launcher_host_args`; :func:`network_settings` keeps
the MPI's transports and the launcher on the interface that reaches the job's hosts.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from parcomp.runtime.errors import ConfigError

__all__ = [
    "Host",
    "parse_hosts",
    "read_hostfile",
    "check_hosts",
    "launcher_host_args",
    "interface_towards",
    "network_settings",
    "probe_hosts",
    "reachable",
    "fit_ranks",
]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Host:
    """One machine of a job and the ranks it takes."""

    name: str
    slots: int

    def spec(self) -> str:
        """``name:slots``, as Hydra and Open MPI read it."""
        return f"{self.name}:{self.slots}"


def _entry(text: str, where: str) -> Host:
    text = text.strip()
    name, slots = text, "1"
    match = re.match(r"^(\S+)\s+(?:slots|max_slots|max-slots)\s*=\s*(\S+)$", text)
    if match:
        name, slots = match.group(1), match.group(2)
    elif ":" in text:
        name, slots = text.rsplit(":", 1)
    name = name.strip()
    if not name or not _NAME.match(name):
        raise ConfigError(f"{where}: {text!r} is not a host name (letters, digits, '.', '-')")
    if not slots.strip().isdigit() or int(slots) < 1:
        raise ConfigError(f"{where}: host {name!r} has slots {slots!r}; give a positive number")
    return Host(name, int(slots))


def parse_hosts(text: str) -> list[Host]:
    """``"a:2,b:2,c"`` -> hosts (a host without ``:N`` takes one rank)."""
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError("--hosts: the host list is empty")
    return [_entry(t, "--hosts") for t in items]


def read_hostfile(path: str | Path) -> list[Host]:
    """Hosts of a host file: one ``name[:slots]`` or ``name slots=N`` per line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--hostfile {path}: cannot read it: {exc.strerror}") from None
    hosts = []
    for k, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(_entry(line, f"--hostfile {path}, line {k}"))
    if not hosts:
        raise ConfigError(f"--hostfile {path}: names no host")
    return hosts


def check_hosts(hosts: Sequence[Host], nprocs: int, resolve: bool = True) -> None:
    """Refuse a host list that cannot run ``nprocs`` ranks (ConfigError, before launch)."""
    seen: dict[str, int] = {}
    for h in hosts:
        if h.name in seen:
            raise ConfigError(
                f"host list: {h.name!r} is listed twice; list each host once with its slots "
                f"({h.name}:{seen[h.name] + h.slots})"
            )
        seen[h.name] = h.slots
    total = sum(h.slots for h in hosts)
    if total < nprocs:
        raise ConfigError(
            f"host list: {total} slot(s) on {len(hosts)} host(s) for -n {nprocs} ranks; give "
            "more slots (name:N) or fewer ranks"
        )
    if not resolve:
        return
    owner: dict[str, str] = {}
    for h in hosts:
        try:
            infos = socket.getaddrinfo(h.name, None, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror:
            raise ConfigError(
                f"host list: host {h.name!r} does not exist (its name does not resolve)"
            ) from None
        for info in infos:
            addr = str(info[4][0])
            if addr in owner and owner[addr] != h.name and not addr.startswith("127."):
                raise ConfigError(
                    f"host list: {owner[addr]!r} and {h.name!r} are the same machine ({addr}); "
                    "list it once"
                )
            owner[addr] = h.name


def launcher_host_args(hosts: Sequence[Host], vendor: str | None) -> list[str]:
    """The launcher's options for the host list (Hydra's ``-hosts``, Open MPI's ``--host``)."""
    spec = ",".join(h.spec() for h in hosts)
    if vendor == "Open MPI":
        return ["--host", spec]
    return ["-hosts", spec]


def interface_towards(host: str) -> str | None:
    """The name of this machine's network interface that reaches ``host`` (None when
    unknown: no route, or the host is this machine)."""
    try:
        addr = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        proc = subprocess.run(
            ["ip", "-o", "route", "get", str(addr)], capture_output=True, text=True, timeout=5
        )
    except (OSError, socket.gaierror, subprocess.SubprocessError):
        return None
    match = re.search(r"\bdev\s+(\S+)", proc.stdout)
    if match is None or match.group(1) == "lo":
        return None
    return match.group(1)


def network_settings(
    env: MutableMapping[str, str], hosts: Sequence[Host], vendor: str | None
) -> list[str]:
    """Keep a multi-node job's MPI on the interface that reaches its hosts (in place);
    return the launcher options for it.  Variables the user set are left alone.

    MPICH's UCX opens its TCP listeners on ``UCX_NET_DEVICES`` (and the loopback is not
    needed: ranks on one node use shared memory); Hydra's proxies connect back over
    ``-iface``; Open MPI's ``btl_tcp_if_include`` and ``oob_tcp_if_include`` do both.
    """
    me = socket.gethostname()
    ifaces = {i for h in hosts if h.name != me and (i := interface_towards(h.name))}
    if len(ifaces) != 1:
        return []  # all hosts here, or several interfaces: the site's settings decide
    iface = ifaces.pop()
    if vendor == "Open MPI":
        env.setdefault("OMPI_MCA_btl_tcp_if_include", iface)
        env.setdefault("OMPI_MCA_oob_tcp_if_include", iface)
        env.setdefault("PRTE_MCA_oob_tcp_if_include", iface)
        return []
    env.setdefault("UCX_NET_DEVICES", iface)
    return ["-iface", iface]


def probe_hosts(
    hosts: Sequence[Host],
    launcher: Path,
    vendor: str | None,
    timeout: float = 15.0,
    why: dict[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Host]:
    """The hosts the launcher can still start a process on (a lost node is left out).

    Runs ``mpiexec -n 1 -hosts H hostname`` for every host at once; a host whose probe
    fails or takes longer than ``timeout`` seconds is unreachable (its launcher's last
    words go into ``why[name]``).
    """
    procs = []
    for h in hosts:
        argv = [str(launcher), "-n", "1", *launcher_host_args([Host(h.name, 1)], vendor)]
        argv += ["hostname"]
        procs.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                env=None if env is None else dict(env),
            )
        )
    alive = []
    deadline = time.monotonic() + timeout
    for h, proc in zip(hosts, procs, strict=True):
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            ok = proc.returncode == 0
            reason = _last_words(err)
        except subprocess.TimeoutExpired:
            ok = False
            reason = f"no answer within {timeout:g} s"
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
        if ok:
            alive.append(h)
        elif why is not None:
            why[h.name] = reason
    return alive


def _last_words(err: str) -> str:
    """The launcher's most telling error line (Hydra: the one naming the host)."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    for line in lines:
        if "unable to connect" in line or "No route" in line or "not reachable" in line:
            return re.sub(r"^\[[^\]]*\]\s*(\S+ \(\S+\): )?", "", line)
    plain = [
        line
        for line in lines
        if not re.search(r"\(\S+\.c:\d+\)|Warning|^-+$", line)  # Hydra's traces, PRRTE's noise
    ]
    return (plain or lines or ["the launcher failed"])[0]


def reachable(
    hosts: Sequence[Host], launcher: Path, vendor: str | None, env: Mapping[str, str] | None = None
) -> None:
    """Refuse a host list with hosts the launcher cannot reach (ConfigError, before the job)."""
    why: dict[str, str] = {}
    probe_hosts(hosts, launcher, vendor, why=why, env=env)
    if why:
        raise ConfigError(
            "host list: cannot reach "
            + "; ".join(f"{name} ({reason})" for name, reason in why.items())
            + ": nothing was started"
        )


def fit_ranks(hosts: Sequence[Host], nprocs: int) -> int:
    """How many of ``nprocs`` ranks the hosts' slots hold."""
    return min(nprocs, sum(h.slots for h in hosts))
