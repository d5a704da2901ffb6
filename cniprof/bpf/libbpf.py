# SPDX-License-Identifier: Apache-2.0
"""The only place that touches libbpf's C API (Debian's libbpf1, >= 1.1) through ctypes.

bcc is not used: it compiles at run time against kernel headers, which this machine and many production nodes lack.
Objects are CO-RE (compiled once against bpf/vmlinux.h) and relocated by libbpf against the running kernel's BTF.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.bpf.build import rebuild_hint
from cniprof.errors import EnvironmentProblem

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: a command that does not need it does not wait for it
    np = lazy_loader.load("numpy")

_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise EnvironmentProblem("libbpf is not installed: install the Debian package libbpf1") from None
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
        "bpf_enable_stats": (i, [i]),
        "libbpf_num_possible_cpus": (i, []),
        "libbpf_set_print": (vp, [vp]),
        "bpf_map__set_max_entries": (i, [vp, u32]),
        "ring_buffer__new": (vp, [i, vp, vp, vp]),
        "ring_buffer__consume": (i, [vp]),
        "ring_buffer__free": (None, [vp]),
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
    return f"{what}: {errno_text(ctypes.get_errno())}"


# Kernel-internal errnos (include/linux/errno.h) that the bpf() and perf syscalls return to user space although
# libc has no name for them: ENOTSUPP is what an fentry attach answers on arm64 before 6.4.
KERNEL_ERRNOS = {
    515: ("ENOIOCTLCMD", "No ioctl command"),
    524: ("ENOTSUPP", "Operation is not supported"),
    525: ("ETOOSMALL", "Buffer or request is too small"),
    527: ("EBADTYPE", "Type not supported by server"),
}


def errno_text(code: int | None) -> str:
    """'Operation not permitted (EPERM)' from an errno value (what users search for, in both spellings), also
    for the kernel-internal ones libc cannot name ('Operation is not supported (ENOTSUPP, 524)')."""
    if not code:
        return "failed (no errno)"
    if code in KERNEL_ERRNOS:
        name, text = KERNEL_ERRNOS[code]
        return f"{text} ({name}, {code})"
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


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

    def lookup_percpu(self, key: object, ctype: type, ncpu: int) -> np.ndarray | None:
        """A per-CPU map's value as an (ncpu, u64 words) array (the kernel rounds each CPU's copy up to 8 bytes);
        None when the key is absent. ncpu: the possible CPUs."""
        stride = (ctypes.sizeof(ctype) + 7) // 8 * 8
        raw = self.lookup_raw(key, stride * ncpu)
        if raw is None:
            return None
        return np.frombuffer(raw, dtype=np.uint64).reshape(ncpu, stride // 8)

    def delete(self, key: object) -> bool:
        return lib().bpf_map_delete_elem(self.fd, ctypes.byref(key)) == 0

    def mmap_readonly(self, entries: int) -> mmap.mmap:
        """A read-only shared mapping of an array map created with BPF_F_MMAPABLE (entries values, each rounded
        up to 8 bytes, as the kernel lays them out): read without a syscall per element. Close it before the
        object."""
        stride = (self.value_size + 7) // 8 * 8
        return mmap.mmap(self.fd, stride * entries, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)

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
            raise EnvironmentProblem(f"BPF object {path} is missing: {rebuild_hint()}")
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

    def set_max_entries(self, name: str, n: int) -> None:
        """Resize a map before load (a ring buffer: bytes, a power of 2 pages)."""
        m = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m or lib().bpf_map__set_max_entries(m, n) != 0:
            raise EnvironmentProblem(_err(f"cannot resize map {name} of {self.path.name}"))

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

    def check_maps(self, map_types: Mapping[str, tuple[type, type]]) -> None:
        """Every named map's key and value sizes equal cniprof's ctypes mirrors (a stale or foreign object is one
        line saying how to rebuild, not garbage read back later)."""
        for name, (key, value) in map_types.items():
            m = self.map(name)
            if (m.key_size, m.value_size) != (ctypes.sizeof(key), ctypes.sizeof(value)):
                raise EnvironmentProblem(f"{self.path.name}: map {name} is {m.key_size}/{m.value_size} bytes, "
                                         f"cniprof expects {ctypes.sizeof(key)}/{ctypes.sizeof(value)}: "
                                         f"{rebuild_hint()}")

    def detach_all(self) -> None:
        """Destroy every link; the programs stay loaded and can be attached again."""
        for _, link in reversed(self.links):
            lib().bpf_link__destroy(link)
        self.links.clear()

    def close(self) -> None:
        self.detach_all()
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None

    def __enter__(self) -> Object:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type


def enable_stats() -> int:
    """An fd that keeps the kernel's BPF run-time statistics on while it is open (BPF_ENABLE_STATS, Linux 5.8+).

    The kernel counts these holders, so this never turns statistics off under anyone else and needs no restore:
    closing the fd (or the process ending) drops the hold."""
    fd = lib().bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        raise EnvironmentProblem(f"cannot enable BPF run-time statistics: {_err('BPF_ENABLE_STATS')}")
    return fd


def prog_info(fd: int, size: int = 256) -> bytes:
    """Raw struct bpf_prog_info of a loaded program (decode fields with offsets from the kernel's BTF)."""
    buf = ctypes.create_string_buffer(size)
    n = ctypes.c_uint32(size)
    if lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)) != 0:
        raise OSError(ctypes.get_errno(), _err("bpf_obj_get_info_by_fd"))
    return buf.raw[: n.value]


