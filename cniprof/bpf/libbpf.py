# SPDX-License-Identifier: Apache-2.0
"""The only place that touches libbpf's C API (Debian's libbpf1, >= 1.1) through ctypes.

bcc is not used: it compiles at run time against kernel headers, which this machine and many production nodes lack.
Objects are CO-RE (compiled once against bpf/vmlinux.h) and relocated by libbpf against the running kernel's BTF.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from cniprof.errors import EnvironmentProblem

_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise EnvironmentProblem("libbpf is not installed: run scripts/setup.sh (Debian package libbpf1)") from None
    vp, cp, i, u32, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_map_by_name": (vp, [vp, cp]),
        "bpf_object__find_program_by_name": (vp, [vp, cp]),
        "bpf_object__next_program": (vp, [vp, vp]),
        "bpf_program__name": (cp, [vp]),
        "bpf_program__set_autoload": (i, [vp, ctypes.c_bool]),
        "bpf_program__autoload": (ctypes.c_bool, [vp]),
        "bpf_program__attach": (vp, [vp]),
        "bpf_program__fd": (i, [vp]),
        "bpf_link__destroy": (i, [vp]),
        "bpf_map__fd": (i, [vp]),
        "bpf_map__key_size": (u32, [vp]),
        "bpf_map__value_size": (u32, [vp]),
        "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(sz)]),
        "bpf_map_update_elem": (i, [i, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "bpf_map_delete_elem": (i, [i, vp]),
        "bpf_map_get_next_key": (i, [i, vp, vp]),
        "bpf_obj_get_info_by_fd": (i, [i, vp, ctypes.POINTER(u32)]),
        "libbpf_num_possible_cpus": (i, []),
        "libbpf_set_print": (vp, [vp]),
    }
    for fn, (res, args) in sigs.items():
        f = getattr(handle, fn)
        f.restype = res
        f.argtypes = args
    _lib = handle
    _silence_libbpf(handle)
    return handle


# libbpf prints its own warnings to stderr; keep them for --verbose runs only, and for error context.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_log_lines: list[str] = []


@_PRINT_FN
def _collect(level: int, fmt: bytes, args: int) -> int:  # pragma: no cover - called from C
    # va_list cannot be formatted portably from Python; keep the format for context.
    _log_lines.append(fmt.decode(errors="replace").rstrip())
    del _log_lines[:-50]
    return 0


def _silence_libbpf(handle: ctypes.CDLL) -> None:
    handle.libbpf_set_print(ctypes.cast(_collect, ctypes.c_void_p))


def _err(what: str) -> str:
    e = ctypes.get_errno()
    return f"{what}: {os.strerror(e) if e else 'failed'} (errno {e})"


def possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise EnvironmentProblem("cannot read the number of possible CPUs from /sys/devices/system/cpu/possible")
    return n


class Map:
    """A loaded map, addressed through its fd with raw ctypes buffers."""

    def __init__(self, ptr: int, name: str):
        self.ptr = ptr
        self.name = name
        self.fd = lib().bpf_map__fd(ptr)
        self.key_size = lib().bpf_map__key_size(ptr)
        self.value_size = lib().bpf_map__value_size(ptr)

    def update(self, key: ctypes.Array | ctypes.Structure | ctypes._SimpleCData, value: object, flags: int = 0) -> None:
        if lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags) != 0:
            raise OSError(ctypes.get_errno(), _err(f"update of map {self.name}"))

    def lookup_raw(self, key: object, size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(size)
        if lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), buf) != 0:
            if ctypes.get_errno() == errno.ENOENT:
                return None
            raise OSError(ctypes.get_errno(), _err(f"lookup in map {self.name}"))
        return buf.raw

    def delete(self, key: object) -> bool:
        return lib().bpf_map_delete_elem(self.fd, ctypes.byref(key)) == 0

    def keys(self, key_type: type) -> list:
        out = []
        prev = None
        while True:
            nxt = key_type()
            rc = lib().bpf_map_get_next_key(self.fd, ctypes.byref(prev) if prev is not None else None,
                                            ctypes.byref(nxt))
            if rc != 0:
                break
            out.append(nxt)
            prev = nxt
        return out


class Object:
    """An opened (then loaded) BPF object; owns its links and closes everything on close()."""

    def __init__(self, path: Path):
        if not path.exists():
            raise EnvironmentProblem(f"BPF object {path} is missing: run scripts/setup.sh to build it")
        ptr = lib().bpf_object__open_file(str(path).encode(), None)
        if not ptr:
            raise EnvironmentProblem(_err(f"cannot open BPF object {path}"))
        self.ptr = ptr
        self.path = path
        self.links: list[tuple[str, int]] = []
        self.loaded = False

    # --- before load ---
    def rodata(self) -> ctypes.Array:
        """The writable initial value of .rodata (const volatile settings), valid until load."""
        m = lib().bpf_object__find_map_by_name(self.ptr, b".rodata")
        if not m:
            raise EnvironmentProblem(f"{self.path.name} has no .rodata section")
        size = ctypes.c_size_t()
        addr = lib().bpf_map__initial_value(m, ctypes.byref(size))
        return (ctypes.c_char * size.value).from_address(addr)

    def program_names(self) -> list[str]:
        names, p = [], None
        while True:
            p = lib().bpf_object__next_program(self.ptr, p)
            if not p:
                return names
            names.append(lib().bpf_program__name(p).decode())

    def _prog(self, name: str) -> int:
        p = lib().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not p:
            raise KeyError(name)
        return p

    def set_autoload(self, name: str, on: bool) -> None:
        lib().bpf_program__set_autoload(self._prog(name), on)

    def load(self) -> None:
        if lib().bpf_object__load(self.ptr) != 0:
            e = ctypes.get_errno()
            hint = " (not root?)" if e == errno.EPERM else ""
            raise EnvironmentProblem(f"the kernel refused {self.path.name}: {os.strerror(e)}{hint}")
        self.loaded = True

    # --- after load ---
    def map(self, name: str) -> Map:
        m = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m:
            raise KeyError(name)
        return Map(m, name)

    def prog_fd(self, name: str) -> int:
        return lib().bpf_program__fd(self._prog(name))

    def attach(self, name: str) -> None:
        """Attach by the program's SEC() name (tp_btf/..., tracepoint/..., raw_tp/...)."""
        link = lib().bpf_program__attach(self._prog(name))
        if not link:
            raise OSError(ctypes.get_errno(), _err(f"attach of {name}"))
        self.links.append((name, link))

    def close(self) -> None:
        for _, link in reversed(self.links):
            lib().bpf_link__destroy(link)
        self.links.clear()
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None

    def __enter__(self) -> "Object":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prog_info(fd: int, size: int = 256) -> bytes:
    """Raw struct bpf_prog_info of a loaded program (decode fields with offsets from the kernel's BTF)."""
    buf = ctypes.create_string_buffer(size)
    n = ctypes.c_uint32(size)
    if lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)) != 0:
        raise OSError(ctypes.get_errno(), _err("bpf_obj_get_info_by_fd"))
    return buf.raw[: n.value]
