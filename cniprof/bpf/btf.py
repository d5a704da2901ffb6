# SPDX-License-Identifier: Apache-2.0
"""A minimal pure-Python BTF reader: enums, struct layouts and sizes from the kernel or from a BPF object.

Why not bpftool or pyelftools: user space needs a handful of facts at run time (the kernel's skb drop reason
names, which differ between kernel versions; layouts of structs shared with the BPF side, to check the ABI
header and the compiled object agree). Parsing the format directly keeps that dependency-free and fast.

Format (include/uapi/linux/btf.h): a header {magic 0xeB9F, version, flags, hdr_len, type_off, type_len,
str_off, str_len} (offsets relative to the end of the header), then the type section (a sequence of
`struct btf_type` {name_off, info, size|type}, each followed by kind-specific data) and the string section.
Type ids start at 1 (0 is void). Split BTF (kernel modules) continues the ids and string offsets of a base.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from cniprof.errors import EnvironmentProblem

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F
EM_BPF = 247

# BTF kinds (BTF_KIND_*)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

KIND_NAMES = {
    INT: "INT", PTR: "PTR", ARRAY: "ARRAY", STRUCT: "STRUCT", UNION: "UNION", ENUM: "ENUM", FWD: "FWD",
    TYPEDEF: "TYPEDEF", VOLATILE: "VOLATILE", CONST: "CONST", RESTRICT: "RESTRICT", FUNC: "FUNC",
    FUNC_PROTO: "FUNC_PROTO", VAR: "VAR", DATASEC: "DATASEC", FLOAT: "FLOAT", DECL_TAG: "DECL_TAG",
    TYPE_TAG: "TYPE_TAG", ENUM64: "ENUM64",
}
# Kinds whose third word is a type id rather than a size.
_REF_KINDS = {PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, VAR, DECL_TAG, TYPE_TAG}
# Kinds that are transparent when computing sizes.
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
POINTER_SIZE = 8  # both supported arches (x86_64, arm64) and the BPF target are 64-bit


class BtfError(EnvironmentProblem):
    """Malformed or unexpected BTF/ELF data, or a type that is not there."""


@dataclass(frozen=True)
class BtfType:
    """One type record; `data` is the offset of its kind-specific trailer inside Btf.types_data."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    data: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"KIND{self.kind}")


@dataclass(frozen=True)
class Member:
    """A struct/union member; bit_size is 0 unless it is a bitfield."""

    name: str
    type_id: int
    bit_offset: int
    bit_size: int


@dataclass(frozen=True)
class ElfInfo:
    """What btf.py needs from an ELF file: e_machine and the section table (name -> (file offset, size))."""

    machine: int
    little_endian: bool
    sections: dict[str, tuple[int, int]]


