# SPDX-License-Identifier: Apache-2.0
"""Compile bpf/*.bpf.c into BPF ELF objects, one set per CPU architecture (cniprof/bpf/obj/<machine>/<name>.bpf.o).

Why a Python module and not a Makefile: the flags (target arch define, include paths that make libbpf-dev's
<bpf/bpf_helpers.h> and the checked-in vmlinux.h work without kernel headers) are needed by scripts/setup.sh
(objects compiled in place in a checkout), by the wheel build (setup.py compiles into the wheel) and by tests
that compile for both architectures; failures must become one-line EnvironmentProblem messages like every other
environment failure in cniprof.

The objects are CO-RE, but the __TARGET_ARCH_ define selects the register layout bpf_tracing.h uses, so each
architecture gets its own set: `<machine>` is the `uname -m` name (x86_64, aarch64), and `object_path()` picks the
running machine's.

Usage: python -m cniprof.bpf.build [--machine x86_64|aarch64] [--src DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.files import replacing

log = logging.getLogger(__name__)

# `uname -m` name -> __TARGET_ARCH_ suffix used by bpf_tracing.h; the machines are the obj/<machine>/ directories
MACHINES = {"x86_64": "x86", "aarch64": "arm64"}
ARCHES = tuple(MACHINES.values())
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}  # other spellings of platform.machine()
_MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}  # Debian multiarch triplets
PACKAGE_DIR = Path(__file__).resolve().parent
OBJ_DIR = PACKAGE_DIR / "obj"
# In a checkout the sources live at the repository root (bpf/), next to the checked-in vmlinux.h; an installed
# package has no sources, only the objects its wheel carried.
CHECKOUT_DIR = PACKAGE_DIR.parent.parent
SRC_DIR = CHECKOUT_DIR / "bpf"
COMPILE_TIMEOUT_S = 300


def host_machine() -> str:
    """This machine's `uname -m` name ('x86_64' or 'aarch64'); the only two the project supports."""
    machine = platform.machine().lower()
    machine = _MACHINE_ALIASES.get(machine, machine)
    if machine not in MACHINES:
        raise EnvironmentProblem(f"unsupported CPU architecture {machine!r}: cniprof supports x86_64 and aarch64")
    return machine


def host_arch() -> str:
    """The __TARGET_ARCH_ name of this machine ('x86' or 'arm64')."""
    return MACHINES[host_machine()]


def object_dir(machine: str | None = None) -> Path:
    """The directory holding the objects for machine (default: this machine's)."""
    return OBJ_DIR / (machine or host_machine())


def object_path(name: str) -> Path:
    """Path of this machine's compiled object for bpf/<name>.bpf.c; raises EnvironmentProblem when it is missing."""
    path = object_dir() / f"{name}.bpf.o"
    if not path.is_file():
        raise EnvironmentProblem(f"BPF object {path} is missing: {rebuild_hint()}")
    return path


def is_checkout() -> bool:
    """True when cniprof runs from a source checkout (bpf/ sources and scripts/setup.sh beside the package)."""
    return SRC_DIR.is_dir() and (CHECKOUT_DIR / "scripts" / "setup.sh").is_file()


def rebuild_hint() -> str:
    """What to do about missing or stale BPF objects, in words that fit how this cniprof was installed: an installed
    package has no scripts/ and no sources to compile."""
    if is_checkout():
        return "run scripts/setup.sh (it compiles bpf/*.bpf.c for x86_64 and aarch64)"
    return ("reinstall cniprof from its wheel (it carries BPF objects for x86_64 and aarch64 built from the "
            "same sources as its Python code)")


def installed_objects() -> dict:
    """Which objects the loader uses here (for `cniprof doctor`): machine, directory, object names per machine."""
    available = {
        machine: sorted(p.name[: -len(".bpf.o")] for p in object_dir(machine).glob("*.bpf.o"))
        for machine in MACHINES
    }
    machine = host_machine()
    return {"machine": machine, "arch": MACHINES[machine], "dir": str(object_dir(machine)),
            "objects": available[machine], "available": available}


def find_clang() -> str:
    """The clang binary: plain `clang` if present, else the newest versioned clang-NN on PATH."""
    found = shutil.which("clang")
    if found:
        return found
    versioned: list[tuple[int, str]] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        for candidate in glob.glob(os.path.join(directory, "clang-[0-9]*")):
            match = re.fullmatch(r"clang-(\d+)", os.path.basename(candidate))
            if match and os.access(candidate, os.X_OK):
                versioned.append((int(match.group(1)), candidate))
    if not versioned:
        raise EnvironmentProblem("clang not found: install clang (Debian package clang) to compile bpf/*.bpf.c")
    return max(versioned)[1]


def include_flags(src_dir: Path) -> list[str]:
    """-I flags: the source dir (vmlinux.h, shared headers) and the host's multiarch include dir.

    <bpf/bpf_helpers.h> comes from libbpf-dev in /usr/include, which clang searches by default. The multiarch
    dir supplies <asm/types.h> should a source include uapi headers; with vmlinux.h no kernel headers are needed.
    """
    flags = ["-I", str(src_dir)]
    machine = _MACHINE_ALIASES.get(platform.machine().lower(), platform.machine().lower())
    if machine in _MULTIARCH:
        multiarch = Path("/usr/include") / _MULTIARCH[machine]
        if multiarch.is_dir():
            flags += ["-I", str(multiarch)]
    return flags


