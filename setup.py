# SPDX-License-Identifier: Apache-2.0
"""Build step of the cniprof wheel: compile bpf/*.bpf.c for every machine into the wheel.

Everything else is declared in pyproject.toml. build_py also compiles the BPF objects with the same code that
scripts/setup.sh runs in a checkout (cniprof.bpf.build), into build/lib/cniprof/bpf/obj/<machine>/ for x86_64 and
aarch64, so one pure-Python wheel serves both machines and the loader picks the host's. An editable install
compiles nothing: a checkout compiles in place (python -m cniprof.bpf.build, run by scripts/setup.sh).
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import ExecError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the build module of this tree (imports only cniprof.errors)

from cniprof.bpf import build as bpf_build
from cniprof.errors import CniprofError

OBJ_PACKAGE_DIR = Path("cniprof", "bpf", "obj")


class BuildPyWithBpf(build_py):
    """build_py, then every bpf/*.bpf.c compiled for x86_64 and aarch64 into the build's package tree."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        try:
            bpf_build.build_all(HERE / "bpf", Path(self.build_lib) / OBJ_PACKAGE_DIR)
        except CniprofError as e:
            raise ExecError(f"cniprof: BPF objects not built: {e}") from None

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        if self.editable_mode:
            return super().get_outputs(include_bytecode)
        objects = [
            str(Path(self.build_lib) / OBJ_PACKAGE_DIR / machine / f"{source.name[: -len('.bpf.c')]}.bpf.o")
            for machine in bpf_build.MACHINES
            for source in bpf_build.sources(HERE / "bpf")
        ]
        return [*super().get_outputs(include_bytecode), *objects]


setup(cmdclass={"build_py": BuildPyWithBpf})
