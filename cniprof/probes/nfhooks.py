# SPDX-License-Identifier: Apache-2.0
"""Netfilter cost per IPv4 hook (user-space half of bpf/nfhooks.bpf.c).

What it measures: for each chosen namespace and each hook (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING), the
time from the first to the last priority of the hook for every packet of the chosen addresses, i.e. what every
iptables/nftables chain, conntrack, defragmentation and NAT on that hook cost that packet; as a log-linear
histogram with the hop histograms' buckets. Packets that entered a hook and never left it (dropped or stolen by
a rule) are counted as `unclosed`.

How: BPF netfilter links (Linux 6.4+), created with raw bpf() from a helper thread inside each namespace
(cniprof/bpf/nflink.py). Where links are refused: fentry/fexit on nf_hook_slow, which runs all the hook
functions of one hook for one packet (x86_64 5.5+, arm64 6.4+), else kprobe/kretprobe on it (any kernel with
kprobes). The snapshot's "attach" says which ran; the doctor's calibration chooses it (features.best_for).

Snapshot:
    {"version": 1, "attach": "netfilter_link", "elapsed_s": float, "addresses": [ip, ...],
     "priorities": {"first": int, "last": int},
     "hooks": [{"netns", "netns_ino", "node", "hook", "count", "sum_ns", "buckets": {"<idx>": n}, "unclosed"}],
     "return_probe": {"maxactive": int | None, "event": str, "missed": int | None}}  # kprobe attach only
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.bpf import libbpf, nflink, tracefs
from cniprof.bpf.build import object_path, rebuild_hint
from cniprof.bpf.features import calibrate
from cniprof.bpf.libbpf import Object, errno_text, possible_cpus
from cniprof.bpf.prog_stats import prog_stats
from cniprof.cni.topology import Topology
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.netns_exec import call_in
from cniprof.probes import nfhooks_abi as abi
from cniprof.probes.probe import BpfProbe

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: a command that does not need it does not wait for it
    np = lazy_loader.load("numpy")

if TYPE_CHECKING:
    from cniprof.bpf.features import Features

OBJECT = "nfhooks"
NETNS_DIR = Path("/run/netns")
HOOKS = tuple(nflink.HOOK_ENUMS)  # PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING
PRIORITY_FIRST = nflink.NF_IP_PRI_FIRST + 1
PRIORITY_LAST = nflink.NF_IP_PRI_LAST - 1


def select_attach(features: Features) -> str:
    """The attach type for netfilter cost on this kernel, or a one-line EnvironmentProblem saying why none works.

    Preference: netfilter links, then fentry, then kprobe on nf_hook_slow (features.PURPOSES["netfilter"]).
    """
    best = features.best_for("netfilter")
    if best is not None:
        return best
    raise EnvironmentProblem(f"netfilter cost per hook is unavailable: this kernel refuses BPF netfilter links "
                             f"({features.netfilter_link.detail}), fentry ({features.fentry.detail}) and kprobes "
                             f"({features.kprobe.detail}): run without --nf")


def netns_path(name: str) -> str:
    """A name in /run/netns, or an nsfs path as is (e.g. /proc/1/ns/net for the root namespace)."""
    return name if name.startswith("/") else str(NETNS_DIR / name)


def _ip_u32(ip: str) -> int:
    """An IPv4 address in network byte order, read back as a native u32 (how the program compares it)."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, sys.byteorder)


