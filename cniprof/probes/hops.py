# SPDX-License-Identifier: Apache-2.0
"""User-space half of bpf/hops.bpf.c: registers probe points, their directions and expected hop pairs, attaches only the
programs the points need, and reads the in-kernel aggregates into a Snapshot (see ARCHITECTURE.md)."""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import mmap
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.bpf.btf import drop_reason_names, has_drop_reasons
from cniprof.bpf.build import rebuild_hint
from cniprof.bpf.libbpf import Object, RingBuffer, possible_cpus, prog_id
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.probes import hops_abi as abi
from cniprof.probes.plan import Direction, ExpectedHop, Point
from cniprof.probes.probe import BpfProbe
from cniprof.probes.sampling import AUTO_TRACKED_PER_S


def reason_names() -> dict[int, str]:
    """Drop reason value -> name on this kernel, with DROP_REASON_UNKNOWN as 'unknown' (kernels without reasons)."""
    names = drop_reason_names() if has_drop_reasons() else {}
    return {**names, abi.DROP_REASON_UNKNOWN: "unknown"}

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: a command that does not need it does not wait for it
    np = lazy_loader.load("numpy")


def _ip_u32(ip: str) -> int:
    # network byte order as the kernel stores it, read back as a little/big-endian-native u32
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little" if _LITTLE else "big")


_LITTLE = sys.byteorder == "little"
# a program that read the settings just before a freeze runs to its end within microseconds (tracepoint programs
# run with preemption off); 10 ms is far beyond that
FREEZE_SETTLE_S = 0.01


