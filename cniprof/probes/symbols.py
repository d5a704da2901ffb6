# SPDX-License-Identifier: Apache-2.0
"""Addresses to function names: the kernel's from /proc/kallsyms, a process's from its ELF files.

Symbolization happens once, at capture time, on the machine that recorded: kernel addresses change with every
boot (KASLR) and user mappings vanish with the process, so the CPU snapshot stores names, never addresses, and
every later stage (components, flame graphs, `cniprof diff`) works on plain strings without root.

Kernel: /proc/kallsyms lists every function start; a sorted array and a binary search give the function that
contains an address (the greatest start <= address). Without root the kernel shows all addresses as 0
(kptr_restrict), which is detected and reported instead of producing a profile of "0x0" frames.

User: /proc/<pid>/maps gives the file and file offset of an address; the file's PT_LOAD segments turn that into
the ELF virtual address looked up in .symtab (or .dynsym of stripped binaries). Stacks come from a frame-pointer
walk; code built without frame pointers yields garbage beyond the first frame, so a walk stops at the first
address that no mapping explains rather than printing made-up callers.
"""

from __future__ import annotations

import bisect
import gc
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cniprof.errors import EnvironmentProblem

KALLSYMS = "/proc/kallsyms"
TEXT_TYPES = frozenset("tTwW")
# a kernel address further than this past the last symbol start is not inside that function
MAX_FUNCTION_SIZE = 1 << 20


class Kallsyms:
    """Kernel function names by address (binary search over /proc/kallsyms' text symbols)."""

    def __init__(self, entries: Iterable[tuple[int, str, str | None]]):
        pairs = sorted((a, n, m) for a, n, m in entries if a)
        self.addrs = [a for a, _, _ in pairs]
        self.names = [n for _, n, _ in pairs]
        self.modules = [m for _, _, m in pairs]

    @classmethod
    def load(cls, path: str | os.PathLike[str] = KALLSYMS) -> Kallsyms:
        """Parse kallsyms; EnvironmentProblem when it is unreadable or its addresses are hidden (not root)."""
        try:
            text = Path(path).read_text(errors="replace")
        except OSError as e:
            raise EnvironmentProblem(f"cannot read {path}: {e.strerror}") from None
        gc.disable()  # ~120k tuples: the collector would otherwise run dozens of times for nothing
        try:
            entries = list(parse_kallsyms(text))
            table = cls(entries)
        finally:
            gc.enable()
        if not entries:
            raise EnvironmentProblem(f"{path} shows no kernel addresses (kptr_restrict): symbolizing kernel "
                                     "stacks needs root")
        return table

    def __len__(self) -> int:
        return len(self.addrs)

    def lookup(self, addr: int) -> str | None:
        """The name of the function containing addr, or None when no symbol plausibly covers it."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or addr - self.addrs[i] > MAX_FUNCTION_SIZE:
            return None
        return self.names[i]

    def module(self, addr: int) -> str | None:
        """The module ("vxlan") of the function containing addr; None for the kernel image itself."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        return self.modules[i] if i >= 0 else None

    def frame(self, addr: int) -> str:
        """The frame name as flame graphs show it: the function, or the hex address when unknown."""
        return self.lookup(addr) or f"0x{addr:x}"


