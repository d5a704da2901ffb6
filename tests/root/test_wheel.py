# SPDX-License-Identifier: Apache-2.0
"""`pip install` of a built wheel gives a working cniprof, as a new user gets it.

From a clean copy of the tree (the files git tracks, in a temporary directory), `pip wheel` builds one pure-Python
wheel whose build step compiles every bpf/*.bpf.c for x86_64 and aarch64; the sdist of that copy carries the BPF
sources and rebuilds the same objects. The wheel is installed with its dependencies into a new virtualenv outside
the tree, and the installed `cniprof` (run from outside the tree, with no PYTHONPATH) calibrates the kernel with
`doctor --json` and traces 23 UDP datagrams through a flannel lab of its own (a lab id of this test's own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from cniprof.bpf import build
from cniprof.bpf.btf import EM_BPF, read_elf

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed (run scripts/setup.sh)"),
]

ROOT = Path(__file__).resolve().parents[2]
COUNT = 23
# The installed cniprof's labs: a lab id of this test's own, so that its lab is never the session's
LAB_ID = f"{os.environ.get('CNIPROF_LAB_ID', '')}whl"
PIP_TIMEOUT_S = 600


@dataclass
class Built:
    copy: Path      # the clean copy of the tree the wheel was built from
    wheel: Path
    sdist: Path
    venv: Path      # the new virtualenv the wheel is installed in
    seconds: dict[str, float]


def _run(argv: list[str], cwd: Path, timeout: float = PIP_TIMEOUT_S,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean_env() -> dict[str, str]:
    """The environment without anything pointing at this tree or its .venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not p.startswith(str(ROOT)))
    return env


