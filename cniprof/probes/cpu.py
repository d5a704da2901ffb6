# SPDX-License-Identifier: Apache-2.0
"""User-space half of bpf/cpu.bpf.c: one cpu-clock perf event per online CPU, the softirq tracepoints, and the
reading of the in-kernel aggregates into a CPU snapshot.

The CPU snapshot (written as cpu.json, consumed by cniprof.analysis.cpu and the flame graphs) is plain JSON:

    {"version": 1, "freq_hz", "elapsed_s", "cpus": [0, 1], "profiler_tgid",
     "stacks":  [[frame, ...], ...],                       # unique stacks, innermost frame first, symbolized
     "samples": [{"tgid", "comm", "cpu", "softirq": "NET_RX" | null,
                  "kstack": index into stacks | null, "ustack": index | null,
                  "kstack_lost": bool,                      # a kernel stack existed but was not recorded
                  "count", "period_ns"}],
     "softirq": [{"cpu", "vec", "name", "count", "time_ns"}],
     "counters": {"samples", "kstack_lost", "ustack_lost", "keys_full", "softirq_orphan"},
     "programs": ["on_cpu_sample", ...]}

Everything acquired (the BPF object, its links, the perf event fds they own) is released by close(), which the
trace's ExitStack calls on every exit path; a failure half-way through start() closes what was opened so far.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.bpf import libbpf
from cniprof.bpf.build import rebuild_hint
from cniprof.bpf.libbpf import Object, possible_cpus
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.probes import cpu_abi as abi
from cniprof.probes.probe import BpfProbe
from cniprof.probes.symbols import Kallsyms, UserSymbols
from cniprof.sysinfo import online_cpus

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: a command that does not need it does not wait for it
    np = lazy_loader.load("numpy")

DEFAULT_FREQ_HZ = 999
MAX_SAMPLE_RATE = "/proc/sys/kernel/perf_event_max_sample_rate"
SNAPSHOT_VERSION = 1


def check_freq(freq_hz: int) -> int:
    """A usable sampling frequency, or a one-line UsageError naming the kernel's limit."""
    limit = 100_000
    try:
        limit = int(Path(MAX_SAMPLE_RATE).read_text())
    except (OSError, ValueError):
        pass
    if not 1 <= freq_hz <= limit:
        raise UsageError(f"--cpu-freq must be between 1 and {limit} Hz (kernel.perf_event_max_sample_rate), "
                         f"not {freq_hz}")
    return freq_hz


