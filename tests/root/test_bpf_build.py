# SPDX-License-Identifier: Apache-2.0
"""Every bpf/*.bpf.c compiles for both target architectures into a BPF ELF object that carries BTF."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cniprof.bpf import build
from cniprof.bpf.btf import EM_BPF, Btf, read_elf
from cniprof.errors import CniprofError, EnvironmentProblem

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("clang") is None, reason="clang not installed (run scripts/setup.sh)"
)

TINY = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

__u64 seen;

SEC("tp_btf/net_dev_queue")
int BPF_PROG(tiny, struct sk_buff *skb)
{
    seen += BPF_CORE_READ(skb, dev, ifindex);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def check_object(path: Path) -> None:
    info = read_elf(path)
    assert info.machine == EM_BPF, f"{path.name}: e_machine {info.machine}, not EM_BPF"
    assert ".BTF" in info.sections, f"{path.name}: no .BTF section"
    assert Btf.from_elf(path).type_count > 0


@pytest.mark.parametrize("arch", build.ARCHES)
def test_repo_sources_compile(arch: str, tmp_path: Path) -> None:
    sources = build.sources(ROOT / "bpf")
    if not sources:
        pytest.skip("no bpf/*.bpf.c yet")
    built = build.build(ROOT / "bpf", tmp_path, arch)
    assert sorted(p.name for p in built) == sorted(s.name.replace(".bpf.c", ".bpf.o") for s in sources)
    for obj in built:
        check_object(obj)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left in the output dir"


@pytest.fixture
def tiny_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "bpf" / "vmlinux.h", src)
    (src / "tiny.bpf.c").write_text(TINY)
    return src


@pytest.mark.parametrize("arch", build.ARCHES)
def test_tiny_source_compiles(arch: str, tiny_src: Path, tmp_path: Path) -> None:
    (obj,) = build.build(tiny_src, tmp_path / "out", arch)
    assert obj == tmp_path / "out" / "tiny.bpf.o"
    check_object(obj)


def test_compile_error_is_one_line(tiny_src: Path, tmp_path: Path, capsys) -> None:
    (tiny_src / "broken.bpf.c").write_text("int x = ;\n")
    with pytest.raises(EnvironmentProblem) as e:
        build.build(tiny_src, tmp_path / "out", "x86")
    assert "\n" not in str(e.value) and "broken.bpf.c" in str(e.value) and "error" in str(e.value)
    assert "expected expression" in capsys.readouterr().err  # the compiler's own output goes to stderr


def test_cli_builds_every_machine(tiny_src: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "tiny.bpf.o").write_bytes(b"flat layout of before")
    assert build.main(["--src", str(tiny_src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "x86_64" / "tiny.bpf.o"), str(out / "aarch64" / "tiny.bpf.o")]
    for obj in printed:
        check_object(Path(obj))
    assert not (out / "tiny.bpf.o").exists(), "an object of the flat layout was left where nothing reads it"


def test_cli_builds_one_machine(tiny_src: Path, tmp_path: Path, capsys) -> None:
    assert build.main(["--src", str(tiny_src), "--out", str(tmp_path / "o"), "--machine", "aarch64"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "o" / "aarch64" / "tiny.bpf.o")]


def test_objects_do_not_name_the_build_directory(tiny_src: Path, tmp_path: Path) -> None:
    """Debug info and BTF line info name the sources `bpf/...`, not the directory they were compiled in."""
    for obj in build.build_all(tiny_src, tmp_path / "o"):
        data = obj.read_bytes()
        assert str(tmp_path).encode() not in data, obj
        assert b"bpf/tiny.bpf.c" in data, obj


def test_host_arch_and_object_path() -> None:
    assert build.host_machine() in build.MACHINES
    assert build.host_arch() == build.MACHINES[build.host_machine()]
    with pytest.raises(EnvironmentProblem, match="scripts/setup.sh"):
        build.object_path("no-such-object")


def test_unknown_arch_rejected(tiny_src: Path, tmp_path: Path) -> None:
    with pytest.raises(CniprofError, match="unknown BPF target arch"):
        build.build(tiny_src, tmp_path, "mips")
