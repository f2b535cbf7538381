"""Every module of the library imports (a moved name fails here, not in a user's job)."""

import importlib
import pkgutil

import parcomp
from tests.conftest import ROOT


def test_every_module_imports():
    failed = []
    for info in pkgutil.walk_packages(parcomp.__path__, "parcomp."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - collected and shown below
            failed.append(f"{info.name}: {exc!r}")
    assert failed == []


# ---------------------------------------------------------------- the architecture
#: The packages from the ground up: a package may import only those before it (and the
#: top-level helpers _renamed, _version).  The docstring of each says so too.
LAYERS = [
    "runtime",
    "grid",
    "io",
    "arrays",
    "stencils",
    "particles",
    "checkpoint",
    "mapreduce",
    "launch",
    "front",
]
LEAVES = {"parcomp._renamed", "parcomp._version"}


def _imports() -> dict[str, set[str]]:
    """module -> the parcomp modules it imports anywhere (module level, in functions,
    under TYPE_CHECKING), read from the source."""
    import ast

    root = ROOT / "parcomp"
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out: dict[str, set[str]] = {}
    for mod, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "parcomp":
                    names = [f"parcomp.{a.name}" for a in node.names]
                elif node.module.startswith("parcomp."):
                    names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("parcomp")]
            for name in names:
                target = resolve(name)
                if target and target != mod:
                    found.add(target)
        out[mod] = found
    return out


def test_no_import_circles():
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                circles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert circles == []


def _package(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_packages_import_only_downwards():
    wrong = []
    for mod, targets in _imports().items():
        src = _package(mod)
        if src is None:
            continue  # parcomp/__init__, testing, __main__: the faces, above everything
        for t in targets:
            dst = _package(t)
            if t in LEAVES or dst == src:
                continue
            if dst is None or LAYERS.index(dst) > LAYERS.index(src):
                wrong.append(f"{mod} -> {t}")
    assert wrong == []


def test_importing_parcomp_loads_no_mpi_numba_or_h5py():
    import subprocess
    import sys

    code = (
        "import sys, parcomp\n"
        "print(sorted(m for m in ('mpi4py.MPI', 'numba', 'h5py', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
