# SPDX-License-Identifier: Apache-2.0
"""The loader picks the running machine's objects (cniprof/bpf/obj/<machine>/) and says what to do when absent."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cniprof.bpf import build
from cniprof.errors import EnvironmentProblem


@pytest.fixture
def obj_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An object tree with hops for both machines and features for x86_64 only."""
    root = tmp_path / "obj"
    for machine in build.MACHINES:
        (root / machine).mkdir(parents=True)
        (root / machine / "hops.bpf.o").write_bytes(machine.encode())
    (root / "x86_64" / "features.bpf.o").write_bytes(b"x")
    monkeypatch.setattr(build, "OBJ_DIR", root)
    return root


@pytest.mark.parametrize(("uname", "machine"), [("x86_64", "x86_64"), ("amd64", "x86_64"),
                                                ("aarch64", "aarch64"), ("arm64", "aarch64")])
def test_object_path_is_the_host_machines(obj_root: Path, monkeypatch: pytest.MonkeyPatch,
                                          uname: str, machine: str) -> None:
    monkeypatch.setattr(build.platform, "machine", lambda: uname)
    assert build.host_machine() == machine
    assert build.object_path("hops") == obj_root / machine / "hops.bpf.o"
    assert build.object_path("hops").read_bytes() == machine.encode()


def test_unsupported_machine_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.platform, "machine", lambda: "riscv64")
    with pytest.raises(EnvironmentProblem, match="unsupported CPU architecture 'riscv64'"):
        build.object_path("hops")


def test_installed_objects_says_which(obj_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.platform, "machine", lambda: "aarch64")
    info = build.installed_objects()
    assert info == {"machine": "aarch64", "arch": "arm64", "dir": str(obj_root / "aarch64"), "objects": ["hops"],
                    "available": {"x86_64": ["features", "hops"], "aarch64": ["hops"]}}


def test_missing_object_hint_fits_the_installation(obj_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.platform, "machine", lambda: "aarch64")
    with pytest.raises(EnvironmentProblem, match="features.bpf.o is missing: run scripts/setup.sh"):
        build.object_path("features")
    # an installed package: no bpf/ sources and no scripts/ beside it
    monkeypatch.setattr(build, "CHECKOUT_DIR", tmp_path / "site-packages")
    monkeypatch.setattr(build, "SRC_DIR", tmp_path / "site-packages" / "bpf")
    with pytest.raises(EnvironmentProblem) as e:
        build.object_path("features")
    assert "scripts/" not in str(e.value) and "reinstall cniprof from its wheel" in str(e.value)


PACKAGE = Path(build.__file__).resolve().parents[1]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


CHECKOUT_ONLY = re.compile(r"scripts/|benchmarks/|(README|ARCHITECTURE|KNOWN_ISSUES)\.md")


def test_no_message_names_a_checkout_only_file() -> None:
    """An installed package has no scripts/, benchmarks/ or project documents: only build.rebuild_hint() names
    scripts/setup.sh, and only in a checkout (test_missing_object_hint_fits_the_installation)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        allowed: set[int] = set()
        if path == Path(build.__file__).resolve():
            hint = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "rebuild_hint")
            allowed = {id(n) for n in ast.walk(hint)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and CHECKOUT_ONLY.search(node.value)
                    and id(node) not in docs and id(node) not in allowed):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, found