@functools.cache
def _track_dtype() -> np.dtype:
    """struct skb_track as numpy reads it from the mmapped table (offsets from the ctypes mirror); built on first
    use, so importing this module loads no numpy."""
    return np.dtype({"names": ["skb", "last_ns", "last_pt", "epoch"],
                         "formats": [np.uint64, np.uint64, np.uint32, np.uint32],
                         "offsets": [abi.SkbTrack.skb.offset, abi.SkbTrack.last_ns.offset,
                                     abi.SkbTrack.last_pt.offset, abi.SkbTrack.epoch.offset],
                     "itemsize": (ctypes.sizeof(abi.SkbTrack) + 7) // 8 * 8})


# BPF atomics (compare-and-swap of a slot's key) arrived in Linux 5.12; older kernels get bpf/hops_legacy.bpf.c
ATOMICS_SINCE = (5, 12)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as 6.18.44-fc-v1272; (0, 0) when it does not parse."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def object_name(release: str | None = None) -> str:
    """The hop object for this kernel: "hops", or "hops_legacy" (no BPF atomics) before 5.12."""
    return "hops" if kernel_version(release) >= ATOMICS_SINCE else "hops_legacy"


class HopProbe(BpfProbe):
    """Load, configure and attach the hop tracker; read snapshots; detach on close (also on errors)."""

    tracked_budget_per_s = AUTO_TRACKED_PER_S  # packets per second `--sample auto` lets it track

    def __init__(self, obj_path: Path, points: Sequence[Point], expected: Sequence[ExpectedHop],
                 directions: Sequence[Direction], stale_ms: float = 1000.0, sample_every: int = 1,
                 filter_flows: bool = True, agent: bool = False, max_records_per_s: int = 5000):
        """agent: node agent mode (ARCHITECTURE.md "Node agents"): start points sample by the packets' identity
        and points with `record` set write records to the ring buffer (drain_records); off, none of that code is
        in the verified programs."""
        if len(points) > abi.MAX_POINTS:
            raise CniprofError(f"{len(points)} probe points; at most {abi.MAX_POINTS} are supported")
        if len(expected) >= abi.MAX_HOPS:
            raise CniprofError(f"{len(expected)} expected hops; at most {abi.MAX_HOPS - 1} are supported")
        if len({(h.src, h.dst) for h in expected}) != len(expected):
            raise CniprofError("two expected hops share the same pair of points; the chains are ambiguous")
        self.points = points
        self.expected = expected
        self.directions = directions
        self.obj = Object(obj_path)
        self.ncpu = possible_cpus()
        self.started_at: float | None = None
        self.attached: list[str] = []  # the programs attached at some point of the run (what the report lists)
        self.frozen = False
        self.epoch = 0  # bumped by reset_stats; the kernel counts into counter set epoch & 1
        self.no_starts = 0  # duty cycling's drain (cniprof.probes.duty)
        self.window_ns = 0  # CLOCK_MONOTONIC of the latest attach
        self.stale_ns = int(stale_ms * 1e6)
        self._tracks: mmap.mmap | None = None
        self.agent = agent
        self.ring: RingBuffer | None = None
        self.status: dict | None = None  # set by whoever duty-cycles the probe (cniprof.probes.duty); in snapshots
        try:
            self._configure(stale_ms, sample_every, filter_flows, max_records_per_s)
        except BaseException:
            self.obj.close()
            raise

    def _configure(self, stale_ms: float, sample_every: int, filter_flows: bool, max_records_per_s: int) -> None:
        rodata = self.obj.rodata()
        if len(rodata) != ctypes.sizeof(abi.HopsCfg):
            raise EnvironmentProblem(f"{self.obj.path.name}: .rodata is {len(rodata)} bytes, expected "
                                     f"{ctypes.sizeof(abi.HopsCfg)}: {rebuild_hint()}")
        # the events that have a start point: elsewhere the kernel leaves untracked packets before any lookup
        start_events = sum({1 << abi.EVENTS[p.event] for p in self.points if p.start_dir is not None})
        cfg = abi.HopsCfg(int(stale_ms * 1e6), start_events, int(filter_flows), int(self.agent),
                          int(max_records_per_s))
        if not self.agent:  # the single tracer never writes records: the smallest ring the kernel allows
            self.obj.set_max_entries("records", os.sysconf("SC_PAGE_SIZE"))
        self.sample_every = max(1, sample_every)
        ctypes.memmove(rodata, ctypes.byref(cfg), ctypes.sizeof(cfg))
        events = {p.event for p in self.points}
        # one kfree_skb program: with the reason argument where the kernel has one (5.17+), else without
        self.drop_program = abi.DROP_PROGRAMS[has_drop_reasons()]
        wanted = ({abi.PROGRAM_OF_EVENT[e] for e in events} | set(abi.END_PROGRAMS) - {"on_kfree_skb"}
                  | {self.drop_program})
        for name in self.obj.program_names():
            self.obj.set_autoload(name, name in wanted)
        self.programs = [n for n in self.obj.program_names() if n in wanted]

    def start(self) -> None:
        """Load once and attach every program."""
        self.load()
        self.attach()
        self.started_at = time.monotonic()

    def load(self) -> None:
        reason_names()  # read from the kernel's BTF now, not while the traffic is measured
        self.obj.load()
        self.check_maps(abi.MAP_TYPES)
        self._tracks = self.obj.map("tracks").mmap_readonly(abi.TRACK_SLOTS)
        self._write_points()
        if self.agent:
            self.ring = RingBuffer(self.obj.map("records"))
        self.set_sample_every(self.sample_every)
        slots = self.obj.map("pair_slot")
        for slot, h in enumerate(self.expected, start=1):
            slots.update(ctypes.c_uint32(h.src * abi.MAX_POINTS + h.dst), ctypes.c_uint32(slot))

    @property
    def is_attached(self) -> bool:
        return bool(self.obj.links)

    def attach(self) -> None:
        """Attach every program (the object stays loaded in between: maps and aggregates are kept).

        Slots last touched before this moment belong to packets that were in flight at the previous detach: the
        kernel ends them as `cut` when their address comes back, instead of timing a hop across the gap."""
        self.window_ns = time.monotonic_ns()  # CLOCK_MONOTONIC, bpf_ktime_get_ns()'s clock
        self._write_settings()
        for name in self.programs:
            self.obj.attach(name)
            if name not in self.attached:
                self.attached.append(name)

    def detach(self) -> None:
        """Detach every program: the tracepoints cost nothing until the next attach."""
        self.obj.detach_all()

    def set_starts(self, on: bool) -> None:
        """Let packets start tracking (on) or not (off: the packets in flight finish, no new ones begin)."""
        self.no_starts = 0 if on else 1
        self._write_settings()


    def _write_points(self) -> None:
        by_dev: dict[tuple[int, int], abi.DevSlot] = {}
        infos = self.obj.map("point_info")
        addrs = {d.dir: (_ip_u32(d.src_ip), _ip_u32(d.dst_ip)) for d in self.directions}
        for pid, p in enumerate(self.points):
            slot = by_dev.setdefault((p.netns_ino, p.ifindex), abi.DevSlot(p.netns_ino, p.ifindex))
            slot.pt[abi.EVENTS[p.event]] = pid + 1
            # a pod's own device is where packets enter the topology: other packets seen there end any stale
            # tracking (whatever the device's kind: veth, macvlan ...)
            reset = p.event == "queue" and p.pod is not None and p.device != "socket"
            flags = ((abi.PT_START if p.start_dir is not None else 0) | (abi.PT_END if p.end else 0)
                     | (abi.PT_RESET if reset else 0) | sum(abi.REC_FLAGS[k] for k in p.record))
            saddr, daddr = addrs.get(p.start_dir, (0, 0)) if p.start_dir is not None else (0, 0)
            infos.update(ctypes.c_uint32(pid), abi.PointInfo(flags, p.start_dir or 0, saddr, daddr))
        table: dict[int, abi.DevSlot] = {}
        for (netns, ifindex), slot in by_dev.items():
            base = abi.dev_hash(netns, ifindex)
            free = next((i for i in range(abi.DEV_PROBES) if (base + i) % abi.DEV_SLOTS not in table), None)
            if free is None:
                raise CniprofError(f"too many probe points hash together (netns {netns}, ifindex {ifindex})")
            table[(base + free) % abi.DEV_SLOTS] = slot
        devs = self.obj.map("devs")
        for idx, slot in table.items():
            devs.update(ctypes.c_uint32(idx), slot)

    def set_sample_every(self, n: int) -> None:
        """Track 1 in n packets from now on (takes effect immediately in the kernel)."""
        self.sample_every = max(1, int(n))
        self._write_settings()

    def _write_settings(self) -> None:
        self.obj.map("settings").update(ctypes.c_uint32(0),
                                        abi.HopsSettings(self.sample_every, self.epoch, int(self.frozen),
                                                         self.no_starts, self.window_ns))

    def freeze(self) -> None:
        """Stop every aggregate from changing (the programs stay attached but return at once), so that the next
        snapshot is one consistent cut: started == the ends + the packets still in the table, exactly, even while
        traffic flows. For the final read of a run."""
        self.frozen = True
        self._write_settings()
        time.sleep(FREEZE_SETTLE_S)

    def reset_stats(self) -> None:
        """Zero every aggregate (histograms, counters, drops, ends, unexpected pairs) and start a new epoch.

        Used when auto sampling switches N after calibration, so a report never mixes two sampling rates. Packets
        in flight stay tracked for their hops, but they belong to the old epoch: their ends are not counted in the
        new one (nor were their starts), so the accounting of the new epoch stays exact. The next epoch's counter
        set is zeroed before the kernel switches to it."""
        zero_u64 = (ctypes.c_uint64 * self.ncpu)()
        nxt = (self.epoch + 1) & 1
        for i in range(abi.C_COUNT):
            self.obj.map("counters").update(ctypes.c_uint32(nxt * abi.C_COUNT + i), zero_u64)
        self.epoch += 1
        self._write_settings()
        zero_hist = (ctypes.c_uint8 * (ctypes.sizeof(abi.Hist) * self.ncpu))()
        for slot in [*range(1, len(self.expected) + 1), *(abi.MAX_HOPS + d.dir for d in self.directions)]:
            self.obj.map("hists").update(ctypes.c_uint32(slot), zero_hist)
        for name, key_type in (("odd_pairs", ctypes.c_uint32), ("drops", abi.DropKey), ("ends", abi.EndKey)):
            m = self.obj.map(name)
            for key in m.keys(key_type):
                m.delete(key)
        if self.ring is not None:  # records of the old sampling rate are not sent
            for i in range(abi.RC_COUNT):
                self.obj.map("rec_counts").update(ctypes.c_uint32(i), zero_u64)
            # a new rate-limit window: the calibration's burst must not eat the first window's budget
            self.obj.map("rec_window").update(ctypes.c_uint32(0), abi.RecWindow(0, 0))
            self.ring.drain()
        self.started_at = time.monotonic()

    def drain_records(self) -> bytes:
        """Agent mode: the records written since the last call (struct hop_record each, host byte order)."""
        return self.ring.drain() if self.ring is not None else b""

    def record_counters(self) -> dict[str, int]:
        """Agent mode: records sent, refused by the rate limit and refused by a full ring (REC_COUNTERS)."""
        return {name: self.u64_sum("rec_counts", i) for i, name in enumerate(abi.REC_COUNTERS)}

    def prog_ids(self) -> list[int]:
        """The kernel ids of the attached programs (what `bpftool prog`/`link show` list)."""
        return [prog_id(self.obj.prog_fd(name)) for name in self.attached]

    def counter(self, name: str) -> int:
        """One of the probe's counters (abi.COUNTERS) of the current epoch's set, summed over the CPUs."""
        return self.u64_sum("counters", (self.epoch & 1) * abi.C_COUNT + abi.COUNTERS.index(name))

    def close(self) -> None:
        if self._tracks is not None:
            self._tracks.close()
            self._tracks = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        super().close()

    # --- reading ---

    def _hist(self, slot: int) -> dict:
        v = self.percpu_sum("hists", ctypes.c_uint32(slot), abi.Hist)
        if v is None:
            return {"count": 0, "sum_ns": 0, "buckets": {}}
        buckets = v[2:2 + abi.HIST_BUCKETS]
        nz = np.nonzero(buckets)[0]
        return {"count": int(v[0]), "sum_ns": int(v[1]), "buckets": {str(int(i)): int(buckets[i]) for i in nz}}

    def _live(self) -> list[dict]:
        """Packets of this epoch still in the tracking table, per last point: in flight (seen within stale_ms) or
        stale (not seen since; the kernel counts them as stale when their slot or address comes back)."""
        if self._tracks is None:
            return []
        now = time.monotonic_ns()  # CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns
        t = np.frombuffer(self._tracks, dtype=_track_dtype(), count=abi.TRACK_SLOTS)
        mine = t[(t["skb"] != 0) & (t["epoch"] == self.epoch & 0xFFFFFFFF)]
        age = now - mine["last_ns"].astype(np.int64)
        # in flight at a detach of duty cycling (last seen before the current attach): cut, whatever its age
        cut = mine["last_ns"] < np.uint64(self.window_ns)
        stale = (age > self.stale_ns) & ~cut
        out = []
        for pt in np.unique(mine["last_pt"]):
            at = mine["last_pt"] == pt
            row = {"point": int(pt), "in_flight": int((at & ~stale & ~cut).sum()), "stale": int((at & stale).sum())}
            if cut.any():
                row["cut"] = int((at & cut).sum())
            out.append(row)
        return out

    def snapshot(self) -> dict:
        hops = []
        for slot, e in enumerate(self.expected, start=1):
            hops.append({"from": e.src, "to": e.dst, "expected": True, "dir": e.dir, "seq": e.seq, "role": e.role,
                         "in_e2e": e.in_e2e, **self._hist(slot)})
        for key in self.obj.map("odd_pairs").keys(ctypes.c_uint32):
            v = self.percpu_sum("odd_pairs", key, abi.PairStat)
            if v is None:
                continue
            a, b = divmod(key.value, abi.MAX_POINTS)
            hops.append({"from": a, "to": b, "expected": False, "count": int(v[0]), "sum_ns": int(v[1]),
                         "buckets": {}})
        e2e = [{"dir": d.dir, **self._hist(abi.MAX_HOPS + d.dir)} for d in self.directions]
        names = reason_names()
        drops = []
        for key in self.obj.map("drops").keys(abi.DropKey):
            v = self.percpu_sum("drops", key, ctypes.c_uint64)
            if v is not None:
                drops.append({"point": key.point, "reason": key.reason,
                              "reason_name": names.get(key.reason, f"reason_{key.reason}"), "count": int(v[0])})
        ends = []
        em = self.obj.map("ends")
        for key in em.keys(abi.EndKey):
            v = self.percpu_sum("ends", key, ctypes.c_uint64)
            if v is not None and key.kind < len(abi.END_KINDS):
                ends.append({"point": key.point, "kind": abi.END_KINDS[key.kind], "count": int(v[0])})
        counters = {name: self.counter(name) for name in abi.COUNTERS}
        live = self._live()
        counters["in_flight"] = sum(r["in_flight"] for r in live)
        counters["stale_in_table"] = sum(r["stale"] for r in live)
        counters["cut_in_table"] = sum(r.get("cut", 0) for r in live)
        return {
            "version": 1,
            "elapsed_s": time.monotonic() - self.started_at if self.started_at else 0.0,
            "points": [{"id": i, **{k: v for k, v in asdict(p).items()}} for i, p in enumerate(self.points)],
            "hops": hops,
            "e2e": e2e,
            "drops": drops,
            "ends": ends,
            "live": live,
            "counters": counters,
            "directions": [asdict(d) for d in self.directions],
            "programs": list(self.attached),
            "sample_every": self.sample_every,
            **({"overhead": dict(self.status)} if self.status is not None else {}),
        }
