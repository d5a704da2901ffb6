# SPDX-License-Identifier: Apache-2.0
"""The Cilium-style lab (bpf/cilium_tc.bpf.c on tc, cniprof/lab/recipes/cilium.py) in both modes, for real.

Per mode: lab up, then exactly 23 UDP datagrams cross-node and same-node and 5 pings pod-to-host; every expected
hop inside the end-to-end path counts exactly the packets sent and the path check finds nothing (the kernel's
path is the model's chain). Beyond the chain, what makes it Cilium: the programs moved the packets (their own
counters: one tunnel or neigh redirect per datagram on the sending node, one peer redirect per datagram on the
receiving one), the nodes' IP stacks forwarded nothing (ForwDatagrams unchanged), no bridge and no `ip forward`
hop is on the path, and the nodes have no iptables/nftables rule. The building process keeps no BPF fd: the tc
filters alone hold the programs, and after lab down neither the programs nor their maps exist any more.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cniprof.analysis import path_check
from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.errors import UsageError
from cniprof.lab import cilium_abi as abi
from cniprof.lab import cleanup, realize, saved
from cniprof.run import trace

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed")]

ROOT = Path(__file__).resolve().parents[2]
N = 23
PINGS = 5
SENT_BY = {"vxlan": "fwd_tunnel", "native": "fwd_neigh"}  # the sending node's redirect per mode


def test_constants_match_header() -> None:
    header = (ROOT / "bpf" / "cilium_tc.h").read_text()
    for const in ("CIL_MODE_NATIVE", "CIL_MODE_VXLAN", "CIL_MAX_ENDPOINTS", "CIL_MAX_PREFIXES", "CIL_WORLD_ID"):
        assert re.search(rf"#define {const} {getattr(abi, const)}\b", header), const
    for i, name in enumerate(abi.METRICS):
        assert re.search(rf"CIL_{name.upper()} = {i},", header), name
    assert f"CIL_METRICS = {len(abi.METRICS)}," in header
    source = (ROOT / "bpf" / "cilium_tc.bpf.c").read_text()
    for prog in abi.PROGRAMS:
        assert f"int {prog}(struct __sk_buff *skb)" in source, prog


def test_models_have_no_bridge_and_no_forwarding_pass() -> None:
    for mode in ("vxlan", "native"):
        for chain in registry.parse(f"cilium:{mode}").chains:
            steps = (*chain.steps, *chain.reverse)
            assert "bridge" not in {s.device for s in steps}
            assert not any("ip forward" in s.hop_role for s in steps), (mode, chain.path)
    assert registry.parse("cilium").mode == "vxlan"


@pytest.mark.parametrize("spec", ("cilium:vxlan", "cilium:native"))
def test_pod_to_service_is_refused_before_building(spec: str) -> None:
    """The programs bypass the nodes' conntrack: a kube-proxy service reply would arrive un-NATed."""
    before = set(cleanup.list_lab_namespaces())
    with pytest.raises(UsageError, match=f"not available on {spec}: .*no service load balancing"):
        trace.preflight(trace.TraceOptions(cni=spec, path="pod-to-service"))
    assert set(cleanup.list_lab_namespaces()) == before


# ------------------------------------------------------------------------------------------------ helpers

