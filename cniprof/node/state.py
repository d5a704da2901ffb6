# SPDX-License-Identifier: Apache-2.0
"""Node state around a measured window: device configuration, qdisc/netfilter/SNMP counters, per-CPU softirq work.

`capture(topology)` reads, for every lab namespace (nodes and pods), each lab device's MTU, txqueuelen, offload
features, RPS/XPS masks and root qdisc with its stats, the namespace's rule counts (iptables, kube-proxy's KUBE-
chains, nft), conntrack count and SNMP counters (/proc/net/snmp + /proc/net/netstat, which are per namespace), and
machine-wide /proc/softirqs, /proc/net/softnet_stat and /proc/stat per CPU. `window(start, end)` keeps the end's
configuration and the counters' deltas over the window: what nodestate.json holds and the findings rules read.

Cost: one `ip netns exec sh -c SCRIPT` per namespace (every read of that namespace in one shell), all namespaces in
parallel, each bounded by a timeout; a missing tool or file is recorded under "unavailable", never raised.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cniprof.cni.topology import NETNS_DIR
from cniprof.errors import CniprofError
from cniprof.lab.tunings import ETHTOOL_NAMES, FEATURES, parse_features
from cniprof.netns_exec import attempt_in
from cniprof.sysinfo import parse_cpu_list

VERSION = 1
TIMEOUT_S = 10.0  # one namespace's device and counter reads (~0.2 s on the lab)
# the rule listing: iptables-save of 10 000 kube-proxy services (50 000 rules, iptables-nft) took > 15 s on the
# loaded 2-vCPU lab machine; it runs after the window, so only the trace's end waits for it
RULES_TIMEOUT_S = 45.0
PROC = Path("/proc")
# SNMP counters the findings read (always recorded, 0 included); other non-zero deltas are kept too
SNMP_KEYS = ("IpFragCreates", "IpFragOKs", "IpFragFails", "IpReasmReqds", "IpReasmOKs", "IpReasmFails",
             "IpInDiscards", "IpOutNoRoutes", "IpOutRequests", "IcmpOutDestUnreachs", "IcmpInDestUnreachs",
             "IcmpMsgOutType3", "IcmpMsgInType3", "TcpOutSegs", "TcpRetransSegs", "TcpExtTCPLostRetransmit",
             "TcpExtTCPTimeouts", "UdpInDatagrams", "UdpRcvbufErrors", "UdpSndbufErrors", "UdpInErrors")
QDISC_COUNTERS = ("bytes", "packets", "drops", "overlimits", "requeues")
LINK_COUNTERS = ("rx_dropped", "tx_dropped", "rx_errors", "tx_errors", "rx_packets", "tx_packets")
KUBE_NFT_TABLES = ("kube-proxy",)  # kube-proxy's nftables mode keeps all its rules in this table

# counters: read at both ends of the window
_COUNTERS = r"""
echo '@@links'; ip -j -s link show 2>&1
echo '@@qdisc'; tc -s -j qdisc show 2>&1 || echo 'unavailable'
echo '@@snmp'; cat /proc/net/snmp
echo '@@netstat'; cat /proc/net/netstat
echo '@@conntrack'; cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 'unavailable'
"""
# configuration: read at the end only (what the findings judge is the state the run ended in)
_CONFIG = r"""
for d in {devs}; do
  echo "@@ethtool $d"; ethtool -k "$d" 2>&1 || echo 'unavailable'
  echo "@@queues $d"
  for q in /sys/class/net/$d/queues/*; do
    echo "$(basename $q) $(cat $q/rps_cpus 2>/dev/null || echo -) $(cat $q/rps_flow_cnt 2>/dev/null || echo -) \
$(cat $q/xps_cpus 2>/dev/null || echo -)"
  done
done
"""
# rules: a separate process (run beside the one above), since 10 000 kube-proxy services (50 000 rules) take
# iptables-save ~2 s; nft lists only tables iptables-nft does not manage (those are iptables-save's already)
_RULES = r"""
echo '@@iptables'; iptables-save 2>/dev/null | grep -E '^-A ' || true
echo '@@nft'
if command -v nft >/dev/null; then
  nft list tables 2>/dev/null | while read -r _ fam name; do
    case "$fam/$name" in ip/filter|ip/nat|ip/mangle|ip/raw|ip/security|ip6/*) ;; *)
      echo "@@nfttable $fam $name"; nft -j list table "$fam" "$name" 2>/dev/null ;; esac
  done
else echo 'unavailable'; fi
"""


def _sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("@@"):
            key = line[2:].strip()
            out[key] = []
        elif key:
            out[key].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def parse_snmp(text: str) -> dict[str, int]:
    """/proc/net/snmp or /proc/net/netstat (header line, value line per protocol) -> {ProtoField: value}."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        proto, _, names = head.partition(":")
        _, _, values = vals.partition(":")
        for n, v in zip(names.split(), values.split()):
            if v.lstrip("-").isdigit():
                out[f"{proto}{n}"] = int(v)
    return out


def _mask_cpus(mask: str) -> list[int] | None:
    """sysfs CPU mask ("00000003" or "0000,00000001") -> CPU list; None when unreadable."""
    mask = mask.replace(",", "").strip()
    if not mask or mask == "-" or not re.fullmatch(r"[0-9a-fA-F]+", mask):
        return None
    bits = int(mask, 16)
    return [i for i in range(bits.bit_length()) if bits >> i & 1]


def _queues(text: str) -> dict[str, Any]:
    rps, flows, xps = [], [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] == "*":
            continue
        if parts[0].startswith("rx-"):
            rps.append(_mask_cpus(parts[1]))
            flows.append(int(parts[2]) if parts[2].isdigit() else None)
        elif parts[0].startswith("tx-"):
            xps.append(_mask_cpus(parts[3]))
    return {"rps_cpus": rps, "rps_flow_cnt": flows, "xps_cpus": xps}


def _features(text: str) -> dict[str, Any]:
    if "unavailable" in text.splitlines()[-1:] or not text.strip():
        return {"features": None, "fixed": None}
    parsed = parse_features(text)
    feats = {k: (parsed[v][0] if v in parsed else None) for k, v in FEATURES.items()}
    fixed = {k: (parsed[v][1] if v in parsed else None) for k, v in FEATURES.items()}
    return {"features": feats, "fixed": fixed}


def _rules(sec: dict[str, str]) -> dict[str, Any]:
    lines = [x for x in sec.get("iptables", "").splitlines() if x.startswith("-A ")]
    out: dict[str, Any] = {"iptables_rules": len(lines),
                           "iptables_kube_rules": sum(1 for x in lines if x.startswith("-A KUBE-")),
                           "nft_rules": None, "nft_kube_rules": None}
    if sec.get("nft", "").strip() == "unavailable" or "nft" not in sec:
        return out | {"kube_rules": out["iptables_kube_rules"]}
    rules = []
    for key, text in sec.items():
        if key.startswith("nfttable "):
            try:
                rules += [i["rule"] for i in json.loads(text).get("nftables", []) if "rule" in i]
            except (ValueError, AttributeError):
                continue
    out["nft_rules"] = len(rules)
    out["nft_kube_rules"] = sum(1 for r in rules if r.get("table") in KUBE_NFT_TABLES
                                or str(r.get("chain", "")).startswith("KUBE-"))
    out["kube_rules"] = out["iptables_kube_rules"] + out["nft_kube_rules"]
    return out


def _json_list(text: str | None, tool: str, unavailable: list[str]) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except ValueError:
        unavailable.append(tool)
        return []
    return data if isinstance(data, list) else []


def parse_namespace(text: str, devices: Mapping[str, str]) -> dict[str, Any]:
    """One namespace script's output -> its devices (name -> role given) and namespace-wide state."""
    sec = _sections(text)
    unavailable = []
    links = {x["ifname"]: x for x in _json_list(sec.get("links"), "ip -j -s link", unavailable)}
    qdiscs = [q for q in _json_list(sec.get("qdisc"), "tc -s -j qdisc", unavailable) if q.get("root")]
    roots = {q.get("dev"): q for q in qdiscs}
    devs = []
    for name, role in devices.items():
        link = links.get(name, {})
        stats = link.get("stats64", {})
        q = roots.get(name)
        dev: dict[str, Any] = {
            "name": name, "role": role, "mtu": link.get("mtu"), "txqueuelen": link.get("txqlen"),
            **_features(sec.get(f"ethtool {name}", "")),
            **_queues(sec.get(f"queues {name}", "")),
            "qdisc": None if q is None else {"kind": q.get("kind"), "backlog": q.get("backlog", 0),
                                             "qlen": q.get("qlen", 0),
                                             **{k: q.get(k, 0) for k in QDISC_COUNTERS}},
            "stats": {k: stats.get(d, {}).get(f, 0) for k, (d, f) in
                      {c: (c.split("_")[0], c.split("_")[1]) for c in LINK_COUNTERS}.items()},
        }
        devs.append(dev)
    snmp = {**parse_snmp(sec.get("snmp", "")), **parse_snmp(sec.get("netstat", ""))}
    conntrack = sec.get("conntrack", "").strip()
    if not conntrack.isdigit():
        unavailable.append("nf_conntrack_count")
    rules = _rules(sec) if "iptables" in sec else {}
    if rules and rules["nft_rules"] is None:
        unavailable.append("nft")
    return {"devices": devs, "snmp": snmp, "conntrack_count": int(conntrack) if conntrack.isdigit() else None,
            "netfilter": rules, "unavailable": unavailable}


def _exec(netns: str, script: str, timeout_s: float = TIMEOUT_S) -> tuple[str, str | None]:
    """(stdout, None) or ("", why it could not be read): bounded by timeout_s."""
    try:
        out = attempt_in(netns, ["sh", "-c", script], timeout_s=timeout_s,
                         what=f"{'rules ' if script is _RULES else ''}read")
    except CniprofError as e:  # timed out or could not start: what was not read is said, not raised
        return "", str(e)
    if out.returncode != 0 and "@@" not in out.stdout:
        return "", f"{netns}: " + (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[0]
    return out.stdout, None


def _read_namespace(netns: str, devices: Mapping[str, str], config: bool) -> dict[str, Any]:
    names = " ".join(f"'{d}'" for d in devices)
    script = _COUNTERS + (_CONFIG.format(devs=names) if config else "")
    if not config:
        text, err = _exec(netns, script)
        errors = [err] if err else []
    else:  # the rule listing beside the rest, so a slow iptables-save does not delay the device reads
        with ThreadPoolExecutor(max_workers=2) as pool:
            (text, err), (rules, rerr) = pool.map(lambda a: _exec(netns, *a),
                                                  ((script, TIMEOUT_S), (_RULES, RULES_TIMEOUT_S)))
        text += "\n" + rules
        errors = [e for e in (err, rerr) if e]
    parsed = parse_namespace(text, devices)
    parsed["unavailable"] = errors + parsed["unavailable"]
    return parsed


def parse_softirqs(text: str) -> dict[int, dict[str, int]]:
    lines = text.splitlines()
    if not lines:
        return {}
    cpus = [int(c[3:]) for c in lines[0].split()]
    out: dict[int, dict[str, int]] = {c: {} for c in cpus}
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        if name.strip() in ("NET_RX", "NET_TX"):
            for c, v in zip(cpus, rest.split()):
                out[c][name.strip().lower()] = int(v)
    return out


def parse_softnet(text: str) -> dict[int, dict[str, int]]:
    """/proc/net/softnet_stat: one hex row per CPU; column 12 (since 5.10) is the CPU id, else the row index."""
    out = {}
    for i, line in enumerate(text.splitlines()):
        f = [int(x, 16) for x in line.split()]
        cpu = f[12] if len(f) > 12 else i
        out[cpu] = {"processed": f[0], "dropped": f[1], "time_squeeze": f[2]}
    return out


def parse_stat(text: str) -> dict[int, dict[str, int]]:
    """/proc/stat cpuN lines -> busy and idle jiffies (idle + iowait count as idle)."""
    out = {}
    for line in text.splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *vals = line.split()
            v = [int(x) for x in vals]
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            out[int(name[3:])] = {"busy": sum(v[:8]) - idle, "idle": idle}
    return out


def _read(path: Path, unavailable: list[str]) -> str:
    try:
        return path.read_text()
    except OSError:
        unavailable.append(str(path))
        return ""


def read_cpus(proc: Path = PROC) -> tuple[dict[int, dict[str, int]], list[str]]:
    unavailable: list[str] = []
    soft = parse_softirqs(_read(proc / "softirqs", unavailable))
    net = parse_softnet(_read(proc / "net" / "softnet_stat", unavailable))
    stat = parse_stat(_read(proc / "stat", unavailable))
    cpus = sorted(set(soft) | set(net) | set(stat))
    return {c: {**soft.get(c, {}), **net.get(c, {}), **stat.get(c, {})} for c in cpus}, unavailable


def processes(netns_names: list[str], proc: Path = PROC) -> dict[str, list[dict[str, Any]]]:
    """The processes living in each lab namespace (the generators) with the CPUs they may run on: a workload
    pinned onto the CPU that also takes the network softirq is one of the findings. One scan of /proc."""
    inos = {}
    for name in netns_names:
        try:
            inos[os.stat(Path(NETNS_DIR) / name).st_ino] = name
        except OSError:
            continue
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in proc.iterdir() if inos else ():
        if not entry.name.isdigit():
            continue
        try:
            ns = inos.get(os.stat(entry / "ns" / "net").st_ino)
            if ns is None:
                continue
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except (OSError, ValueError):
            continue
        out.setdefault(ns, []).append({"pid": int(entry.name), "comm": status.get("Name", "").strip(),
                                       "cpus_allowed": parse_cpu_list(status.get("Cpus_allowed_list", ""))})
    return out


def namespaces(topo: Any) -> list[dict[str, Any]]:
    """[{netns, kind, node, pod, devices: {name: role}}] for every node and pod namespace of a topology."""
    out: dict[str, dict[str, Any]] = {}
    for n in topo.nodes:
        out.setdefault(n.netns, {"netns": n.netns, "kind": "node", "node": n.name, "pod": None, "devices": {}})
    for p in topo.pods:
        out.setdefault(p.netns, {"netns": p.netns, "kind": "pod" if p.devices else "node", "node": p.node,
                                 "pod": p.name if p.devices else None, "devices": {}})
    for holder in (*topo.nodes, *topo.pods):
        for d in holder.devices:
            out.setdefault(d.netns, {"netns": d.netns, "kind": "pod", "node": None, "pod": None, "devices": {}})
            out[d.netns]["devices"].setdefault(d.name, d.role)
    return list(out.values())


def capture(topo: Any, config: bool = True) -> dict[str, Any]:
    """One reading of every lab namespace and of the machine's CPUs (see the module docstring); config=False
    reads only counters (the start of a window: cheaper, and less work on the CPUs being measured)."""
    t0 = time.monotonic()
    spaces = namespaces(topo)
    with ThreadPoolExecutor(max_workers=min(8, len(spaces) or 1)) as pool:
        reads = list(pool.map(lambda s: _read_namespace(s["netns"], s["devices"], config), spaces))
    cpus, unavailable = read_cpus()
    procs = processes([s["netns"] for s in spaces])
    for s, r in zip(spaces, reads):
        r["processes"] = procs.get(s["netns"], [])
    return {"time": time.time(), "monotonic": t0, "read_s": round(time.monotonic() - t0, 3),
            "namespaces": [{k: v for k, v in s.items() if k != "devices"} | r for s, r in zip(spaces, reads)],
            "cpus": cpus, "unavailable": unavailable}


def _delta(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        return b - a
    return None


def window(start: Mapping[str, Any], end: Mapping[str, Any]) -> dict[str, Any]:
    """nodestate.json: the end's configuration, counter deltas from start to end (keys ending in _delta or
    under "delta"), gauges (qdisc backlog, conntrack count) as read at the end."""
    before = {s["netns"]: s for s in start.get("namespaces", [])}
    spaces = []
    for ns in end.get("namespaces", []):
        b = before.get(ns["netns"], {})
        bdev = {d["name"]: d for d in b.get("devices", [])}
        devs = []
        for d in ns.get("devices", []):
            o = bdev.get(d["name"], {})
            q = d.get("qdisc")
            oq = o.get("qdisc") or {}
            devs.append({**{k: v for k, v in d.items() if k not in ("qdisc", "stats")},
                         "qdisc": None if q is None else {
                             "kind": q["kind"], "backlog": q.get("backlog"), "qlen": q.get("qlen"),
                             **{k: _delta(oq.get(k), q.get(k)) for k in QDISC_COUNTERS}},
                         "stats": {k: _delta(o.get("stats", {}).get(k), v) for k, v in d.get("stats", {}).items()}})
        snmp_b, snmp_e = b.get("snmp", {}), ns.get("snmp", {})
        snmp = {k: _delta(snmp_b.get(k), snmp_e.get(k)) for k in snmp_e}
        kept = {k: v for k, v in snmp.items() if k in SNMP_KEYS or v}
        kept.update({k: kept.get(k) for k in SNMP_KEYS})
        # processes seen at either end (the generator may have exited before the end's read)
        procs = {p["pid"]: p for p in [*b.get("processes", []), *ns.get("processes", [])]}
        spaces.append({k: ns.get(k) for k in ("netns", "kind", "node", "pod", "conntrack_count", "netfilter")}
                      | {"devices": devs, "snmp": kept, "processes": list(procs.values()),
                         "unavailable": sorted(set(b.get("unavailable", [])) | set(ns.get("unavailable", [])))})
    elapsed = float(end.get("monotonic", 0.0)) - float(start.get("monotonic", 0.0))
    cpus = []
    scpu = {int(k): v for k, v in start.get("cpus", {}).items()}
    for c, v in sorted(((int(k), v) for k, v in end.get("cpus", {}).items())):
        o = scpu.get(c, {})
        row = {"cpu": c, **{k: _delta(o.get(k), v.get(k)) for k in
                            ("net_rx", "net_tx", "processed", "dropped", "time_squeeze", "busy", "idle")}}
        total = (row["busy"] or 0) + (row["idle"] or 0)
        row["busy_pct"] = round(100.0 * (row["busy"] or 0) / total, 1) if total else None
        row["idle_pct"] = round(100.0 - row["busy_pct"], 1) if total else None
        cpus.append(row)
    return {"version": VERSION, "window_s": round(elapsed, 3),
            "read_s": [start.get("read_s"), end.get("read_s")], "namespaces": spaces, "cpus": cpus,
            "unavailable": sorted(set(start.get("unavailable", [])) | set(end.get("unavailable", [])))}


__all__ = ["ETHTOOL_NAMES", "capture", "namespaces", "parse_namespace", "window"]