def read_elf(path: Path | str) -> ElfInfo:
    """Parse the ELF64 header and section headers of path with struct (no pyelftools)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise BtfError(f"{path} is not an ELF file")
    if data[4] != 2:
        raise BtfError(f"{path} is a 32-bit ELF file; BPF objects are ELF64")
    little = data[5] == 1
    e = "<" if little else ">"
    (machine,) = struct.unpack_from(e + "H", data, 18)
    (shoff,) = struct.unpack_from(e + "Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
    if shoff == 0:
        return ElfInfo(machine, little, {})
    headers = []
    first = struct.unpack_from(e + "IIQQQQIIQQ", data, shoff)
    if shnum == 0:  # more than 0xff00 sections: the count is in section 0's sh_size
        shnum = first[5]
    if shstrndx == 0xFFFF:  # SHN_XINDEX: the index is in section 0's sh_link
        shstrndx = first[6]
    for i in range(shnum):
        sh_name, _type, _flags, _addr, sh_offset, sh_size, *_ = struct.unpack_from(
            e + "IIQQQQIIQQ", data, shoff + i * shentsize
        )
        headers.append((sh_name, sh_offset, sh_size))
    str_off, str_size = headers[shstrndx][1], headers[shstrndx][2]
    names = data[str_off : str_off + str_size]
    sections = {}
    for sh_name, sh_offset, sh_size in headers:
        end = names.find(b"\0", sh_name)
        sections[names[sh_name:end].decode(errors="replace")] = (sh_offset, sh_size)
    return ElfInfo(machine, little, sections)


class Btf:
    """Parsed BTF. Type records are indexed once; members and enumerators are decoded on demand."""

    def __init__(self, blob: bytes, base: Btf | None = None, source: str = "<bytes>") -> None:
        self.source = source
        self.base = base
        if len(blob) < 24:
            raise BtfError(f"{source}: too short for a BTF header")
        magic_le = struct.unpack_from("<H", blob, 0)[0]
        if magic_le == BTF_MAGIC:
            self._e = "<"
        elif struct.unpack_from(">H", blob, 0)[0] == BTF_MAGIC:
            self._e = ">"
        else:
            raise BtfError(f"{source}: bad BTF magic {magic_le:#x}")
        _magic, self.version, _flags, hdr_len = struct.unpack_from(self._e + "HBBI", blob, 0)
        type_off, type_len, str_off, str_len = struct.unpack_from(self._e + "IIII", blob, 8)
        if hdr_len + max(type_off + type_len, str_off + str_len) > len(blob):
            raise BtfError(f"{source}: BTF sections extend past the end of the data")
        self.types_data = blob[hdr_len + type_off : hdr_len + type_off + type_len]
        self.strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._str_base = len(base.strings) if base else 0
        self._id_base = base.type_count if base else 0
        self._types: list[BtfType] = []
        self._by_name: dict[str, list[int]] = {}
        self._indexed = False  # every type record is indexed on first need (~0.15 s of CPU for vmlinux)
        if base is not None:
            self._index()  # split BTF: its ids continue the base's, check it whole now

    # ----- construction -----

    @classmethod
    def load(cls, path: Path | str = VMLINUX_BTF, base: Btf | None = None) -> Btf:
        """Read a raw BTF file such as /sys/kernel/btf/vmlinux (modules: pass the vmlinux Btf as base)."""
        try:
            blob = Path(path).read_bytes()
        except FileNotFoundError as e:
            if Path(path) == VMLINUX_BTF:
                raise EnvironmentProblem(
                    f"{path} is missing: the kernel was built without CONFIG_DEBUG_INFO_BTF, cniprof needs BTF"
                ) from e
            raise BtfError(f"BTF file {path} does not exist") from e
        except OSError as e:
            raise BtfError(f"cannot read BTF from {path}: {e.strerror}") from e
        return cls(blob, base=base, source=str(path))

    @classmethod
    def from_elf(cls, path: Path | str) -> Btf:
        """Read the .BTF section of an ELF object (a compiled BPF program)."""
        try:
            info = read_elf(path)
            blob = Path(path).read_bytes()
        except OSError as e:
            raise BtfError(f"cannot read {path}: {e.strerror}") from e
        if ".BTF" not in info.sections:
            raise BtfError(f"{path} has no .BTF section (compile with clang -g)")
        offset, size = info.sections[".BTF"]
        return cls(blob[offset : offset + size], source=f"{path}:.BTF")

    def _index(self) -> None:
        if self._indexed:
            return
        self._indexed = True
        data, e = self.types_data, self._e
        pos, end = 0, len(data)
        next_id = self._id_base + 1
        head = struct.Struct(e + "III")
        while pos < end:
            name_off, info, size_or_type = head.unpack_from(data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            name = self.string(name_off)
            self._types.append(BtfType(next_id, kind, name, vlen, bool(info >> 31), size_or_type, pos))
            if name:
                self._by_name.setdefault(name, []).append(next_id)
            next_id += 1
            pos += self._trailer_size(kind, vlen)
        if pos != end:
            raise BtfError(f"{self.source}: type section does not end on a type boundary")

    def _trailer_size(self, kind: int, vlen: int) -> int:
        if kind in (INT, VAR, DECL_TAG):
            return 4
        if kind == ARRAY:
            return 12
        if kind in (STRUCT, UNION, DATASEC, ENUM64):
            return 12 * vlen
        if kind in (ENUM, FUNC_PROTO):
            return 8 * vlen
        if kind in KIND_NAMES:
            return 0
        raise BtfError(f"{self.source}: unknown BTF kind {kind} (a newer kernel? update cniprof/bpf/btf.py)")

    # ----- lookup -----

    @property
    def type_count(self) -> int:
        """Number of type ids defined here and in the base (ids run 1..type_count)."""
        self._index()
        return self._id_base + len(self._types)

    def string(self, offset: int) -> str:
        """The NUL-terminated string at offset of the (possibly split) string section."""
        if offset < self._str_base:
            assert self.base is not None
            return self.base.string(offset)
        offset -= self._str_base
        end = self.strings.find(b"\0", offset)
        return self.strings[offset : end if end >= 0 else len(self.strings)].decode(errors="replace")

    def type(self, type_id: int) -> BtfType:
        """The type with this id (0 is void and has no record)."""
        if type_id <= self._id_base:
            if self.base is None or type_id <= 0:
                raise BtfError(f"{self.source}: no type with id {type_id}")
            return self.base.type(type_id)
        self._index()
        index = type_id - self._id_base - 1
        if index >= len(self._types):
            raise BtfError(f"{self.source}: no type with id {type_id}")
        return self._types[index]

    def find(self, name: str, kinds: tuple[int, ...]) -> BtfType:
        """The first type named name of one of kinds; 'struct x', 'union x', 'enum x' prefixes are accepted."""
        prefix, _, rest = name.partition(" ")
        if rest and prefix in ("struct", "union", "enum"):
            name = rest
            kinds = {"struct": (STRUCT,), "union": (UNION,), "enum": (ENUM, ENUM64)}[prefix]
        self._index()
        for type_id in self._by_name.get(name, ()):
            t = self.type(type_id)
            if t.kind in kinds:
                return t
        if self.base is not None:
            return self.base.find(name, kinds)
        wanted = "/".join(KIND_NAMES[k] for k in kinds)
        raise BtfError(f"{self.source}: no {wanted} named {name!r} in BTF")

    # ----- decoding -----

    def enum_values(self, name: str) -> dict[str, int]:
        """Enumerator name -> value of enum `name` (ENUM or ENUM64; signedness from kind_flag)."""
        t = self._scan(name, (ENUM, ENUM64)) or self.find(name, (ENUM, ENUM64))
        e, out = self._e, {}
        for i in range(t.vlen):
            if t.kind == ENUM:
                name_off, raw = struct.unpack_from(e + "II", self.types_data, t.data + 8 * i)
                value = raw - (1 << 32) if t.kind_flag and raw >= 1 << 31 else raw
            else:
                name_off, lo, hi = struct.unpack_from(e + "III", self.types_data, t.data + 12 * i)
                value = (hi << 32) | lo
                if t.kind_flag and value >= 1 << 63:
                    value -= 1 << 64
            out[self.string(name_off)] = value
        return out

    def member_offsets(self, name: str) -> tuple[int, dict[str, int]]:
        """(sizeof, member name -> offset in bytes) of struct `name`'s own named, non-bitfield members.

        Unlike struct_layout this needs no index of every type, so it is what run-time readers of a kernel
        struct use (prog_stats: bpf_prog_info)."""
        t = self._scan(name, (STRUCT,)) or self.find(name, (STRUCT,))
        out: dict[str, int] = {}
        for i in range(t.vlen):
            name_off, _mtype, offset = struct.unpack_from(self._e + "III", self.types_data, t.data + 12 * i)
            if name_off and not (t.kind_flag and offset >> 24):
                out[self.string(name_off)] = (offset & 0xFFFFFF if t.kind_flag else offset) // 8
        return t.size_or_type, out

    def _scan(self, name: str, kinds: tuple[int, ...]) -> BtfType | None:
        """The one type named `name` of one of `kinds`, found by byte searches instead of indexing every type.

        Its name is searched in the string section, then that offset in the type section at record alignment,
        with a kind of `kinds` in the next word; a candidate counts only if every entry of its trailer names a
        real string. None (the caller indexes everything) when the index exists already, for split BTF, or
        unless exactly one candidate passes. The returned type has id 0: it is for reading its own trailer."""
        if self._indexed or self.base is not None:
            return None
        e, data = self._e, self.types_data
        want = name.encode()
        offsets, at = [], self.strings.find(b"\0" + want + b"\0")
        while at >= 0:
            offsets.append(at + 1)
            at = self.strings.find(b"\0" + want + b"\0", at + 1)
        found = []
        for off in offsets:
            needle = struct.pack(e + "I", off)
            pos = data.find(needle)
            while pos >= 0:
                if pos % 4 == 0 and pos + 12 <= len(data):
                    _n, info, size_or_type = struct.unpack_from(e + "III", data, pos)
                    kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
                    t = BtfType(0, kind, name, vlen, bool(info >> 31), size_or_type, pos + 12)
                    if kind in kinds and vlen and self._plausible(t):
                        found.append(t)
                pos = data.find(needle, pos + 1)
        return found[0] if len(found) == 1 else None

    def _plausible(self, t: BtfType) -> bool:
        """Every entry of a struct/union/enum trailer starts with the offset of a string that starts there."""
        step = 8 if t.kind == ENUM else 12
        if t.data + step * t.vlen > len(self.types_data):
            return False
        for i in range(t.vlen):
            (name_off,) = struct.unpack_from(self._e + "I", self.types_data, t.data + step * i)
            if name_off >= len(self.strings) or (name_off and self.strings[name_off - 1] != 0):
                return False
        return True

    def members(self, type_id: int) -> list[Member]:
        """Members of a STRUCT or UNION, as declared (anonymous members have name '')."""
        t = self.type(type_id)
        if t.kind not in (STRUCT, UNION):
            raise BtfError(f"{self.source}: type {type_id} is a {t.kind_name}, not a struct or union")
        out = []
        for i in range(t.vlen):
            name_off, mtype, offset = struct.unpack_from(self._e + "III", self.types_data, t.data + 12 * i)
            if t.kind_flag:  # bitfield encoding: size in the top 8 bits
                out.append(Member(self.string(name_off), mtype, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self.string(name_off), mtype, offset, 0))
        return out

    def struct_layout(self, name: str) -> dict[str, tuple[int, int]]:
        """Member name -> (offset in bytes, size in bytes) of struct/union `name`.

        Members of anonymous structs/unions are flattened into the parent (as C lets you name them), which is
        how e.g. sk_buff's `dev` is reached. Bitfields report the bytes they touch.
        """
        t = self.find(name, (STRUCT, UNION))
        layout: dict[str, tuple[int, int]] = {}
        self._flatten(t.id, 0, layout)
        return layout

    def _flatten(self, type_id: int, base_bits: int, layout: dict[str, tuple[int, int]]) -> None:
        for m in self.members(type_id):
            bits = base_bits + m.bit_offset
            if not m.name:
                inner = self.resolve(m.type_id)
                if inner.kind in (STRUCT, UNION):
                    self._flatten(inner.id, bits, layout)
                continue
            if m.bit_size:
                first, last = bits // 8, (bits + m.bit_size - 1) // 8
                layout[m.name] = (first, last - first + 1)
            else:
                layout[m.name] = (bits // 8, self.type_size(m.type_id))

    def resolve(self, type_id: int) -> BtfType:
        """Skip typedef/const/volatile/restrict/type_tag to the underlying type."""
        t = self.type(type_id)
        while t.kind in _MODIFIERS:
            t = self.type(t.size_or_type)
        return t

    def type_size(self, type_id: int) -> int:
        """sizeof the type with this id."""
        t = self.resolve(type_id)
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return t.size_or_type
        if t.kind == PTR:
            return POINTER_SIZE
        if t.kind == ARRAY:
            elem, _index, nelems = struct.unpack_from(self._e + "III", self.types_data, t.data)
            return nelems * self.type_size(elem)
        raise BtfError(f"{self.source}: type {type_id} ({t.kind_name} {t.name!r}) has no size")

    def sizeof(self, name: str) -> int:
        """sizeof a named struct, union, enum, typedef, int or float."""
        return self.type_size(self.find(name, (STRUCT, UNION, TYPEDEF, ENUM, ENUM64, INT, FLOAT)).id)


@functools.lru_cache(maxsize=1)
def vmlinux() -> Btf:
    """The running kernel's BTF, parsed once per process."""
    return Btf.load(VMLINUX_BTF)