# ---------------------------------------------------------------------------------------------------------------
# Additions for feature calibration (cniprof doctor) and CPU sampling: perf events, raw bpf(), map creation.
# Appended, not merged into the classes above, so existing users of this module are untouched.

# Syscall numbers for the two supported arches (arm64 uses the generic table).
_SYSCALLS = {
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
}

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_ATTR_FLAG_DISABLED = 1 << 0
PERF_ATTR_FLAG_FREQ = 1 << 10


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER0 (64 bytes); the kernel treats newer fields as zero.

    The bitfield word (disabled, inherit, ..., freq, ...) is one u64 `flags` so callers set bits explicitly.
    """

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period_or_freq", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    ]


_libc: ctypes.CDLL | None = None


def _syscall(name: str, *args: object) -> int:
    """Call a raw syscall by name; returns its result or raises OSError with the kernel's errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    machine = os.uname().machine
    if machine not in _SYSCALLS:
        raise EnvironmentProblem(f"unsupported CPU architecture {machine!r}: cniprof supports x86_64 and arm64")
    rc = _libc.syscall(ctypes.c_long(_SYSCALLS[machine][name]), *args)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{name}: {os.strerror(e)}")
    return int(rc)


def perf_event_open(attr: PerfEventAttr, pid: int = -1, cpu: int = 0, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC) -> int:
    """perf_event_open(2); glibc has no wrapper. Returns the event fd (the caller closes it)."""
    attr.size = ctypes.sizeof(attr)
    return _syscall("perf_event_open", ctypes.byref(attr), ctypes.c_int(pid), ctypes.c_int(cpu),
                    ctypes.c_int(group_fd), ctypes.c_ulong(flags))


def cpu_clock_attr(sample_freq: int) -> PerfEventAttr:
    """A disabled cpu-clock sampling event at sample_freq Hz (libbpf enables it when attaching)."""
    attr = PerfEventAttr()
    attr.type = PERF_TYPE_SOFTWARE
    attr.config = PERF_COUNT_SW_CPU_CLOCK
    attr.sample_period_or_freq = sample_freq
    attr.flags = PERF_ATTR_FLAG_FREQ | PERF_ATTR_FLAG_DISABLED
    return attr


def bpf_syscall(cmd: int, attr: ctypes.Array | ctypes.Structure) -> int:
    """Raw bpf(cmd, attr, sizeof attr), for commands libbpf 1.1 cannot express (e.g. netfilter links).

    Returns the syscall's result (usually a new fd the caller must close) or raises OSError.
    """
    return _syscall("bpf", ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))


def attach_perf_event(obj: Object, name: str, perf_fd: int) -> None:
    """Attach program `name` of a loaded object to an open perf event (bpf_program__attach_perf_event).

    On success the link owns perf_fd: obj.close() (bpf_link__destroy) disables and closes it, so the caller
    must not close it again. On failure the caller still owns perf_fd.
    """
    f = lib().bpf_program__attach_perf_event
    f.restype, f.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]
    link = f(obj._prog(name), perf_fd)
    if not link:
        raise OSError(ctypes.get_errno(), _err(f"attach of {name} to perf event fd {perf_fd}"))
    obj.links.append((name, link))