def _bpftool(*args: str, netns: str | None = None) -> object:
    argv = ["bpftool", "-j", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(out or "[]")


def _exists(kind: str, ident: int) -> bool:
    return subprocess.run(["bpftool", kind, "show", "id", str(ident)], check=False, capture_output=True,
                          timeout=30).returncode == 0


def _tc_programs(topology: Topology) -> dict[tuple[str, str], tuple[str, int]]:
    """(node netns, device) -> (program name, id) of every tc filter in the node namespaces."""
    out = {}
    for node in topology.nodes:
        (net,) = _bpftool("net", "show", netns=node.netns)
        for f in net["tc"]:
            assert f["kind"] == "clsact/ingress", f
            out[(node.netns, f["devname"])] = (f["name"].split(":")[0], int(f["id"]))
    return out


def _metrics(prog_id: int) -> dict[str, int]:
    """The program's cil_metrics, summed over CPUs (the map is the node's: every program of a node shares it)."""
    for map_id in _bpftool("prog", "show", "id", str(prog_id))["map_ids"]:
        if _bpftool("map", "show", "id", str(map_id))["name"] == "cil_metrics":
            entries = _bpftool("map", "dump", "id", str(map_id))
            counts = {e["formatted"]["key"]: sum(v["value"] for v in e["formatted"]["values"]) for e in entries}
            return {name: counts[i] for i, name in enumerate(abi.METRICS)}
    raise AssertionError(f"program {prog_id} has no cil_metrics map")


def _forwarded(netns: str) -> int:
    """IP datagrams the namespace's stack forwarded (Ip: ForwDatagrams)."""
    snmp = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"], check=True,
                          capture_output=True, text=True).stdout
    head, values = (line.split() for line in snmp.splitlines() if line.startswith("Ip:"))
    return int(dict(zip(head, values))["ForwDatagrams"])


def _rules(netns: str) -> str:
    """Every nftables/iptables rule or table in the namespace ("" when there is none)."""
    nft = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "ruleset"], check=True,
                         capture_output=True, text=True).stdout.strip()
    ipt = subprocess.run(["ip", "netns", "exec", netns, "iptables-save"], check=True, capture_output=True,
                         text=True).stdout
    return "\n".join([nft, *(line for line in ipt.splitlines() if line.startswith("-A"))]).strip()


def _bpf_fds() -> int:
    """BPF objects (programs, maps, links) this process holds open."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:bpf")
        except OSError:
            continue
    return n


def _up(model) -> Topology:
    topology, created = realize.up(model.cni, model.mode)
    assert created
    return topology


def _trace(spec: str, path: str, traffic: str, count: int) -> trace.TraceResult:
    return trace.run(trace.TraceOptions(cni=spec, path=path, duration_s=1.0, interval_s=0.2, sample_every=1,
                                        traffic=traffic, count=count))


def _problems(res: trace.TraceResult, directions: tuple[int, ...], count: int) -> list[str]:
    """Everything that differs from "exactly `count` packets along exactly the model's chain"."""
    snap = res.record.snapshot
    label = f"{res.model.spec} {snap['directions'][0]['src_pod']}→{snap['directions'][0]['dst_pod']}"
    out = []
    for d in directions:
        for h in (h for h in snap["hops"] if h["expected"] and h["dir"] == d and h["in_e2e"]):
            if h["count"] != count:
                out.append(f"{label} dir {d} hop {h['seq']} {h['role']!r}: {h['count']} packets, not {count}")
        e2e = next(e for e in snap["e2e"] if e["dir"] == d)
        if e2e["count"] != count:
            out.append(f"{label} dir {d}: {e2e['count']} packets end to end, not {count}")
    check = path_check.check(snap)
    out += [f"{label}: {line}" for line in check.lines()] if not check.ok else []
    if snap["counters"]["unexpected"]:
        out.append(f"{label}: {snap['counters']['unexpected']} unexpected hops counted")
    return out


def _path(res: trace.TraceResult) -> tuple[list[str], set[str]]:
    """Direction 0's hop roles and the device roles of its points."""
    points = {p["id"]: p for p in res.record.snapshot["points"]}
    hops = sorted((h for h in res.record.snapshot["hops"] if h["expected"] and h["dir"] == 0), key=lambda h: h["seq"])
    return [h["role"] for h in hops], {points[h[k]]["role"] for h in hops for k in ("from", "to")}


# ------------------------------------------------------------------------------------------------ the labs