def compile_command(clang: str, source: Path, output: Path, arch: str, src_dir: Path) -> list[str]:
    """The clang command line for one object.

    -g is what makes clang emit .BTF/.BTF.ext (needed for CO-RE and for tp_btf typed arguments).
    -mcpu=v3 (kernel >= 5.1; BTF-typed tracepoints need 5.5 anyway) allows 32-bit jumps and atomics.
    -ffile-prefix-map names src_dir `bpf` in the debug info and BTF line info (clang runs in src_dir, so the
    compilation directory is mapped too): an object says nothing about the directory it was built in.
    """
    flags = ["-O2", "-g", "-Wall", "-target", "bpf", "-mcpu=v3", f"-D__TARGET_ARCH_{arch}",
             f"-ffile-prefix-map={Path(src_dir).resolve()}=bpf"]
    return [clang, *flags, *include_flags(src_dir), "-c", str(source), "-o", str(output)]


def sources(src_dir: Path) -> list[Path]:
    """Every <name>.bpf.c in src_dir, sorted for a stable build order."""
    return sorted(Path(src_dir).glob("*.bpf.c"))


def build(src_dir: Path | str, out_dir: Path | str, arch: str) -> list[Path]:
    """Compile every src_dir/*.bpf.c for arch into out_dir/<name>.bpf.o; returns the object paths.

    Objects are written to a temporary name and renamed, so a loader never sees a half-written file.
    """
    if arch not in ARCHES:
        raise EnvironmentProblem(f"unknown BPF target arch {arch!r}: use one of {', '.join(ARCHES)}")
    src_dir, out_dir = Path(src_dir).resolve(), Path(out_dir)
    if not src_dir.is_dir():
        raise EnvironmentProblem(f"BPF source directory {src_dir} does not exist")
    clang = find_clang()
    out_dir.mkdir(parents=True, exist_ok=True)
    built: list[Path] = []
    for source in sources(src_dir):
        name = source.name[: -len(".bpf.c")]
        target = out_dir / f"{name}.bpf.o"
        with replacing(target) as tmp:
            _compile(compile_command(clang, source, tmp.resolve(), arch, src_dir), source, cwd=src_dir)
        built.append(target)
    return built


def build_all(src_dir: Path | str, obj_root: Path | str, machines: Iterable[str] = tuple(MACHINES)) -> list[Path]:
    """Compile every src_dir/*.bpf.c for each machine into obj_root/<machine>/ (the layout object_path reads).

    Objects directly in obj_root are the layout before per-machine directories; they are removed so nothing
    loads them by mistake.
    """
    obj_root = Path(obj_root)
    built: list[Path] = []
    for machine in machines:
        if machine not in MACHINES:
            raise EnvironmentProblem(f"unknown machine {machine!r}: use one of {', '.join(MACHINES)}")
        built += build(src_dir, obj_root / machine, MACHINES[machine])
    for stale in obj_root.glob("*.bpf.o"):
        stale.unlink()
    return built


def _compile(cmd: list[str], source: Path, cwd: Path) -> None:
    """Run clang; on failure put its output on stderr and raise a one-line EnvironmentProblem."""
    log.info("compiling %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as e:
        raise EnvironmentProblem(f"clang did not finish compiling {source} within {COMPILE_TIMEOUT_S} s") from e
    except OSError as e:
        raise EnvironmentProblem(f"cannot run {cmd[0]}: {e.strerror}; install clang (Debian package clang)") from e
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        if output:
            print(output, file=sys.stderr)
        first_error = next((line for line in output.splitlines() if "error:" in line), "see compiler output above")
        raise EnvironmentProblem(f"compiling {source.name} failed: {first_error.strip()}")
    if output:
        log.warning("clang warnings for %s:\n%s", source.name, output)


def main(argv: list[str] | None = None) -> int:
    """CLI used by scripts/setup.sh; prints the objects built, errors as one line (exit code 3)."""
    parser = argparse.ArgumentParser(prog="python -m cniprof.bpf.build", description=__doc__.splitlines()[0])
    parser.add_argument("--machine", choices=sorted(MACHINES), action="append",
                        help="build only for this machine (repeatable; default: x86_64 and aarch64)")
    parser.add_argument("--src", type=Path, default=SRC_DIR, help=f"source dir (default: {SRC_DIR})")
    parser.add_argument("--out", type=Path, default=OBJ_DIR,
                        help=f"output root, objects go to OUT/<machine>/ (default: {OBJ_DIR})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        built = build_all(args.src, args.out, args.machine or tuple(MACHINES))
    except CniprofError as e:
        print(f"cniprof: {e}", file=sys.stderr)
        return e.exit_code
    for path in built:
        print(path)
    if not built:
        print(f"no *.bpf.c sources in {args.src}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
