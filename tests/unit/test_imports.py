"""Every module of the library imports (a moved name fails here, not in a user's job)."""

import importlib
import pkgutil

import parcomp


def test_every_module_imports():
    failed = []
    for info in pkgutil.walk_packages(parcomp.__path__, "parcomp."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - collected and shown below
            failed.append(f"{info.name}: {exc!r}")
    assert failed == []
