#!/usr/bin/env python3
"""A real multi-node cluster on one machine, for parcomp's cluster tests.

Run:  python tests/cluster/cluster.py up [--nodes 4] [--rate 2gbit] [--name pc]
      python tests/cluster/cluster.py exec NODE CMD...   (NODE: node0, node1, ...)
      python tests/cluster/cluster.py status | down | kill NODE | link NODE up|down

Each node is separate in everything a cluster node owns:

* **network**: its own network namespace, one veth (``eth0``) on a bridge, its own
  address in 198.18.<k>.0/24 (the benchmarking range: nothing outside the rig is ever
  addressed) and its own hostname (UTS namespace); the bridge has no address, so the host
  is not on the rig's network.  Every veth end is rate-limited by a ``tbf`` qdisc
  (``--rate``, default 2 Gbit/s each way), so bytes between nodes cost what a network costs;
  bytes within a node go through its shared memory as on a real node;
* **storage**: its own mount namespace with a private tmpfs on ``/tmp`` and on
  ``/dev/shm`` (node-local storage that dies with the node), ``/etc/hosts`` naming every
  node; one shared folder (:func:`shared_dir`, on the host's disk) at the same path on every
  node is the cluster's parallel file system;
* **processes**: its own PID and IPC namespaces (SysV shared memory too): no node can see
  or signal another node's processes.  The node's first process (PID 1 there) reaps
  orphans; killing it ends every process of the node and frees its tmpfs.

Starting commands on a node: from the host, ``exec`` enters the node's namespaces
(``nsenter``).  A process inside one node cannot enter another node's PID namespace (the
kernel allows entering only descendants), so the launchers inside the cluster (Hydra's
``-launcher-exec``, the ``launch`` command below) ask the rig's agent, a small daemon in
the host's PID namespace listening on a Unix socket, to start the command on the node:
it passes its stdin/stdout/stderr along (``SCM_RIGHTS``), and the agent reports the exit
status back; when the caller goes away (killed, its connection closed) the agent hangs up
the remote command (``SIGHUP``, then ``SIGKILL`` after a grace period), as an ssh
session's end does.  The agent is the rig's stand-in for ``sshd``; MPI's own traffic goes
over TCP across the bridge.

``up`` and ``down`` are idempotent; ``down`` leaves nothing behind (namespaces, links,
mounts, processes, the state folder); ``tests/cluster/test_rig.py`` checks both.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STATE_ROOT = Path(os.environ.get("PARCOMP_CLUSTER_STATE", "/run/parcomp-cluster"))
SHARED_ROOT = Path(os.environ.get("PARCOMP_CLUSTER_SHARED", "/var/tmp/parcomp-cluster"))
DEFAULT_NAME = "pc"
DEFAULT_RATE = "2gbit"
NODE_ENV = "PARCOMP_CLUSTER_NODE"  # set in every process started on a node
HANGUP_GRACE = 3.0


class RigError(RuntimeError):
    """The rig cannot do what was asked (not root, missing tool, unknown node)."""


# ----------------------------------------------------------------------------- naming


def state_dir(name: str = DEFAULT_NAME) -> Path:
    return STATE_ROOT / name


def shared_dir(name: str = DEFAULT_NAME) -> Path:
    """The cluster's shared folder (the same path on the host and on every node)."""
    return SHARED_ROOT / name / "shared"


def node_name(i: int) -> str:
    return f"node{i}"


def _index(name: str) -> int:
    """The rig's subnet index of a cluster name (198.18.<index>.0/24)."""
    return 1 + sum(ord(c) * 31**k for k, c in enumerate(name)) % 250


def address(name: str, i: int) -> str:
    return f"198.18.{_index(name)}.{10 + i}"


def _bridge(name: str) -> str:
    return f"pcbr-{name}"[:15]