@pytest.mark.lab_destructive
@pytest.mark.parametrize("mode", ("vxlan", "native"))
def test_cilium_lab(mode: str, no_lab: None) -> None:
    spec = f"cilium:{mode}"
    model = registry.parse(spec)
    fds = _bpf_fds()
    topology = _up(model)
    problems: list[str] = []
    try:
        assert _bpf_fds() == fds, "the lab build left BPF fds open in the building process"
        progs = _tc_programs(topology)
        lxc = {(n.netns, d.name) for n in topology.nodes for d in n.devices if d.role == "host_veth"}
        wanted = {k: abi.PROG_LXC for k in lxc}
        for node in topology.nodes:
            wanted[(node.netns, "eth0")] = abi.PROG_NETDEV
            if mode == "vxlan":
                wanted[(node.netns, "cilium_vxlan")] = abi.PROG_VXLAN
            assert _rules(node.netns) == "", f"{node.netns} has netfilter rules"
        assert {k: name for k, (name, _) in progs.items()} == wanted
        prog_ids = {pid for _, pid in progs.values()}
        map_ids = {m for pid in prog_ids for m in _bpftool("prog", "show", "id", str(pid))["map_ids"]}
        node_prog = {netns: pid for (netns, _), (name, pid) in progs.items() if name == abi.PROG_LXC}
        forwarded = {n.netns: _forwarded(n.netns) for n in topology.nodes}

        for path in ("cross-node", "same-node"):
            a, b = trace.pick_pods(topology, path, None, None)
            src, dst = topology.node(a.node).netns, topology.node(b.node).netns
            before = {ns: _metrics(pid) for ns, pid in node_prog.items()}
            res = _trace(spec, path, "udp", N)
            after = {ns: _metrics(pid) for ns, pid in node_prog.items()}
            assert res.record.traffic["received"] == N, (path, res.record.traffic)
            problems += _problems(res, (0,), N)
            roles, devices = _path(res)
            assert "bridge" not in devices and not any("ip forward" in r for r in roles), (path, roles)
            if path == "cross-node":
                sent = after[src][SENT_BY[mode]] - before[src][SENT_BY[mode]]
                assert sent == N, f"{SENT_BY[mode]} on {src}: {sent}"
                if mode == "vxlan":
                    assert "vxlan" in devices and any("vxlan encap" in r for r in roles), roles
                    assert any("vxlan decap" in r for r in roles), roles
                else:
                    assert not devices & {"vxlan", "tunnel"} and not any("encap" in r for r in roles), roles
            else:
                # the sender's lxc is the last point: redirect_peer skips the receiver's veth and backlog
                assert roles == ["pod veth xmit + host veth backlog", "bpf redirect_peer + socket delivery"], roles
            assert after[dst]["fwd_peer"] - before[dst]["fwd_peer"] == N, (path, before[dst], after[dst])
            assert sum(after[ns][k] - before[ns][k] for ns in after for k in abi.METRICS if k.startswith("drop")) == 0

        res = _trace(spec, "pod-to-host", "ping", PINGS)
        problems += _problems(res, (0, 1), PINGS)
        assert {n.netns: _forwarded(n.netns) for n in topology.nodes} == forwarded, "a node stack forwarded"
    finally:
        cleanup.teardown()
    assert not problems, "\n".join(problems)
    assert cleanup.list_lab_namespaces() == [] and saved.load() is None

    # the filters held the programs, the programs their maps: all gone with the namespaces (freed asynchronously)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(_exists(kind, i) for kind, ids in (("prog", prog_ids),
                                                                                   ("map", map_ids)) for i in ids):
        time.sleep(0.2)
    left = [(p["id"], p.get("name")) for p in _bpftool("prog", "show") if p.get("name") in abi.PROGRAMS]
    assert not [p for p in left if p[0] in prog_ids], f"programs still loaded after lab down: {left}"
    assert not [m for m in map_ids if _exists("map", m)], "maps still allocated after lab down"