def _copy_tracked_files(dest: Path) -> None:
    """The files git tracks, as they are in the work tree: what a fresh clone of this commit would hold."""
    listed = _run(["git", "ls-files", "-z"], cwd=ROOT, timeout=60).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # tracked but deleted in the work tree: not part of the copy
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT.resolve())
    copy, dist, venv = base / "src", base / "dist", base / "venv"
    _copy_tracked_files(copy)
    assert not (copy / "cniprof" / "bpf" / "obj").exists(), "compiled objects are tracked by git"
    env = _clean_env()
    seconds = {}

    t0 = time.monotonic()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(copy)], cwd=base,
         env=env)
    seconds["pip wheel"] = time.monotonic() - t0
    (wheel,) = dist.glob("cniprof-*.whl")

    t0 = time.monotonic()
    sdist_code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    name = _run([sys.executable, "-c", sdist_code], cwd=copy, env=env).stdout.split()[-1]
    seconds["sdist"] = time.monotonic() - t0

    t0 = time.monotonic()
    python3 = shutil.which("python3", path=env["PATH"])  # the system's, not this tree's .venv
    assert python3, "python3 not on PATH"
    _run([python3, "-m", "venv", str(venv)], cwd=base, env=env)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", str(wheel)],
         cwd=base, env=env)  # --no-compile: byte-compiling pandas, matplotlib, kubernetes... is half the time
    seconds["venv + pip install"] = time.monotonic() - t0
    yield Built(copy, wheel, dist / name, venv, seconds)
    print(f"\nwheel {wheel.name}: {wheel.stat().st_size} bytes; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    shutil.rmtree(base)  # the virtualenv alone is about 480 MB


def _installed(built: Built, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed cniprof, run from outside the tree (the test's temporary directory)."""
    env = {**_clean_env(), "CNIPROF_LAB_ID": LAB_ID, "COLUMNS": "200"}
    return subprocess.run([str(built.venv / "bin" / "cniprof"), *args], cwd=built.wheel.parent, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def test_wheel_is_pure_python_with_objects_for_both_machines(built: Built) -> None:
    assert built.wheel.name == "cniprof-0.1.0-py3-none-any.whl"
    names = [s.name[: -len(".bpf.c")] for s in build.sources(ROOT / "bpf")]
    assert {"hops", "cpu", "features", "nfhooks"} <= set(names)
    with zipfile.ZipFile(built.wheel) as whl:
        listed = set(whl.namelist())
        objects = {n for n in listed if n.startswith("cniprof/bpf/obj/")}
        assert objects == {f"cniprof/bpf/obj/{m}/{n}.bpf.o" for m in ("x86_64", "aarch64") for n in names}
        record = whl.read(next(n for n in listed if n.endswith(".dist-info/RECORD"))).decode()
        assert all(obj in record for obj in objects)
        extracted = built.wheel.parent / "unpacked"
        whl.extractall(extracted)
    for obj in objects:
        info = read_elf(extracted / obj)
        assert info.machine == EM_BPF and ".BTF" in info.sections and ".BTF.ext" in info.sections, obj


def test_nothing_in_the_wheel_refers_to_the_build_directory(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        for member in whl.namelist():
            data = whl.read(member)
            for place in (built.copy, built.copy.parent, ROOT):
                assert str(place).encode() not in data, f"{member} names {place}"


def test_sdist_carries_the_bpf_sources_and_rebuilds_the_same_objects(built: Built) -> None:
    with tarfile.open(built.sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
        unpacked = built.sdist.parent / "sdist"
        tar.extractall(unpacked, filter="data")
    sources = {f"bpf/{p.name}" for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    assert "bpf/vmlinux.h" in sources and any(s.endswith(".bpf.h") for s in sources)
    assert sources <= members, sources - members
    assert {"setup.py", "MANIFEST.in", "pyproject.toml"} <= members
    assert not [m for m in members if m.endswith(".o")], "compiled objects in the sdist"
    (root,) = unpacked.iterdir()
    rebuilt = built.sdist.parent / "rebuilt"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(rebuilt), str(root)],
         cwd=built.sdist.parent, env=_clean_env())
    (wheel,) = rebuilt.glob("cniprof-*.whl")
    with zipfile.ZipFile(built.wheel) as a, zipfile.ZipFile(wheel) as b:
        objects = [n for n in a.namelist() if n.endswith(".bpf.o")]
        assert objects and all(a.read(n) == b.read(n) for n in objects), "the sdist built other objects"


def test_installed_doctor_uses_the_installed_objects(built: Built) -> None:
    p = _installed(built, "doctor", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["per_hop_tracing"] is True
    objects = data["bpf_objects"]
    site = next((built.venv / "lib").glob("python3*/site-packages"))
    assert objects["machine"] == os.uname().machine
    assert objects["dir"] == str(site / "cniprof" / "bpf" / "obj" / os.uname().machine)
    assert set(objects["available"]) == {"x86_64", "aarch64"}
    assert objects["available"]["x86_64"] == objects["available"]["aarch64"] == objects["objects"]


def _lab_namespaces() -> list[str]:
    netns = Path("/run/netns")
    return sorted(n for n in os.listdir(netns) if n.startswith(f"cniprof_{LAB_ID}-")) if netns.is_dir() else []


def test_installed_trace_counts_every_packet(built: Built) -> None:
    assert not _lab_namespaces(), "a lab of this test's id is up before the test"
    out = built.wheel.parent / "run"
    try:
        p = _installed(built, "trace", "--cni", "flannel", "--traffic", "udp", "--count", str(COUNT), "--no-ui",
                       "--export", str(out), timeout=180)
    finally:
        left = _lab_namespaces()
        if left:
            _installed(built, "lab", "down")
    assert p.returncode == 0, p.stderr
    assert not left, f"the installed cniprof left its lab: {left}"
    hops = pd.read_csv(out / "hops.csv")
    fwd = hops[(hops["direction"] == "pod-a→pod-c") & hops["expected"] & hops["in_e2e"]]
    assert len(fwd) == 9 and (fwd["packets"] == COUNT).all(), fwd[["hop", "packets"]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["end_to_end"]["packets"] == COUNT
    # the export's report.html inlines the scripts the wheel carries as package data
    page = (out / "report" / "report.html").read_text()
    assert "d3-flame-graph 5.0.0" in page and "https://d3js.org v7.9.2" in page


def test_wheel_build_without_clang_stops_with_one_line(built: Built, tmp_path: Path) -> None:
    """No clang on PATH: the wheel build fails and its output ends with one line saying what to install."""
    no_tools = tmp_path / "empty-path"
    no_tools.mkdir()
    env = {**_clean_env(), "PATH": str(no_tools)}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"),
                           str(built.copy)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=PIP_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and not list((tmp_path / "dist").glob("*.whl"))
    output = proc.stdout + proc.stderr
    lines = [ln.strip() for ln in output.splitlines() if "clang not found" in ln]
    expected = ("error: cniprof: BPF objects not built: clang not found: install clang (Debian package clang) "
                "to compile bpf/*.bpf.c")
    assert lines == [expected], output[-3000:]
    assert "Traceback" not in output