def _veth(name: str, i: int) -> str:
    return f"pcv{i}-{name}"[:15]


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def can_run() -> str | None:
    """None when the rig can be built here, else the reason why not."""
    if os.geteuid() != 0:
        return "the cluster rig needs root (network, mount and PID namespaces)"
    for tool in ("ip", "tc", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"the cluster rig needs {tool!r}, which is not installed"
    return None


# ----------------------------------------------------------------------------- state


def read_state(name: str = DEFAULT_NAME) -> dict | None:
    try:
        return json.loads((state_dir(name) / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_pid(node: str, name: str = DEFAULT_NAME) -> int:
    """The host PID of a node's first process (its PID 1)."""
    state = read_state(name)
    if state is None:
        raise RigError(f"cluster {name!r} is not up (run `cluster.py up`)")
    nodes = state["nodes"]
    node = next((n for n, v in nodes.items() if v["addr"] == node), node)  # by address too
    if node not in nodes:
        raise RigError(f"cluster {name!r} has no node {node!r} (nodes: {', '.join(nodes)})")
    pid = nodes[node]["pid"]
    if pid is None or not _alive(pid):
        raise RigError(f"node {node} of cluster {name!r} is down")
    return pid


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(p) for p in fh.read().split())
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (host PIDs), deepest last."""
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


# ----------------------------------------------------------------------------- node init


def _node_init(name: str, node: str, keep: list[str]) -> None:
    """PID 1 of a node: private /tmp and /dev/shm, the rig's /etc/hosts, then reap."""
    state = state_dir(name)
    # Paths under /tmp the node must still see (a checkout there): moved aside first.
    held = []
    for k, path in enumerate(keep):
        spot = state / f"keep-{node}-{k}"
        spot.mkdir(exist_ok=True)
        subprocess.run(["mount", "--rbind", path, str(spot)], check=True)
        held.append((spot, path))
    for where in ("/tmp", "/dev/shm"):
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=1777,size=4g", f"{node}-{where[1:].replace('/', '-')}",
             where],
            check=True,
        )  # fmt: skip
    for spot, path in held:
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "--move", str(spot), path], check=True)
        spot.rmdir()
    subprocess.run(["mount", "--bind", str(state / "hosts"), "/etc/hosts"], check=True)
    socket.sethostname(node)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    (state / f"{node}.ready").write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:  # reap orphans until killed
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)


# ----------------------------------------------------------------------------- up / down


def up(nodes: int = 4, rate: str = DEFAULT_RATE, name: str = DEFAULT_NAME) -> dict:
    """Build the cluster (idempotent: a cluster that is up as asked is kept)."""
    why = can_run()
    if why:
        raise RigError(why)
    state = read_state(name)
    if state is not None:
        if (
            state["size"] == nodes
            and state["rate"] == rate
            and all(v["pid"] and _alive(v["pid"]) for v in state["nodes"].values())
            and _alive(state["agent"])
        ):
            return state
        down(name)
    sdir = state_dir(name)
    sdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(sdir, 0o700)
    shared = shared_dir(name)
    shared.mkdir(parents=True, exist_ok=True)
    os.chmod(shared, 0o755)
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost"]
    hosts += [f"{address(name, i)}\t{node_name(i)}" for i in range(nodes)]
    (sdir / "hosts").write_text("\n".join(hosts) + "\n")
    keep = [str(p) for p in {ROOT, Path(sys.executable).resolve().parents[1]}
            if str(p).startswith(("/tmp/", "/dev/shm/"))]  # fmt: skip
    bridge = _bridge(name)
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "link", "set", bridge, "up")
    state = {"name": name, "size": nodes, "rate": rate, "bridge": bridge, "nodes": {},
             "shared": str(shared), "agent": None, "keep": keep}  # fmt: skip
    for i in range(nodes):
        _start_node(name, i, state, keep)
    state["agent"] = _start_agent(name)
    _write_state(name, state)
    return state