class CpuSampler(BpfProbe):
    """Load, attach (perf events on every online CPU + softirq tracepoints), read snapshots, close."""

    def __init__(self, obj_path: Path, freq_hz: int = DEFAULT_FREQ_HZ, user_stacks: bool = True,
                 cpus: list[int] | None = None):
        self.freq_hz = check_freq(int(freq_hz))
        self.cpus = list(cpus) if cpus is not None else online_cpus()
        self.ncpu = possible_cpus()
        self.obj = Object(obj_path)
        self.attached: list[str] = []
        self.started_at: float | None = None
        self.kallsyms: Kallsyms | None = None
        self.users = UserSymbols()
        self._kcache: dict[int, tuple[str, ...]] = {}
        self._ucache: dict[tuple[int, int], tuple[str, ...]] = {}
        self._knames: dict[int, str | None] = {}
        self._reloaded = False
        try:
            rodata = self.obj.rodata()
            if len(rodata) != ctypes.sizeof(abi.CpuCfg):
                raise EnvironmentProblem(f"{obj_path.name}: .rodata is {len(rodata)} bytes, expected "
                                         f"{ctypes.sizeof(abi.CpuCfg)}: {rebuild_hint()}")
            cfg = abi.CpuCfg(int(user_stacks), 0)
            ctypes.memmove(rodata, ctypes.byref(cfg), ctypes.sizeof(cfg))
        except BaseException:
            self.obj.close()
            raise

    def start(self) -> None:
        """Load and attach, then read kallsyms (after the load, so that BPF programs loaded so far, ours and
        the hop probe's, have their symbols)."""
        self.obj.load()
        self.check_maps(abi.MAP_TYPES)
        for name in ("on_softirq_entry", "on_softirq_exit"):
            try:
                self.obj.attach(name)
            except OSError as e:
                raise EnvironmentProblem(f"cannot attach {abi.ATTACH_POINT[name]}: {libbpf.errno_text(e.errno)}") from None
            self.attached.append(name)
        for cpu in self.cpus:
            self._attach_cpu(cpu)
        self.attached.append("on_cpu_sample")
        self.kallsyms = Kallsyms.load()
        self.started_at = time.monotonic()

    def _attach_cpu(self, cpu: int) -> None:
        try:
            fd = libbpf.perf_event_open(libbpf.cpu_clock_attr(self.freq_hz), pid=-1, cpu=cpu)
        except OSError as e:
            hint = " (kernel.perf_event_paranoid or not root?)" if e.errno in (errno.EACCES, errno.EPERM) else ""
            raise EnvironmentProblem(f"perf_event_open(cpu-clock, CPU {cpu}) failed: "
                                     f"{libbpf.errno_text(e.errno)}{hint}") from None
        try:
            libbpf.attach_perf_event(self.obj, "on_cpu_sample", fd)
        except OSError as e:
            os.close(fd)  # a failed attach leaves the fd with us; a link owns it otherwise
            raise EnvironmentProblem(f"attaching the CPU sampler to CPU {cpu} failed: "
                                     f"{libbpf.errno_text(e.errno)}") from None

    # --- reading (close() is BpfProbe's: destroying the links disables and closes their perf event fds) ---

    def _raw_stack(self, map_name: str, stack_id: int) -> list[int]:
        size = ctypes.sizeof(abi.STACK_VALUE if map_name == "kstacks" else abi.USTACK_VALUE)
        raw = self.obj.map(map_name).lookup_raw(ctypes.c_uint32(stack_id), size)
        if raw is None:
            return []
        ips = np.frombuffer(raw, dtype=np.uint64)
        return [int(a) for a in ips if a]

    def _kstack(self, stack_id: int) -> tuple[str, ...]:
        # a stack id always names the same stack while the map lives (collisions return -EEXIST instead)
        if stack_id not in self._kcache:
            assert self.kallsyms is not None
            addrs = self._raw_stack("kstacks", stack_id)
            if not self._reloaded and any(self._kname(a) is None for a in addrs):
                # code that appeared after kallsyms was read (a BPF program loaded later): read it again, once
                # per capture (parsing costs ~0.2 s; addresses no symbol covers would trigger it every time)
                self.kallsyms = Kallsyms.load()
                self._knames.clear()
                self._reloaded = True
            self._kcache[stack_id] = tuple(self._kname(a) or f"0x{a:x}" for a in addrs)
        return self._kcache[stack_id]

    def _kname(self, addr: int) -> str | None:
        """kallsyms lookup with a cache: the same return addresses recur in most stacks."""
        if addr not in self._knames:
            assert self.kallsyms is not None
            self._knames[addr] = self.kallsyms.lookup(addr)
        return self._knames[addr]

    def _ustack(self, tgid: int, stack_id: int) -> tuple[str, ...]:
        key = (tgid, stack_id)
        if key not in self._ucache:
            self._ucache[key] = tuple(self.users.stack(tgid, self._raw_stack("ustacks", stack_id)))
        return self._ucache[key]

    def _counts(self, counts: libbpf.Map) -> list[tuple[abi.CpuKey, abi.CpuVal]]:
        """All entries of the counts map: one batch syscall, or key by key where batching is unsupported."""
        ks, vs = ctypes.sizeof(abi.CpuKey), ctypes.sizeof(abi.CpuVal)
        try:
            keys, values, n = libbpf.lookup_batch(counts, abi.CPU_MAX_KEYS)
        except OSError:
            out = []
            for key in counts.keys(abi.CpuKey):
                raw = counts.lookup_raw(key, vs)
                if raw is not None:
                    out.append((key, abi.CpuVal.from_buffer_copy(raw)))
            return out
        return [(abi.CpuKey.from_buffer_copy(keys, i * ks), abi.CpuVal.from_buffer_copy(values, i * vs))
                for i in range(n)]

    def snapshot(self) -> dict[str, Any]:
        """The CPU snapshot (module docstring): counts so far, every stack symbolized, softirq time per CPU."""
        self.users.new_round()
        stacks: list[tuple[str, ...]] = []
        index: dict[tuple[str, ...], int] = {}

        def intern(frames: tuple[str, ...]) -> int | None:
            if not frames:
                return None
            if frames not in index:
                index[frames] = len(stacks)
                stacks.append(frames)
            return index[frames]

        counts = self.obj.map("counts")
        samples = []
        for key, val in self._counts(counts):
            ks = self._kstack(key.kstack) if key.kstack >= 0 else ()
            us = self._ustack(key.tgid, key.ustack) if key.ustack >= 0 else ()
            samples.append({
                "tgid": key.tgid, "comm": key.comm.decode(errors="replace"), "cpu": key.cpu,
                "softirq": abi.SOFTIRQ_NAMES[key.softirq - 1] if 0 < key.softirq <= abi.CPU_NR_SOFTIRQS else None,
                "kstack": intern(ks), "ustack": intern(us),
                "kstack_lost": key.kstack < 0 and key.kstack != -errno.EFAULT,
                "count": int(val.count), "period_ns": int(val.period_ns),
            })
        softirq = []
        for vec, name in enumerate(abi.SOFTIRQ_NAMES):
            per_cpu = self.percpu("softirqs", ctypes.c_uint32(vec), abi.SoftirqStat)
            if per_cpu is None:
                continue
            for cpu, (count, time_ns) in enumerate(per_cpu[:, :2]):
                if count:
                    softirq.append({"cpu": cpu, "vec": vec, "name": name, "count": int(count),
                                    "time_ns": int(time_ns)})
        counters = {name: self.u64_sum("cpu_counters", i) for i, name in enumerate(abi.COUNTERS)}
        return {
            "version": SNAPSHOT_VERSION,
            "freq_hz": self.freq_hz,
            "elapsed_s": time.monotonic() - self.started_at if self.started_at else 0.0,
            "cpus": list(self.cpus),
            "profiler_tgid": os.getpid(),
            "stacks": [list(s) for s in stacks],
            "samples": sorted(samples, key=lambda s: -s["count"]),
            "softirq": softirq,
            "counters": counters,
            "programs": list(self.attached),
        }