def parse_kallsyms(text: str) -> Iterable[tuple[int, str, str | None]]:
    """(address, name, module or None) of every text symbol with a non-zero address."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in TEXT_TYPES:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        if not addr:
            continue
        module = parts[3].strip("[]") if len(parts) > 3 else None
        yield addr, parts[2], module


# --- user space -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str


def parse_maps(text: str) -> list[Mapping]:
    """Executable file mappings of /proc/<pid>/maps, sorted by start address."""
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append(Mapping(lo, hi, int(parts[2], 16), parts[5].strip()))
    return sorted(out, key=lambda m: m.start)


@dataclass
class ElfSymbols:
    """Function symbols of one ELF64 file and its PT_LOAD segments (file offset -> virtual address)."""

    starts: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    loads: list[tuple[int, int, int]] = field(default_factory=list)  # (p_offset, p_vaddr, p_filesz)

    @classmethod
    def read(cls, path: str) -> ElfSymbols:
        """Parse what is needed with struct (no pyelftools); an unreadable or odd file yields no symbols."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return cls()
        if data[:4] != b"\x7fELF" or data[4] != 2:
            return cls()
        e = "<" if data[5] == 1 else ">"
        phoff, shoff = struct.unpack_from(e + "QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(e + "HHHH", data, 0x36)
        out = cls()
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
                e + "IIQQQQ", data, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                out.loads.append((p_offset, p_vaddr, p_filesz))
        sections = [struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        syms: dict[int, tuple[int, str]] = {}
        for want in (2, 11):  # SHT_SYMTAB first (full), then SHT_DYNSYM (what stripped files keep)
            for sh in sections:
                if sh[1] != want:
                    continue
                str_off = sections[sh[6]][4]
                for j in range(sh[5] // 24):
                    st_name, st_info, _other, shndx, value, size = struct.unpack_from(
                        e + "IBBHQQ", data, sh[4] + j * 24)
                    if st_info & 0xF != 2 or not value or shndx == 0:  # STT_FUNC, defined here
                        continue
                    end = data.find(b"\0", str_off + st_name)
                    syms.setdefault(value, (size, data[str_off + st_name:end].decode(errors="replace")))
            if syms:
                break
        for value in sorted(syms):
            out.starts.append(value)
            out.sizes.append(syms[value][0])
            out.names.append(syms[value][1])
        return out

    def vaddr(self, file_offset: int) -> int | None:
        for p_offset, p_vaddr, p_filesz in self.loads:
            if p_offset <= file_offset < p_offset + p_filesz:
                return file_offset - p_offset + p_vaddr
        return None

    def lookup(self, vaddr: int) -> str | None:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0:
            return None
        size = self.sizes[i]
        if size and vaddr >= self.starts[i] + size:
            return None
        return self.names[i]


def _find(maps: Sequence[Mapping], addr: int) -> Mapping | None:
    i = bisect.bisect_right([m.start for m in maps], addr) - 1
    return maps[i] if i >= 0 and addr < maps[i].end else None


class UserSymbols:
    """Per-process user-space symbolization with cached maps and ELF files.

    Maps are read when first needed and re-read once when an address falls outside them (a library loaded
    later); a process that has exited keeps its last maps, so symbolizing after the generator ended still works
    for processes seen during the capture (read_maps is called at every snapshot).
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.maps: dict[int, list[Mapping]] = {}
        self.elves: dict[str, ElfSymbols] = {}
        self.reread: set[int] = set()  # processes whose maps were re-read in this round

    def new_round(self) -> None:
        """Allow one more re-read of each process's maps (a caller's snapshot is a round): junk addresses
        from frame-pointer-less code miss every mapping, and re-reading for each of them is what costs."""
        self.reread.clear()

    def read_maps(self, tgid: int) -> list[Mapping]:
        try:
            text = Path(self.proc, str(tgid), "maps").read_text(errors="replace")
        except OSError:
            return self.maps.get(tgid, [])
        self.maps[tgid] = parse_maps(text)
        return self.maps[tgid]

    def _mapping(self, tgid: int, addr: int) -> Mapping | None:
        fresh = tgid not in self.maps
        m = _find(self.read_maps(tgid) if fresh else self.maps[tgid], addr)
        if m is None and not fresh and tgid not in self.reread:
            self.reread.add(tgid)
            m = _find(self.read_maps(tgid), addr)
        return m

    def frame(self, tgid: int, addr: int) -> str | None:
        """ "function" (or "[file]" without a symbol); None when no file mapping of tgid contains addr."""
        m = self._mapping(tgid, addr)
        if m is None:
            return None
        elf = self.elves.get(m.path)
        if elf is None:
            elf = self.elves[m.path] = ElfSymbols.read(m.path)
        va = elf.vaddr(addr - m.start + m.offset)
        name = elf.lookup(va) if va is not None else None
        return name or f"[{os.path.basename(m.path)}]"

    def stack(self, tgid: int, addrs: Sequence[int]) -> list[str]:
        """Frames innermost first, cut at the first address no mapping explains (see the module docstring)."""
        out = []
        for addr in addrs:
            name = self.frame(tgid, addr)
            if name is None:
                if not out:
                    out.append("[unknown]")
                break
            out.append(name)
        return out
