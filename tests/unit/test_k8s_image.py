# SPDX-License-Identifier: Apache-2.0
"""The Dockerfile of the cluster image, checked without docker (which cannot run here): it parses, builds for
both architectures from one build stage, compiles the BPF objects for the target arch into the wheel, and its
apt packages are the ones scripts/setup.sh installs (or are installed here, on the same Debian release)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
GENERATOR_PACKAGES = {"iperf3", "sockperf", "wrk", "iputils-ping"}  # the tools, as Debian packages


def _parser() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def _stages() -> list[list[dict]]:
    stages: list[list[dict]] = []
    for ins in _parser().structure:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _apt_packages(stage: list[dict]) -> set[str]:
    pkgs: set[str] = set()
    for ins in stage:
        if ins["instruction"] != "RUN" or "apt-get install" not in ins["value"]:
            continue
        for cmd in re.split(r"&&|;", ins["value"]):
            words = shlex.split(cmd)
            if words[:2] == ["apt-get", "install"]:
                pkgs |= {w for w in words[2:] if not w.startswith("-")}
    return pkgs


def _setup_packages() -> set[str]:
    text = (ROOT / "scripts" / "setup.sh").read_text()
    match = re.search(r"^PACKAGES=\((.*?)\)", text, re.DOTALL | re.MULTILINE)
    assert match, "scripts/setup.sh has no PACKAGES=(...) list"
    return set(match[1].split())


def _copied(stage: list[dict]) -> set[str]:
    """The sources of the stage's COPY instructions (every word but the destination)."""
    return {w for i in stage if i["instruction"] == "COPY" for w in i["value"].split()[:-1]}


def test_one_build_stage_on_the_build_platform_compiles_for_both_machines() -> None:
    build, runtime = _stages()
    assert build[0]["value"].startswith("--platform=$BUILDPLATFORM ")
    # `pip wheel` of the tree with setup.py runs the wheel's build step, which compiles bpf/ for x86_64 and
    # aarch64 into the wheel (tests/root/test_wheel.py checks the wheel it builds)
    assert any("pip wheel" in i["value"] for i in build if i["instruction"] == "RUN")
    assert {"setup.py", "MANIFEST.in", "bpf"} <= _copied(build)
    assert "--platform" not in runtime[0]["value"]  # the runtime stage is the target's own


def test_apt_packages_are_setups_or_installed_here() -> None:
    build, runtime = _stages()
    setup = _setup_packages()
    assert _apt_packages(build) - {"python3-venv"} <= setup  # clang, llvm, libbpf-dev: as setup.sh
    assert GENERATOR_PACKAGES <= _apt_packages(runtime)
    assert GENERATOR_PACKAGES <= setup
    # every package name is real on this Debian release (the image's base): installed on this machine
    names = sorted(_apt_packages(build) | _apt_packages(runtime))
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\\n", *names], check=False,
                         capture_output=True, text=True)
    installed = {line.split()[0] for line in out.stdout.splitlines() if line.endswith("install ok installed")}
    assert installed == set(names), f"not installed here: {set(names) - installed}"


def test_base_image_is_the_debian_release_setup_supports() -> None:
    first = _parser().structure
    args = [i["value"] for i in first[: next(n for n, i in enumerate(first) if i["instruction"] == "FROM")]
            if i["instruction"] == "ARG"]
    assert args == ["DEBIAN=debian:bookworm-slim"]
    assert Path("/etc/debian_version").read_text().startswith("12")


def test_the_image_installs_this_package_and_runs_what_the_daemonset_runs() -> None:
    from cniprof.k8s import manifests

    runtime = _stages()[1]
    installs = " ".join(i["value"] for i in runtime if i["instruction"] == "RUN")
    assert "pip install --no-cache-dir /wheels/cniprof-" in installs and "/usr/local/bin/cniprof" in installs
    command = manifests.daemon_set("ns", "img").spec.template.spec.containers[0].command
    assert command[0] == "sleep"  # coreutils, in every Debian image


@pytest.mark.parametrize("path", ["bpf", "cniprof", "pyproject.toml", "setup.py", "MANIFEST.in"])
def test_build_context_copies_what_the_wheel_needs(path: str) -> None:
    assert path in _copied(_stages()[0])
    assert (ROOT / path).exists()