def _start_node(name: str, i: int, state: dict, keep: list[str]) -> None:
    """Start node ``i`` (its namespaces, its first process, its link) and record it."""
    sdir = state_dir(name)
    node = node_name(i)
    (sdir / f"{node}.ready").unlink(missing_ok=True)
    log = open(sdir / f"{node}.log", "w")
    proc = subprocess.Popen(
        ["unshare", "--net", "--uts", "--ipc", "--pid", "--mount", "--fork",
         "--mount-proc", "--kill-child", "--propagation", "private",
         sys.executable, str(Path(__file__).resolve()), "_init", name, node, *keep],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not (sdir / f"{node}.ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RigError(f"{node} did not start: {(sdir / f'{node}.log').read_text()}")
        time.sleep(0.02)
    kids = _children(proc.pid)
    if len(kids) != 1:
        raise RigError(f"{node}: cannot find its first process")
    state["nodes"][node] = {"pid": kids[0], "unshare": proc.pid, "addr": address(name, i),
                            "veth": _veth(name, i)}  # fmt: skip
    state.setdefault("keep", keep)
    _write_state(name, state)
    _wire(name, i, kids[0], state["rate"])


def revive(node: str, name: str = DEFAULT_NAME) -> None:
    """Bring a lost node back (a replacement machine: empty /tmp and /dev/shm)."""
    state = read_state(name)
    if state is None or node not in state["nodes"]:
        raise RigError(f"no node {node!r} in cluster {name!r}")
    info = state["nodes"][node]
    if info["pid"] and _alive(info["pid"]) and not _zombie(info["pid"]):
        return
    for pid in (info.get("unshare"),):
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _run("ip", "link", "del", info["veth"], check=False)
    _start_node(name, int(node.removeprefix("node")), state, state.get("keep", []))


def _wire(name: str, i: int, pid: int, rate: str) -> None:
    host_end, peer = _veth(name, i), f"pcn{i}-{name}"[:15]
    _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", str(pid))
    _run("ip", "link", "set", host_end, "master", _bridge(name))
    _run("ip", "link", "set", host_end, "up")
    inside = ("nsenter", "-t", str(pid), "-n")
    _run(*inside, "ip", "link", "set", peer, "name", "eth0")
    _run(*inside, "ip", "addr", "add", f"{address(name, i)}/24", "dev", "eth0")
    _run(*inside, "ip", "link", "set", "eth0", "up")
    if rate not in ("", "0", "none"):
        for cmd in (("tc",), (*inside, "tc")):
            dev = host_end if len(cmd) == 1 else "eth0"
            _run(*cmd, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                 "burst", "1mbit", "latency", "50ms")  # fmt: skip


def _write_state(name: str, state: dict) -> None:
    path = state_dir(name) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def down(name: str = DEFAULT_NAME) -> None:
    """Remove every trace of the cluster (idempotent)."""
    state = read_state(name) or {}
    pids = [state.get("agent")]
    for info in state.get("nodes", {}).values():
        pids += [info.get("pid"), info.get("unshare")]
    for pid in pids:
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(p and _alive(p) and not _zombie(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(state.get("size", 0)):
        _run("ip", "link", "del", _veth(name, i), check=False)
    _run("ip", "link", "del", _bridge(name), check=False)
    shutil.rmtree(state_dir(name), ignore_errors=True)
    shutil.rmtree(SHARED_ROOT / name, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_node(node: str, name: str = DEFAULT_NAME) -> None:
    """Lose a node: every process of it killed at once, its /tmp and /dev/shm gone."""
    state = read_state(name)
    pid = node_pid(node, name)
    os.kill(pid, signal.SIGKILL)  # PID 1 of the namespace: the kernel kills the rest
    deadline = time.monotonic() + 10
    while _alive(pid) and not _zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    state["nodes"][node]["pid"] = None
    _write_state(name, state)


def set_link(node: str, updown: str, name: str = DEFAULT_NAME) -> None:
    """Cut (``down``) or restore (``up``) a node's link to the bridge."""
    state = read_state(name)
    if state is None or node not in state["nodes"]:
        raise RigError(f"no node {node!r} in cluster {name!r}")
    _run("ip", "link", "set", state["nodes"][node]["veth"], updown)


# ----------------------------------------------------------------------------- exec


def enter_argv(node: str, argv: list[str], cwd: str, name: str = DEFAULT_NAME) -> list[str]:
    pid = node_pid(node, name)
    return ["nsenter", "-t", str(pid), "-n", "-u", "-i", "-p", "-m", f"--wd={cwd}", "--", *argv]


def node_env(node: str, env: dict | None = None, name: str = DEFAULT_NAME) -> dict:
    """The environment of a command on a node: the caller's, the node named, Hydra told to
    start remote proxies through the rig's launcher (as a site's config would)."""
    out = dict(os.environ if env is None else env)
    out[NODE_ENV] = node
    out["PARCOMP_CLUSTER_NAME"] = name
    out["HYDRA_LAUNCHER"] = "ssh"
    out["HYDRA_LAUNCHER_EXEC"] = str(HERE / "launch")
    out["PRTE_MCA_plm_ssh_agent"] = str(HERE / "launch")  # Open MPI 5's PRRTE
    out["OMPI_MCA_plm_rsh_agent"] = str(HERE / "launch")
    # the nodes share this machine's cores: Open MPI's waiting ranks must yield them (it
    # spins otherwise, believing each node's one slot is a core of its own: 16 ms barriers)
    out.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    return out


def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _recv_fds(sock: socket.socket, size: int, maxfds: int) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, anc, _flags, _addr = sock.recvmsg(size, socket.CMSG_LEN(maxfds * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


LOGIN_VARS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "SHELL")


def launch(node: str, argv: list[str], name: str | None = None, ssh: bool = False) -> int:
    """Run ``argv`` on ``node`` through the agent, with this process's stdio; return its
    exit status (usable from inside any node).  ``ssh``: as an ssh session would, with a
    login environment only (none of the caller's other variables: what a launcher does
    not forward explicitly does not arrive) in the home folder."""
    name = name or os.environ.get("PARCOMP_CLUSTER_NAME", DEFAULT_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(state_dir(name) / "agent.sock"))
    except OSError as exc:
        print(f"cluster launch: the rig's agent is not reachable: {exc}", file=sys.stderr)
        return 255
    env = dict(os.environ)
    cwd = os.getcwd()
    if ssh:
        env = {k: v for k, v in env.items() if k in LOGIN_VARS}
        cwd = env.get("HOME", "/")
    request = json.dumps({"node": node, "argv": argv, "cwd": cwd, "env": env}).encode()
    sock.sendall(struct.pack("!I", len(request)))
    _send_fds(sock, request, [0, 1, 2])
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(129))  # the socket closes: the agent hangs up
    reply = b""
    while len(reply) < 4:
        chunk = sock.recv(4 - len(reply))
        if not chunk:
            return 255
        reply += chunk
    return struct.unpack("!i", reply)[0]


def _start_agent(name: str) -> int:
    sdir = state_dir(name)
    path = sdir / "agent.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    log = open(sdir / "agent.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "_agent", name],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RigError(f"the rig's agent did not start: {(sdir / 'agent.log').read_text()}")
        time.sleep(0.02)
    return proc.pid


def _agent(name: str) -> None:
    path = state_dir(name) / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path) + ".new")
    os.chmod(str(path) + ".new", 0o600)
    server.listen(64)
    os.replace(str(path) + ".new", path)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(name, conn), daemon=True).start()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve(name: str, conn: socket.socket) -> None:
    fds: list[int] = []
    try:
        size = struct.unpack("!I", _recv_exact(conn, 4))[0]
        data, fds = _recv_fds(conn, size, 3)
        while len(data) < size:
            data += _recv_exact(conn, size - len(data))
        req = json.loads(data)
        try:
            argv = enter_argv(req["node"], req["argv"], req["cwd"], name)
        except RigError as exc:
            os.write(fds[2], f"cluster launch: {exc}\n".encode())
            conn.sendall(struct.pack("!i", 255))
            return
        env = node_env(req["node"], req["env"], name)
        proc = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], env=env,
                                start_new_session=True)  # fmt: skip
        for fd in fds:
            os.close(fd)
        fds = []
        gone = threading.Event()

        def watch() -> None:  # the caller hung up: end the remote command
            with contextlib.suppress(OSError):
                conn.recv(1)
            if proc.poll() is None:
                gone.set()
                _hangup(proc)

        threading.Thread(target=watch, daemon=True).start()
        code = proc.wait()
        with contextlib.suppress(OSError):
            conn.sendall(struct.pack("!i", code if code >= 0 else 128 - code))
    except (EOFError, OSError, ValueError, KeyError):
        pass
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def _hangup(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + HANGUP_GRACE
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_init":
        _node_init(argv[1], argv[2], argv[3:])
        return 0
    if argv and argv[0] == "_agent":
        _agent(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=os.environ.get("PARCOMP_CLUSTER_NAME", DEFAULT_NAME))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build the cluster (idempotent)")
    p_up.add_argument("--nodes", type=int, default=4)
    p_up.add_argument("--rate", default=DEFAULT_RATE, help="tbf rate per link ('none': no limit)")
    sub.add_parser("down", help="remove the cluster and everything it made (idempotent)")
    sub.add_parser("status", help="print the cluster's state as JSON")
    p_exec = sub.add_parser("exec", help="run a command on a node")
    p_exec.add_argument("node")
    p_exec.add_argument("command", nargs=argparse.REMAINDER)
    p_kill = sub.add_parser("kill", help="lose a node (every process killed, tmpfs gone)")
    p_kill.add_argument("node")
    p_revive = sub.add_parser("revive", help="bring a lost node back, its storage empty")
    p_revive.add_argument("node")
    p_link = sub.add_parser("link", help="cut or restore a node's link")
    p_link.add_argument("node")
    p_link.add_argument("state", choices=("up", "down"))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            state = up(args.nodes, args.rate, args.name)
            print(" ".join(f"{n}={v['addr']}" for n, v in state["nodes"].items()))
        elif args.cmd == "down":
            down(args.name)
        elif args.cmd == "status":
            print(json.dumps(read_state(args.name), indent=1))
        elif args.cmd == "exec":
            if not args.command:
                parser.error("exec: give a command")
            if os.environ.get(NODE_ENV):  # inside a node: through the agent
                return launch(args.node, args.command, args.name)
            cmd = enter_argv(args.node, args.command, os.getcwd(), args.name)
            os.execvpe(cmd[0], cmd, node_env(args.node, None, args.name))
        elif args.cmd == "kill":
            kill_node(args.node, args.name)
        elif args.cmd == "revive":
            revive(args.node, args.name)
        elif args.cmd == "link":
            set_link(args.node, args.state, args.name)
    except RigError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
