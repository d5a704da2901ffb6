# SPDX-License-Identifier: Apache-2.0
"""Feature calibration: what this kernel lets cniprof load and attach, and what each absence costs in coverage.

Why probe instead of reading the kernel version: distributions backport BPF features, configs turn them off
(CONFIG_KPROBES), LSMs and lockdown refuse some program types, and tracefs may simply not be mounted. The only
reliable answer is to load and attach a tiny program of each kind (bpf/features.bpf.c) at the same places the
real probes use, and record the kernel's errno when it says no.

Every probe is independent: each program is loaded in its own bpf_object__load with every other program's
autoload off (one refused program fails the whole object load), and a probe that raises is recorded as
unavailable without stopping the others. Nothing is left behind: objects, links and perf events are closed,
the netfilter probe runs in a throwaway network namespace (`cpdoctor-probe`) that is deleted afterwards, and
the tracefs mount some probes need (when the host has none) lives in a private mount namespace of a helper
thread that dies with it.

`calibrate()` returns a Features value; run-time code picks attach types with `features.best_for("netfilter")`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.bpf import btf, libbpf, nflink
from cniprof.bpf.build import object_path
from cniprof.bpf.libbpf import errno_text
from cniprof.bpf.tracefs import TRACEFS, with_tracefs
from cniprof.bpf.tracefs import mounted as tracefs_mounted
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.netns_exec import enter_netns, in_thread
from cniprof.sysinfo import config_option

if TYPE_CHECKING:
    import pyroute2
else:  # imported on first use: a command that does not need it does not wait for it
    pyroute2 = lazy_loader.load("pyroute2")

# re-exported: the doctor's helper-thread runner moved to nflink, which the netfilter probe shares

OBJECT = "features"
PROBE_NETNS = "cpdoctor-probe"  # deliberately not cniprof-*: `lab down` owns that prefix
NETNS_DIR = Path("/run/netns")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
PERF_SAMPLE_FREQ = 1000
PERF_WAIT_S = 0.05
NETFILTER_PRIORITY = -128
LOCK_TIMEOUT_S = 30.0
SLOT_PERF_EVENT = 5  # index into hits[] of bpf/features.bpf.c (enum feature_slot)

# Display order; also the keys of Features.to_dict()["features"].
NAMES = (
    "btf", "tp_btf", "raw_tp", "tracepoint", "fentry", "kprobe",
    "perf_event", "netfilter_link", "ringbuf", "bpf_stats", "drop_reasons",
)

LABELS = {
    "btf": "BTF",
    "tp_btf": "tp_btf",
    "raw_tp": "raw_tp",
    "tracepoint": "tracepoint",
    "fentry": "fentry",
    "kprobe": "kprobe",
    "perf_event": "perf_event",
    "netfilter_link": "netfilter link",
    "ringbuf": "ring buffer",
    "bpf_stats": "bpf_stats",
    "drop_reasons": "drop reasons",
}

USED_FOR = {
    "btf": "CO-RE relocation of every cniprof program, typed tp_btf/fentry arguments, drop reason names",
    "tp_btf": "per-hop tracking on the net/skb tracepoints (net_dev_queue, net_dev_start_xmit, netif_rx, "
              "netif_receive_skb, skb_copy_datagram_iovec, kfree_skb/consume_skb)",
    "raw_tp": "fallback for tracepoints with untyped arguments",
    "tracepoint": "classic tracepoints through tracefs (fallback)",
    "fentry": "finer points inside the datapath: br_handle_frame, vxlan_xmit, vxlan_rcv, ip_rcv, ip_forward, "
              "nf_hook_slow, tcp_v4_rcv",
    "kprobe": "fallback for the finer points where fentry is refused",
    "perf_event": "CPU cost per hop: cpu-clock sampling with kernel stacks",
    "netfilter_link": "netfilter cost per hook: programs at the first and last priority of each hook bracket "
                      "the iptables/nftables chains",
    "ringbuf": "opt-in per-packet event export",
    "bpf_stats": "overhead benchmark: ns per event per program (run_time_ns / run_cnt)",
    "drop_reasons": "drop reasons by name (skb:kfree_skb reason argument)",
}

# Attach types (feature names) in order of preference for each purpose cniprof has.
PURPOSES: dict[str, tuple[str, ...]] = {
    "hops": ("tp_btf",),
    "fine_points": ("fentry", "kprobe"),
    "netfilter": ("netfilter_link", "fentry", "kprobe"),
    "cpu": ("perf_event",),
    "softirq": ("tp_btf", "raw_tp", "tracepoint"),
    "export": ("ringbuf",),
    "overhead": ("bpf_stats",),
}

_FINE_POINTS_OK = (
    "fine, hop tracking uses tp_btf on the net/skb tracepoints; fentry/kprobe only add finer points "
    "(br_handle_frame, vxlan_xmit, nf_hook_slow…) on kernels that have them"
)


@dataclass(frozen=True)
class Probe:
    """The result of one feature probe.

    detail: what happened (the kernel's errno text or the reason when unavailable); used_for: what cniprof uses
    the feature for; without: the coverage cniprof loses here when it is missing (given the other results).
    """

    name: str
    available: bool
    detail: str
    used_for: str = ""
    without: str = ""


@dataclass(frozen=True)
class Features:
    """Everything one calibration pass learned about this kernel."""

    kernel: str
    arch: str
    libbpf: str
    btf: Probe
    tp_btf: Probe
    raw_tp: Probe
    tracepoint: Probe
    fentry: Probe
    kprobe: Probe
    perf_event: Probe
    netfilter_link: Probe
    ringbuf: Probe
    bpf_stats: Probe
    drop_reasons: Probe

    def probes(self) -> tuple[Probe, ...]:
        return tuple(getattr(self, name) for name in NAMES)

    def __getitem__(self, name: str) -> Probe:
        if name not in NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def available(self, name: str) -> bool:
        return self[name].available

    def best_for(self, purpose: str) -> str | None:
        """The preferred attach type (a feature name) this kernel allows for purpose, or None."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}")
        return next((name for name in PURPOSES[purpose] if self.available(name)), None)

    def choices(self) -> dict[str, str | None]:
        """The probe type `trace` uses for each of its features on this kernel (None: the feature is off here).

        The probes decide with the same calls: HopProbe's kfree_skb program follows btf.has_drop_reasons() (the
        drop_reasons probe), NfHookProbe.select_attach() is best_for("netfilter"), the CPU sampler needs
        perf_event. tests/vm/guest.py checks on every matrix kernel that a trace reports exactly these.
        """
        hops = self.can_trace_hops
        return {
            "hops": "tp_btf" if hops else None,
            "drops": ("tp_btf" if self.drop_reasons.available else "tp_btf_noreason") if hops else None,
            "cpu": self.best_for("cpu") if hops else None,
            "netfilter": self.best_for("netfilter") if hops else None,
        }

    @property
    def can_trace_hops(self) -> bool:
        """The hop tracker (bpf/hops.bpf.c) needs BTF (CO-RE) and tp_btf programs."""
        return self.btf.available and self.tp_btf.available

    def verdict(self) -> str:
        """One line: can per-hop tracing run here, and with which extras."""
        if not self.can_trace_hops:
            missing = [LABELS[n] for n in ("btf", "tp_btf") if not self.available(n)]
            return f"per-hop tracing cannot run here: {' and '.join(missing)} unavailable"
        extras = {
            "netfilter": "netfilter cost per hook",
            "cpu": "CPU sampling",
            "fine_points": "finer fentry/kprobe points",
        }
        via = {"netfilter_link": "netfilter links", "fentry": "fentry on nf_hook_slow",
               "kprobe": "kprobes on nf_hook_slow"}
        have = [text + (f" ({via[self.best_for(purpose)]})" if purpose == "netfilter" else "")
                for purpose, text in extras.items() if self.best_for(purpose)]
        lack = [text for purpose, text in extras.items() if not self.best_for(purpose)]
        line = "per-hop tracing can run here (tp_btf on the net/skb tracepoints"
        line += ")" if self.drop_reasons.available else "; drops without a reason)"
        if have:
            line += "; with " + ", ".join(have)
        if lack:
            line += "; without " + ", ".join(lack)
        return line

    def to_dict(self) -> dict:
        return {
            "kernel": self.kernel,
            "arch": self.arch,
            "libbpf": self.libbpf,
            "features": {
                p.name: {"available": p.available, "detail": p.detail, "used_for": p.used_for,
                         "without": p.without}
                for p in self.probes()
            },
            "best_for": {purpose: self.best_for(purpose) for purpose in PURPOSES},
            "choices": self.choices(),
            "per_hop_tracing": self.can_trace_hops,
            "verdict": self.verdict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Features:
        """Rebuild from to_dict() output (e.g. a calibration saved with a run)."""
        probes = {
            name: Probe(name, bool(v["available"]), v.get("detail", ""), v.get("used_for", ""),
                        v.get("without", ""))
            for name, v in data["features"].items()
        }
        return cls(kernel=data["kernel"], arch=data["arch"], libbpf=data["libbpf"],
                   **{name: probes[name] for name in NAMES})


def build(kernel: str, arch: str, libbpf_version: str, results: dict[str, tuple[bool, str]]) -> Features:
    """Features from raw (available, detail) results, adding what each feature is for and what its absence costs."""
    ok = {name: results[name][0] for name in NAMES}
    probes = {
        name: Probe(name, ok[name], results[name][1], USED_FOR[name], coverage_without(name, ok))
        for name in NAMES
    }
    return Features(kernel=kernel, arch=arch, libbpf=libbpf_version, **probes)


def coverage_without(name: str, ok: dict[str, bool]) -> str:
    """What cniprof cannot measure when `name` is missing, given which other features work (fallbacks)."""
    hops = ok["btf"] and ok["tp_btf"]
    if name == "btf":
        return "nothing runs: every cniprof program is CO-RE and needs the kernel's BTF (CONFIG_DEBUG_INFO_BTF=y)"
    if name == "tp_btf":
        return "no per-hop tracing: the hop tracker attaches tp_btf programs to the net/skb tracepoints (5.5+)"
    if name == "raw_tp":
        return "nothing while tp_btf works" if ok["tp_btf"] else "no untyped tracepoint fallback either"
    if name == "tracepoint":
        if ok["tp_btf"] or ok["raw_tp"]:
            return "nothing while tp_btf/raw_tp work (same tracepoints, attached without tracefs)"
        return "no tracepoint access at all"
    if name in ("fentry", "kprobe"):
        other = "kprobe" if name == "fentry" else "fentry"
        if ok[other]:
            return f"nothing: {other} covers the same finer points"
        return _FINE_POINTS_OK if hops else "no finer points (and no per-hop tracing either)"
    if name == "perf_event":
        return "no CPU cost per hop (no sampling); latency per hop is unaffected"
    if name == "netfilter_link":
        if ok["fentry"] or ok["kprobe"]:
            return "netfilter cost is measured at nf_hook_slow with fentry/kprobe instead"
        return "no netfilter cost per hook: iptables/nftables time stays inside the hop that contains it"
    if name == "ringbuf":
        return "no per-packet export; the default in-kernel histograms are unaffected"
    if name == "bpf_stats":
        return "the overhead benchmark reports no ns/event; paired traced/untraced runs still give the cost"
    if name == "drop_reasons":
        return "drops are counted per point, without a reason"
    raise KeyError(name)


# ----------------------------------------------------------------------------------------------------- probing


class Unavailable(Exception):
    """A probe's negative answer; str(e) is the reason shown to the user."""


def calibrate() -> Features:
    """Probe every feature once (about a second; root). Each probe fails independently."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("calibrating BPF features loads BPF programs and creates a namespace: run as root")
    object_path(OBJECT)  # a missing build is a setup problem, not a kernel answer: fail loudly
    probes: dict[str, Callable[[], str]] = {
        "btf": _probe_btf,
        "tp_btf": lambda: _probe_program("cpd_tp_btf", "net:netif_rx"),
        "raw_tp": lambda: _probe_program("cpd_raw_tp", "net:netif_rx"),
        "tracepoint": _probe_tracepoint,
        "fentry": lambda: _probe_program("cpd_fentry", "ip_rcv"),
        "kprobe": _probe_kprobe,
        "perf_event": _probe_perf_event,
        "netfilter_link": _probe_netfilter_link,
        "ringbuf": _probe_ringbuf,
        "bpf_stats": _probe_bpf_stats,
        "drop_reasons": _probe_drop_reasons,
    }
    results = {name: _run(fn) for name, fn in probes.items()}
    uname = os.uname()
    try:
        version = libbpf.version()
    except (CniprofError, OSError, AttributeError) as e:
        version = f"unknown ({e})"
    return build(uname.release, uname.machine, version, results)


def _run(probe: Callable[[], str]) -> tuple[bool, str]:
    """(available, detail) of one probe; any failure becomes a negative answer with its reason."""
    try:
        return True, probe()
    except Unavailable as e:
        return False, str(e)
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0)
        return False, f"{e.strerror or e}" + (f" ({name})" if name else "")
    except CniprofError as e:
        return False, str(e)
    except Exception as e:  # noqa: BLE001 - one broken probe must not hide the others' answers
        return False, f"probe failed unexpectedly: {type(e).__name__}: {e}"


def _probe_btf() -> str:
    kernel_btf = btf.vmlinux()
    return f"{btf.VMLINUX_BTF} parsed: {kernel_btf.type_count} types"


def _probe_drop_reasons() -> str:
    if not btf.has_drop_reasons():
        raise Unavailable("no enum skb_drop_reason in BTF: kfree_skb has no reason argument (< 5.17); drops are "
                          "counted with reason 'unknown' at the point they happened")
    return f"enum skb_drop_reason has {len(btf.drop_reason_names())} reasons"


def _probe_bpf_stats() -> str:
    try:
        value = BPF_STATS.read_text().strip()
    except FileNotFoundError:
        raise Unavailable(f"{BPF_STATS} does not exist (kernel < 5.8)") from None
    state = "on" if value == "1" else "off"
    return f"kernel.bpf_stats_enabled exists ({state} now; the benchmark turns it on while it measures)"


def _probe_ringbuf() -> str:
    map_type = _enum_value("bpf_map_type", "BPF_MAP_TYPE_RINGBUF", "ring buffer maps need 5.8+")
    size = max(os.sysconf("SC_PAGE_SIZE"), 4096)
    fd = libbpf.map_create(map_type, "cpdoctor_rb", 0, 0, size)
    os.close(fd)
    return f"created and closed a {size}-byte BPF_MAP_TYPE_RINGBUF map"


# --- BPF programs from bpf/features.bpf.c


@contextlib.contextmanager
def _loaded(program: str, what: str) -> Iterator[libbpf.Object]:
    """The features object with only `program` loaded; closed (links and all) on exit. what: for messages."""
    obj = libbpf.Object(object_path(OBJECT))
    try:
        for name in obj.program_names():
            obj.set_autoload(name, name == program)
        try:
            obj.load()
        except EnvironmentProblem:
            # Object.load read errno right before raising; nothing in between made another libbpf call.
            raise Unavailable(f"the kernel refused to load {what}: {errno_text(ctypes.get_errno())}") from None
        yield obj
    finally:
        obj.close()


def _probe_program(program: str, target: str) -> str:
    """Load `program` alone and attach it by its SEC() name."""
    kind = program.removeprefix("cpd_")
    with _loaded(program, f"the {kind} program on {target}") as obj:
        try:
            obj.attach(program)
        except OSError as e:
            raise Unavailable(f"loaded, but attaching to {target} failed: {errno_text(e.errno)}") from None
    return f"loaded and attached to {target}"


def _probe_tracepoint() -> str:
    detail = with_tracefs(lambda: _probe_program("cpd_tracepoint", "net:netif_rx"))
    if not tracefs_mounted():
        detail += (f"; tracefs is not mounted at {TRACEFS} (probed through a private mount; "
                   f"`mount -t tracefs nodev {TRACEFS}` for tools that need it)")
    return detail


def _probe_kprobe() -> str:
    try:
        # libbpf falls back to tracefs kprobe_events on kernels without the kprobe PMU: give it tracefs too.
        return with_tracefs(lambda: _probe_program("cpd_kprobe", "ip_rcv"))
    except Unavailable as e:
        if config_option("CONFIG_KPROBES") == "n":
            raise Unavailable(f"the kernel is built without kprobes (CONFIG_KPROBES is not set); {e}") from None
        raise


def _probe_perf_event() -> str:
    """cpu-clock sampling on CPU 0 with the perf_event program; counts the samples it saw."""
    with _loaded("cpd_perf_event", "the perf_event program") as obj:
        try:
            perf_fd = libbpf.perf_event_open(libbpf.cpu_clock_attr(PERF_SAMPLE_FREQ), pid=-1, cpu=0)
        except OSError as e:
            raise Unavailable(f"perf_event_open(cpu-clock, CPU 0) failed: {errno_text(e.errno)}") from None
        try:
            libbpf.attach_perf_event(obj, "cpd_perf_event", perf_fd)
        except OSError as e:
            os.close(perf_fd)  # not owned by a link when the attach failed
            raise Unavailable(f"attaching to a cpu-clock perf event failed: {errno_text(e.errno)}") from None
        time.sleep(PERF_WAIT_S)
        samples = _hits(obj, SLOT_PERF_EVENT)
    ms = int(PERF_WAIT_S * 1000)
    return f"attached to cpu-clock on CPU 0 at {PERF_SAMPLE_FREQ} Hz: {samples} samples in {ms} ms"


def _hits(obj: libbpf.Object, slot: int) -> int | str:
    """hits[slot] from the object's .bss (see enum feature_slot in bpf/features.bpf.c)."""
    try:
        bss = obj.map(".bss")
        raw = bss.lookup_raw(ctypes.c_uint32(0), bss.value_size)
    except (KeyError, OSError):
        return "?"
    if not raw or len(raw) < (slot + 1) * 8:
        return "?"
    return int(struct.unpack_from("=Q", raw, slot * 8)[0])  # map values are in the host's byte order


# --- helpers


def _enum_value(enum: str, name: str, why: str) -> int:
    """An enumerator of this kernel's BTF; its absence means the kernel lacks the feature."""
    values = btf.vmlinux().enum_values(enum)
    if name not in values:
        raise Unavailable(f"this kernel's BTF has no {name} ({why})")
    return values[name]




# --- netfilter link (raw bpf(): libbpf 1.1 knows neither the program type nor the link; see cniprof/bpf/nflink.py)


def _netfilter_link_here(c: nflink.NfConstants) -> None:
    """Load `r0 = NF_ACCEPT; exit` and link it at IPv4 LOCAL_OUT in the calling thread's netns; close both."""
    try:
        prog_fd = nflink.load_accept_program(c)
    except nflink.ProgLoadError as e:
        raise Unavailable(f"BPF_PROG_LOAD of a netfilter program failed: {errno_text(e.errno)}"
                          + (f" ({e.log_tail})" if e.log_tail else "")) from None
    try:
        try:
            link_fd = nflink.link_create(c, prog_fd, c.hooks["OUTPUT"], NETFILTER_PRIORITY)
        except OSError as e:
            raise Unavailable(f"loaded, but BPF_LINK_CREATE (netfilter) failed: {errno_text(e.errno)}") from None
        os.close(link_fd)
    finally:
        os.close(prog_fd)


def _probe_netfilter_link() -> str:
    constants = nflink.constants()
    with probe_netns() as netns:
        in_thread(lambda: _netfilter_link_here(constants), setup=lambda: enter_netns(netns))
    return (f"loaded and linked at IPv4 LOCAL_OUT, priority {NETFILTER_PRIORITY}, "
            f"in a throwaway netns ({PROBE_NETNS}, deleted)")


@contextlib.contextmanager
def probe_netns() -> Iterator[str]:
    """The `cpdoctor-probe` namespace for the duration of the block; removed even on errors or Ctrl-C.

    A leftover of a crashed run is removed first; an abstract-socket lock keeps two concurrent calibrations
    from deleting each other's namespace.
    """
    path = NETNS_DIR / PROBE_NETNS
    with _calibration_lock():
        if path.exists():
            pyroute2.netns.remove(PROBE_NETNS)
        try:
            pyroute2.netns.create(PROBE_NETNS)
            yield PROBE_NETNS
        finally:
            if path.exists():
                pyroute2.netns.remove(PROBE_NETNS)


@contextlib.contextmanager
def _calibration_lock() -> Iterator[None]:
    """A lock that needs no file (so nothing is left behind) and dies with the process: an abstract socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    try:
        while True:
            try:
                sock.bind("\0cniprof-calibrate")
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise Unavailable(f"another calibration holds the probe namespace: {errno_text(e.errno)}") \
                        from None
                time.sleep(0.1)
        yield
    finally:
        sock.close()