class NfHookProbe(BpfProbe):
    """Time every IPv4 netfilter hook of some namespaces for packets of some addresses.

    netns_names: namespaces in /run/netns (or nsfs paths); addresses: IPv4 addresses, a packet is timed when
    its source or destination (as it enters the hook) is one of them, None = every packet; labels: netns ->
    node name for the snapshot; features: a calibration to choose the attach type from (default: calibrate now).

    Use as `with NfHookProbe(...) as p: p.start(); ...; p.snapshot()`; close() (also on errors, Ctrl-C and
    exit of the with block) detaches every link and closes every fd.
    """

    def __init__(self, netns_names: Sequence[str], addresses: Iterable[str] | None = None,
                 labels: Mapping[str, str] | None = None, features: Features | None = None,
                 obj_path: Path | None = None):
        names = list(dict.fromkeys(netns_names))
        if not names:
            raise UsageError("netfilter cost probe: no namespace given")
        if len(names) > abi.NF_MAX_NETNS:
            raise UsageError(f"netfilter cost probe: {len(names)} namespaces; at most {abi.NF_MAX_NETNS}")
        self.addresses = [] if addresses is None else list(dict.fromkeys(addresses))
        if addresses is not None and not self.addresses:
            raise UsageError("netfilter cost probe: an empty address filter would time nothing; pass None for all")
        if len(self.addresses) > abi.NF_MAX_ADDRS:
            raise UsageError(f"netfilter cost probe: {len(self.addresses)} addresses; at most {abi.NF_MAX_ADDRS}")
        for ip in self.addresses:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise UsageError(f"netfilter cost probe: {ip!r} is not an IPv4 address") from None
        self.netns = names
        self.labels = dict(labels or {})
        self.features = features
        self.obj_path = obj_path
        self.inodes: list[int] = []
        self.attach: str | None = None
        self.obj: Object | None = None
        self.links = nflink.LinkSet()
        self.ncpu = 0
        self.started_at: float | None = None
        self.return_event: tracefs.ReturnProbeEvent | None = None
        self.return_probe: dict | None = None  # kprobe attach: how the kretprobe was made (snapshot "return_probe")

    @classmethod
    def for_topology(cls, topology: Topology, addresses: Iterable[str] | None = None,
                     nodes: Sequence[str] | None = None, features: Features | None = None) -> NfHookProbe:
        """Every node namespace of a lab (or the named nodes), labelled with the node names."""
        chosen = [n for n in topology.nodes if nodes is None or n.name in nodes]
        if nodes is not None and len(chosen) != len(set(nodes)):
            missing = sorted(set(nodes) - {n.name for n in chosen})
            raise UsageError(f"no node {', '.join(missing)} in the {topology.cni} lab")
        return cls([n.netns for n in chosen], addresses, labels={n.netns: n.name for n in chosen},
                   features=features)

    # --- attaching
    def start(self) -> None:
        """Choose the attach type, load, configure and link in every namespace; on any failure close everything."""
        if self.obj is not None:
            raise UsageError("netfilter cost probe already started")
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        if os.geteuid() != 0:
            raise EnvironmentProblem("the netfilter cost probe loads BPF programs: run as root")
        self.inodes = [self._inode(n) for n in self.netns]
        if self.features is None:
            self.features = calibrate()
        self.attach = select_attach(self.features)
        hooks = nflink.hook_numbers()
        if [hooks[h] for h in HOOKS] != list(range(abi.NF_HOOKS)):
            raise EnvironmentProblem(f"enum nf_inet_hooks has unexpected values {hooks} in this kernel's BTF; "
                                     "bpf/nfhooks.bpf.c indexes hooks 0..4")
        self.ncpu = possible_cpus()
        self.obj = Object(self.obj_path or object_path(OBJECT))
        for name in self.obj.program_names():  # only the chosen pair: one refused program fails the whole load
            self.obj.set_autoload(name, name in abi.PROGRAMS_OF[self.attach])
        if self.attach != "netfilter_link":
            self._start_traced()
            return
        c = nflink.constants()
        for name in abi.PROGRAMS:
            try:
                libbpf.set_program_type(self.obj, name, c.prog_type, c.attach_type)
            except KeyError:
                raise EnvironmentProblem(f"{self.obj.path.name} has no program {name}: "
                                         f"{rebuild_hint()}") from None
        self.obj.load()
        self.check_maps(abi.MAP_TYPES)
        self._configure()
        fds = {name: self.obj.prog_fd(name) for name in abi.PROGRAMS}
        for netns in self.netns:
            call_in(netns_path(netns), lambda netns=netns: self._link_all(c, fds, netns))
        self.started_at = time.monotonic()

    def _start_traced(self) -> None:
        """fentry/fexit or kprobe/kretprobe on nf_hook_slow: one pair of programs for every namespace and hook
        (the namespaces are filtered in BPF). Chosen only where the doctor's calibration found the type allowed.
        The kretprobe goes through a tracefs event with enough instances for the nested calls (see
        cniprof/bpf/tracefs.py); where tracefs refuses it, through libbpf with the kernel's default."""
        self.obj.load()
        self.check_maps(abi.MAP_TYPES)
        self._configure()
        for name in abi.PROGRAMS_OF[self.attach]:
            try:
                if name == abi.KPROBE_RETURN:
                    self._attach_return(name)
                else:
                    self.obj.attach(name)
            except OSError as e:
                raise EnvironmentProblem(f"cannot attach the netfilter cost probe ({self.attach}) to nf_hook_slow: "
                                         f"{errno_text(e.errno)}") from None
        self.started_at = time.monotonic()

    def _attach_return(self, name: str) -> None:
        event = tracefs.ReturnProbeEvent("nf_hook_slow", tracefs.maxactive_for(self.ncpu))
        try:
            perf_fd = event.create()
        except (OSError, EnvironmentProblem) as e:
            event.remove()
            reason = errno_text(e.errno) if isinstance(e, OSError) else str(e)
            self.return_probe = {"maxactive": None, "why_default": f"tracefs kretprobe event refused: {reason}"}
            self.obj.attach(name)
            return
        self.return_event = event
        try:
            libbpf.attach_perf_event(self.obj, name, perf_fd)
        except OSError:
            os.close(perf_fd)  # not owned by a link when the attach failed
            raise
        self.return_probe = {"maxactive": event.maxactive, "event": f"{tracefs.GROUP}/{event.name}"}

    def _programs(self) -> tuple[str, ...]:
        return abi.PROGRAMS_OF[self.attach] if self.attach else ()

    @staticmethod
    def _inode(name: str) -> int:
        try:
            return os.stat(netns_path(name)).st_ino
        except FileNotFoundError:
            raise UsageError(f"network namespace {name!r} does not exist (no {netns_path(name)})") from None

    def _configure(self) -> None:
        zero = ctypes.c_uint32(0)
        ns = abi.NfNetns(len(self.inodes))
        for i, ino in enumerate(self.inodes):
            ns.ino[i] = ino
        self.obj.map("netns").update(zero, ns)
        flt = abi.NfFilter(len(self.addresses))
        for i, ip in enumerate(self.addresses):
            flt.addr[i] = _ip_u32(ip)
        self.obj.map("filter").update(zero, flt)

    def _link_all(self, c: nflink.NfConstants, fds: dict[str, int], netns: str) -> None:
        """In a thread inside netns: link both programs on every hook (closing program first)."""

        for name in abi.PROGRAMS:
            priority = PRIORITY_FIRST if name == "nf_first" else PRIORITY_LAST
            for hook in HOOKS:
                if self.links.closed:
                    return  # the caller gave up (Ctrl-C): link nothing more
                try:
                    fd = nflink.link_create(c, fds[name], c.hooks[hook], priority)
                except OSError as e:
                    raise EnvironmentProblem(f"cannot link the netfilter cost probe at {hook} in {netns}: "
                                             f"{errno_text(e.errno)}") from None
                self.links.add(fd)

    # --- reading
    def _pending(self) -> dict[tuple[int, int], int]:
        """Stamps not closed yet, per (netns index, hook): packets still inside a hook or dropped there."""
        size = ctypes.sizeof(abi.NfStamps)
        raw = self.obj.map("stamps").lookup_raw(ctypes.c_uint32(0), size * self.ncpu)
        out: dict[tuple[int, int], int] = {}
        if raw is None:
            return out
        n = abi.NF_HOOKS * abi.NF_STAMP_WAYS
        rec = np.dtype([("skb", "u8"), ("ts", "u8"), ("idx", "u4"), ("pad", "u4")])
        per_cpu = np.dtype([("s", rec, (n,)), ("scratch", "u8")])
        assert per_cpu.itemsize == size
        recs = np.frombuffer(raw, dtype=per_cpu)["s"].reshape(-1)  # CPU-major: index % n is the slot
        for i in np.nonzero(recs["skb"])[0]:
            hook = int(i) % n // abi.NF_STAMP_WAYS
            key = (int(recs["idx"][i]), hook)
            out[key] = out.get(key, 0) + 1
        return out

    def snapshot(self) -> dict:
        """Histograms and unclosed counts per (netns, hook), summed over CPUs (plain data, JSON-serialisable)."""
        if self.obj is None or self.started_at is None:
            raise UsageError("netfilter cost probe not started")
        pending = self._pending()
        hooks = []
        for idx, (netns, ino) in enumerate(zip(self.netns, self.inodes)):
            for h, hook in enumerate(HOOKS):
                slot = idx * abi.NF_HOOKS + h
                v = self.percpu_sum("hists", ctypes.c_uint32(slot), abi.Hist)
                if v is None:  # an array map always has the slot; a missing one reads as empty
                    v = np.zeros(ctypes.sizeof(abi.Hist) // 8, dtype=np.uint64)
                buckets = v[2:]
                nz = np.nonzero(buckets)[0]
                unclosed = self.u64_sum("unclosed", slot) + pending.get((idx, h), 0)
                hooks.append({
                    "netns": netns, "netns_ino": ino, "node": self.labels.get(netns), "hook": hook,
                    "count": int(v[0]), "sum_ns": int(v[1]),
                    "buckets": {str(int(i)): int(buckets[i]) for i in nz}, "unclosed": unclosed,
                })
        out = {
            "version": 1,
            "attach": self.attach,
            "elapsed_s": time.monotonic() - self.started_at,
            "addresses": list(self.addresses),
            "priorities": {"first": PRIORITY_FIRST, "last": PRIORITY_LAST},
            "hooks": hooks,
        }
        if self.return_probe is not None:
            # calls whose return went unprobed: their stamps are in "unclosed" (None: the kernel does not say)
            missed = self.return_event.missed() if self.return_event else None
            out["return_probe"] = {**self.return_probe, "missed": missed}
        return out

    def prog_stats(self) -> dict[str, dict[str, int]]:
        """Kernel run time and run count of each program (kernel.bpf_stats_enabled must be on while it runs)."""

        if self.obj is None:
            raise UsageError("netfilter cost probe not started")
        out = {}
        for name in self._programs():
            run_time_ns, run_cnt = prog_stats(self.obj.prog_fd(name))
            out[name] = {"run_time_ns": run_time_ns, "run_cnt": run_cnt}
        return out

    @property
    def link_count(self) -> int:
        return len(self.links)

    # --- closing
    def close(self) -> None:
        """Detach every link, then unload the programs. Idempotent; safe after a failed or interrupted start."""
        self.links.close()
        super().close()  # closes the kretprobe's perf event too (its link owns it)
        if self.return_event is not None:
            self.return_event.remove()
            self.return_event = None
        self.obj = None
        self.started_at = None