def map_create(map_type: int, name: str, key_size: int, value_size: int, max_entries: int) -> int:
    """bpf_map_create without options; returns the map fd (close it with os.close) or raises OSError."""
    f = lib().bpf_map_create
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                  ctypes.c_void_p]
    fd = f(map_type, name.encode(), key_size, value_size, max_entries, None)
    if fd < 0:
        e = -fd if fd < -1 else ctypes.get_errno()
        raise OSError(e, f"bpf_map_create({name}): {os.strerror(e)}")
    return fd


def version() -> str:
    """libbpf's version, e.g. 'v1.1', plus the shared object's full name when it can be found ('libbpf.so.1.1.2').

    The file name matters because Debian's 1.1.2 and upstream 1.1.0 differ in fixes, not in the version string.
    """
    f = lib().libbpf_version_string
    f.restype, f.argtypes = ctypes.c_char_p, []
    text = f().decode()
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libbpf.so" in line}
    except OSError:
        paths = set()
    if paths:
        text += f" ({Path(os.path.realpath(min(paths))).name})"
    return text


def lookup_batch(m: Map, capacity: int) -> tuple[bytes, bytes, int]:
    """Every (key, value) of a hash map in a few syscalls (bpf_map_lookup_batch, kernel >= 5.6).

    Returns (keys, values, n): the first n keys and values packed at m.key_size / m.value_size strides.
    Iterating with get_next_key + lookup costs two syscalls per entry, which for the CPU sampler's thousands of
    stack keys is what made reading a snapshot take a tenth of a CPU second.
    """
    f = lib().bpf_map_lookup_batch
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                  ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
    keys = ctypes.create_string_buffer(m.key_size * capacity)
    values = ctypes.create_string_buffer(m.value_size * capacity)
    token = ctypes.create_string_buffer(max(8, m.key_size))
    total = 0
    first = True
    while total < capacity:
        count = ctypes.c_uint32(capacity - total)
        rc = f(m.fd, None if first else token, token,
               ctypes.byref(keys, total * m.key_size), ctypes.byref(values, total * m.value_size),
               ctypes.byref(count), None)
        err = ctypes.get_errno() if rc != 0 else 0
        total += count.value
        first = False
        if rc != 0:
            if err == errno.ENOENT:  # the end of the map
                break
            raise OSError(err, _err(f"batch lookup in map {m.name}"))
    return keys.raw[: total * m.key_size], values.raw[: total * m.value_size], total


def set_program_type(obj: Object, name: str, prog_type: int, expected_attach_type: int) -> None:
    """Set a program's type and expected attach type before load (bpf_program__set_type / _set_expected_attach_type).

    For program types this libbpf cannot guess from the SEC() name: Debian's 1.1 does not know SEC("netfilter")
    (1.2 does), so bpf/nfhooks.bpf.c's programs open with no type and get BPF_PROG_TYPE_NETFILTER / BPF_NETFILTER
    here, with the values read from the kernel's BTF.
    """
    if obj.loaded:
        raise EnvironmentProblem(f"{obj.path.name}: program types must be set before load")
    prog = obj._prog(name)
    for fn, value in (("bpf_program__set_type", prog_type),
                      ("bpf_program__set_expected_attach_type", expected_attach_type)):
        f = getattr(lib(), fn)
        f.restype, f.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]
        rc = f(prog, value)
        if rc != 0:
            e = -rc if rc < 0 else ctypes.get_errno()
            raise OSError(e, f"{fn}({name}, {value}): {os.strerror(e)}")


# ---------------------------------------------------------------------------------------------------------------
# tc (clsact) attachment through libbpf's bpf_tc_* API (libbpf >= 0.6): for datapath programs that must stay
# attached after the loading process exits (the Cilium-style lab). Unlike a bpf_link, a tc filter lives with its
# device: it holds the program, and both go when the device (or its namespace) is removed.
# libbpf opens its netlink socket in the calling thread's network namespace: call these from a thread inside
# the device's namespace (cniprof.netns_exec.call_in).

BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook (libbpf.h): sz, ifindex, attach_point, parent; trailing `size_t :0` pads to 24."""

    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts (libbpf.h): sz, prog_fd, flags, prog_id, handle, priority; padded to 32."""

    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


def _tc_hook(ifindex: int, attach_point: int) -> TcHook:
    hook = TcHook()
    hook.sz, hook.ifindex, hook.attach_point = ctypes.sizeof(TcHook), ifindex, attach_point
    return hook


def tc_attach(ifindex: int, attach_point: int, prog_fd: int, handle: int = 1, priority: int = 1) -> int:
    """Create the device's clsact qdisc if needed and attach prog_fd as a direct-action filter; returns the
    program id the kernel reports. ifindex is resolved in the calling thread's namespace."""
    hook = _tc_hook(ifindex, attach_point)
    if not hasattr(lib(), "bpf_tc_attach"):
        raise EnvironmentProblem(f"libbpf {version()} has no bpf_tc_attach: tc programs need libbpf >= 0.6")
    create = lib().bpf_tc_hook_create
    create.restype, create.argtypes = ctypes.c_int, [ctypes.POINTER(TcHook)]
    rc = create(ctypes.byref(hook))
    if rc < 0 and -rc != errno.EEXIST:
        raise OSError(-rc, f"bpf_tc_hook_create(ifindex {ifindex}): {os.strerror(-rc)}")
    opts = TcOpts()
    opts.sz, opts.prog_fd, opts.handle, opts.priority = ctypes.sizeof(TcOpts), prog_fd, handle, priority
    attach = lib().bpf_tc_attach
    attach.restype, attach.argtypes = ctypes.c_int, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]
    rc = attach(ctypes.byref(hook), ctypes.byref(opts))
    if rc < 0:
        raise OSError(-rc, f"bpf_tc_attach(ifindex {ifindex}): {os.strerror(-rc)}")
    return int(opts.prog_id)


def tc_detach(ifindex: int, attach_point: int, handle: int = 1, priority: int = 1) -> None:
    """Remove the direct-action filter (handle, priority) that tc_attach put on the device's hook; the clsact
    qdisc stays (other filters may use it). Call from a thread inside the device's namespace, like tc_attach."""
    hook = _tc_hook(ifindex, attach_point)
    opts = TcOpts()
    opts.sz, opts.handle, opts.priority = ctypes.sizeof(TcOpts), handle, priority
    detach = lib().bpf_tc_detach
    detach.restype, detach.argtypes = ctypes.c_int, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]
    rc = detach(ctypes.byref(hook), ctypes.byref(opts))
    if rc < 0:
        raise OSError(-rc, f"bpf_tc_detach(ifindex {ifindex}): {os.strerror(-rc)}")


# ---------------------------------------------------------------------------------------------------------------
# BPF ring buffers (node agents' records): drained on the caller's schedule, no epoll.

_RING_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class RingBuffer:
    """Reader of one BPF_MAP_TYPE_RINGBUF map: drain() returns the bytes of every record committed so far, in
    order, concatenated (records of a fixed-size type can then be decoded in one numpy call)."""

    def __init__(self, m: Map):
        self._chunks: list[bytes] = []

        def sample(ctx: int, data: int, size: int) -> int:  # pragma: no cover - called from C
            self._chunks.append(ctypes.string_at(data, size))
            return 0

        self._callback = _RING_SAMPLE_FN(sample)  # kept alive as long as the ring buffer
        self.ptr = lib().ring_buffer__new(m.fd, ctypes.cast(self._callback, ctypes.c_void_p), None, None)
        if not self.ptr:
            raise EnvironmentProblem(_err(f"cannot read ring buffer {m.name}"))

    def drain(self) -> bytes:
        if self.ptr is None:
            return b""
        if lib().ring_buffer__consume(self.ptr) < 0:
            raise OSError(ctypes.get_errno(), _err("ring_buffer__consume"))
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out

    def close(self) -> None:
        if self.ptr is not None:
            lib().ring_buffer__free(self.ptr)
            self.ptr = None


def prog_id(fd: int) -> int:
    """The kernel's id of a loaded program (struct bpf_prog_info: u32 type, then u32 id)."""
    return int.from_bytes(prog_info(fd, 16)[4:8], "little" if np.little_endian else "big")