@functools.lru_cache(maxsize=1)
def drop_reason_names() -> dict[int, str]:
    """kfree_skb reason value -> name without SKB_DROP_REASON_ (e.g. 2 -> 'NO_SOCKET') for this kernel.

    Read from BTF because the enum changes between kernel versions. The SKB_DROP_REASON_MAX sentinel and the
    subsystem mask/shift helpers are not reasons and are left out.
    """
    values = vmlinux().enum_values("skb_drop_reason")
    prefix = "SKB_DROP_REASON_"
    out: dict[int, str] = {}
    for name, value in values.items():
        short = name.removeprefix(prefix)
        if short in ("MAX", "SUBSYS_MASK") or short.startswith("SUBSYS_SHIFT"):
            continue
        out.setdefault(value, short)
    return out


def has_drop_reasons() -> bool:
    """Whether kfree_skb carries a reason on this kernel (enum skb_drop_reason in its BTF: 5.17+). The doctor's
    drop_reasons probe and the hop probe's choice of kfree_skb program both ask this, so they always agree."""
    try:
        drop_reason_names()
    except BtfError as e:
        if "skb_drop_reason" in str(e):
            return False
        raise
    return True


def c_structs(*mirrors: type) -> dict[str, type]:
    """C struct name -> its ctypes mirror, the C name being the class name in snake case (DevSlot -> dev_slot):
    what the ABI tests hold against the object's BTF."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", m.__name__).lower(): m for m in mirrors}
