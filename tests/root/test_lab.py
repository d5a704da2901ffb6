# SPDX-License-Identifier: Apache-2.0
"""The flannel VXLAN lab against the real kernel: devices, forwarding state, real packets, cleanup.

UDP packets are sent from sockets created inside the pod namespaces (a helper thread enters the namespace, the
socket keeps it); ICMP echo uses `ping` through `ip netns exec`. The ports are bound inside this session's own lab
(its CNIPROF_LAB_ID), so they are private to it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from cniprof.cli.main import main
from cniprof.cni.topology import LAB_ID, LAB_NETNS_PREFIX, NETNS_DIR, NETNS_PREFIX, Topology, netns_inode
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.lab import cleanup, host_sysctl, nsutil, realize, saved
from cniprof.lab.recipes import RECIPES
from cniprof.lab.recipes import flannel as flannel_recipe
from cniprof.lab.recipes.common import NodeSpec, PodSpec
from cniprof.netns_exec import call_in

ROOT = Path(__file__).resolve().parents[2]



def cli(*args: str, lab_id: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess; `lab_id` runs it as another lab instance (CNIPROF_LAB_ID)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120", **({"CNIPROF_LAB_ID": lab_id} if lab_id else {}))
    return subprocess.run(
        [sys.executable, "-m", "cniprof", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ping(netns: str, dst: str) -> subprocess.CompletedProcess[str]:
    """`ping -c 3 -i 0.2 -W 1` from inside a namespace (iputils-ping is installed by scripts/setup.sh)."""
    assert shutil.which("ping"), "ping not found: run scripts/setup.sh (installs iputils-ping)"
    return subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", dst],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def link_of(netns: str, ifname: str) -> ifinfmsg:
    with IPRoute(netns=netns, flags=0) as ipr:
        (idx,) = ipr.link_lookup(ifname=ifname)
        (link,) = ipr.get_links(idx)
        return link


def stats(netns: str, ifname: str) -> dict[str, int]:
    return dict(link_of(netns, ifname).get("IFLA_STATS64"))


# ---------------------------------------------------------------- CLI and state


@pytest.mark.root
def test_status_json_has_the_contract_fields(lab: Topology) -> None:
    res = cli("lab", "status", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["cni"], doc["mode"]) == ("flannel", "vxlan")
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2"]
    for node in doc["nodes"]:
        assert node["netns"] == f"{NETNS_PREFIX}{node['name']}"
        roles = {d["role"] for d in node["devices"]}
        assert roles == {"underlay", "bridge", "vxlan", "host_veth"}
        for dev in node["devices"]:
            assert {"name", "role", "ifindex"} <= set(dev) and dev["ifindex"] > 1
    pods = {p["name"]: p for p in doc["pods"]}
    assert set(pods) == {"pod-a", "pod-b", "pod-c", "pod-d"}
    assert pods["pod-a"] == {
        **pods["pod-a"],
        "node": "node1",
        "netns": f"{LAB_NETNS_PREFIX}1-pod-a",
        "ip": "10.244.1.2",
        "host_veth": "veth-pod-a",
    }
    assert pods["pod-d"]["ip"] == "10.244.2.3" and pods["pod-d"]["node"] == "node2"
    assert Topology.from_json(res.stdout) == lab


@pytest.mark.root
def test_status_table_is_readable(lab: Topology) -> None:
    res = cli("lab", "status")
    assert res.returncode == 0, res.stderr
    for word in (
        "flannel/vxlan",
        f"{LAB_NETNS_PREFIX}1",
        f"{LAB_NETNS_PREFIX}2-pod-d",
        "flannel.1",
        "veth-pod-c",
        "10.244.2.2",
    ):
        assert word in res.stdout


@pytest.mark.root
def test_up_when_the_same_lab_is_up_is_a_noop(lab: Topology) -> None:
    inode = netns_inode(f"{LAB_NETNS_PREFIX}1")
    res = cli("lab", "up", "--cni", "flannel:vxlan")
    assert res.returncode == 0, res.stderr
    assert "already up" in res.stdout
    assert netns_inode(f"{LAB_NETNS_PREFIX}1") == inode
    assert saved.load() == lab


@pytest.mark.root
def test_up_with_a_different_lab_up_refuses(lab: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    def never_built(ns: object) -> Topology:
        raise AssertionError("must not build over a running lab")

    monkeypatch.setitem(RECIPES, ("flannel", "host-gw"), never_built)
    with pytest.raises(CniprofError, match="already up"):
        realize.up("flannel", "host-gw")
    assert saved.load() == lab


def test_unknown_cni_is_a_one_line_usage_error() -> None:
    res = cli("lab", "up", "--cni", "weave")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "weave" in res.stderr and "flannel:vxlan" in res.stderr


def test_parse_cni_accepts_both_spellings() -> None:
    assert realize.parse_cni("flannel") == ("flannel", "vxlan")
    assert realize.parse_cni("flannel:vxlan") == ("flannel", "vxlan")
    assert realize.parse_cni("flannel", "vxlan") == ("flannel", "vxlan")
    with pytest.raises(UsageError, match="supported: flannel:vxlan"):
        realize.parse_cni("flannel:ipip")


def test_not_root_is_an_environment_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realize.os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="run as root"):
        realize.up("flannel")


# ---------------------------------------------------------------- what the kernel has


@pytest.mark.root
def test_topology_matches_the_kernel(lab: Topology) -> None:
    for dev in lab.devices():
        link = link_of(dev.netns, dev.name)
        assert link["index"] == dev.ifindex, dev
    for netns in lab.namespaces():
        # the inode of /run/netns/<name> is the one a thread inside the namespace sees (net->ns.inum)
        inside = call_in(netns, lambda: os.stat("/proc/thread-self/ns/net").st_ino)
        assert netns_inode(netns) == inside
    assert lab.pod("pod-c").node == "node2"
    assert lab.node("node1").device("flannel.1").role == "vxlan"
    assert lab.device(f"{LAB_NETNS_PREFIX}2", "veth-pod-d").role == "host_veth"
    assert lab.device(f"{LAB_NETNS_PREFIX}1-pod-b", "eth0").role == "pod_veth"


@pytest.mark.root
def test_vxlan_device_is_flannels(lab: Topology) -> None:
    for node in lab.nodes:
        link = link_of(node.netns, "flannel.1")
        info = link.get("IFLA_LINKINFO")
        assert info.get("IFLA_INFO_KIND") == "vxlan"
        data = info.get("IFLA_INFO_DATA")
        assert data.get("IFLA_VXLAN_ID") == 1
        assert data.get("IFLA_VXLAN_PORT") == 8472
        assert data.get("IFLA_VXLAN_LEARNING") == 0
        assert data.get("IFLA_VXLAN_LOCAL") == lab.underlay_ips[node.name]
        assert data.get("IFLA_VXLAN_LINK") == node.device("eth0").ifindex
        assert link.get("IFLA_MTU") == 1450


@pytest.mark.root
def test_flannel_forwarding_state(lab: Topology) -> None:
    """Per remote node: onlink route via its VTEP, permanent neighbour, self/permanent fdb entry to its IP."""
    for node, peer, idx in (("node1", "node2", 2), ("node2", "node1", 1)):
        netns = lab.node(node).netns
        peer_mac = link_of(lab.node(peer).netns, "flannel.1").get("IFLA_ADDRESS")
        vx = lab.node(node).device("flannel.1").ifindex
        with IPRoute(netns=netns, flags=0) as ipr:
            routes = [
                r for r in ipr.get_routes(family=socket.AF_INET) if r.get("RTA_DST") == f"10.244.{idx}.0"
            ]
            assert len(routes) == 1
            route = routes[0]
            assert route["dst_len"] == 24 and route.get("RTA_GATEWAY") == f"10.244.{idx}.0"
            assert route.get("RTA_OIF") == vx and route["flags"] & nsutil.RTNH_F_ONLINK
            neigh = [n for n in ipr.get_neighbours(ifindex=vx) if n.get("NDA_DST") == f"10.244.{idx}.0"]
            assert len(neigh) == 1
            assert neigh[0].get("NDA_LLADDR") == peer_mac and neigh[0]["state"] & nsutil.NUD_PERMANENT
            fdb = [f for f in ipr.fdb("dump", ifindex=vx) if f.get("NDA_LLADDR") == peer_mac]
            assert len(fdb) == 1
            assert fdb[0].get("NDA_DST") == lab.underlay_ips[peer]
            assert fdb[0]["state"] & nsutil.NUD_PERMANENT and fdb[0]["flags"] & nsutil.NTF_SELF


@pytest.mark.root
def test_namespace_settings(lab: Topology) -> None:
    for netns in lab.namespaces():
        assert nsutil.read_sysctl(netns, "net.ipv6.conf.all.disable_ipv6") == "1"
        assert nsutil.read_sysctl(netns, "net.ipv6.conf.default.disable_ipv6") == "1"
        assert link_of(netns, "lo")["flags"] & 1  # IFF_UP
    for node in lab.nodes:
        assert nsutil.read_sysctl(node.netns, "net.ipv4.ip_forward") == "1"
        assert link_of(node.netns, "cni0").get("IFLA_OPERSTATE") == "UP"
    for pod in lab.pods:
        eth0 = link_of(pod.netns, "eth0")
        assert eth0.get("IFLA_MTU") == 1450
        host = link_of(lab.node(pod.node).netns, pod.host_veth)
        assert host.get("IFLA_MASTER") == lab.node(pod.node).device("cni0").ifindex
        assert host.get("IFLA_MTU") == 1450
        with IPRoute(netns=pod.netns, flags=0) as ipr:
            (default,) = [
                r for r in ipr.get_routes(family=socket.AF_INET) if r["dst_len"] == 0 and r["table"] == 254
            ]
            assert default.get("RTA_GATEWAY") == f"10.244.{pod.node[-1]}.1"
    with IPRoute() as ipr:  # nothing in the root namespace
        names = {link.get("IFLA_IFNAME") for link in ipr.get_links()}
    assert not names & {"flannel.1", "cni0", "veth-pod-a", "veth-pod-b", "veth-pod-c", "veth-pod-d"}


# ---------------------------------------------------------------- real packets


@pytest.mark.root
def test_ping_cross_node_through_vxlan(lab: Topology) -> None:
    before = stats(f"{LAB_NETNS_PREFIX}1", "flannel.1")["tx_packets"]
    res = ping(lab.pod("pod-a").netns, lab.pod("pod-c").ip)
    assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr
    assert stats(f"{LAB_NETNS_PREFIX}1", "flannel.1")["tx_packets"] - before >= 3


@pytest.mark.root
def test_ping_same_node(lab: Topology) -> None:
    res = ping(lab.pod("pod-a").netns, lab.pod("pod-b").ip)
    assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr


@pytest.mark.root
def test_ping_reverse_direction(lab: Topology) -> None:
    res = ping(lab.pod("pod-d").netns, lab.pod("pod-b").ip)
    assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr


def _parse_vxlan(frame: bytes) -> dict[str, object] | None:
    """Outer Ethernet/IPv4/UDP/VXLAN + inner Ethernet/IPv4/UDP, or None if it is not a VXLAN frame."""
    if len(frame) < 14 + 20 + 8 + 8 + 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17:
        return None
    (dport,) = struct.unpack("!H", ip[ihl + 2 : ihl + 4])
    vx = ip[ihl + 8 :]
    inner_ip = vx[8 + 14 :]
    inner_ihl = (inner_ip[0] & 0x0F) * 4
    return {
        "outer_src": socket.inet_ntoa(ip[12:16]),
        "outer_dst": socket.inet_ntoa(ip[16:20]),
        "dport": dport,
        "flags": vx[0],
        "vni": int.from_bytes(vx[4:7], "big"),
        "inner_src": socket.inet_ntoa(inner_ip[12:16]),
        "inner_dst": socket.inet_ntoa(inner_ip[16:20]),
        "inner_proto": inner_ip[9],
        "inner_dport": struct.unpack("!H", inner_ip[inner_ihl + 2 : inner_ihl + 4])[0],
    }


@pytest.mark.root
def test_udp_cross_node_is_vxlan_on_the_underlay(lab: Topology) -> None:
    src, dst = lab.pod("pod-a"), lab.pod("pod-c")
    n = 20

    def capture_socket() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        s.bind(("eth0", 0x0800))
        return s

    tap = call_in(f"{LAB_NETNS_PREFIX}2", capture_socket)
    rx = call_in(dst.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    tx = call_in(src.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    before = {
        "underlay_rx": stats(f"{LAB_NETNS_PREFIX}2", "eth0")["rx_packets"],
        "vtep_rx": stats(f"{LAB_NETNS_PREFIX}2", "flannel.1")["rx_packets"],
        "vtep_tx": stats(f"{LAB_NETNS_PREFIX}1", "flannel.1")["tx_packets"],
    }
    with tap, rx, tx:
        rx.bind((dst.ip, 5555))
        rx.settimeout(2)
        tap.settimeout(0.5)
        for i in range(n):
            tx.sendto(b"cniprof %d" % i, (dst.ip, 5555))
        got = set()
        while len(got) < n:
            got.add(rx.recvfrom(2048)[0])
        frames = []
        while True:
            try:
                frames.append(tap.recv(65535))
            except socket.timeout:
                break
    assert len(got) == n
    vxlan = [f for f in map(_parse_vxlan, frames) if f and f["dport"] == 8472 and f["inner_dport"] == 5555]
    assert len(vxlan) >= n
    assert vxlan[0] == {
        **vxlan[0],
        "outer_src": "192.168.77.1",
        "outer_dst": "192.168.77.2",
        "flags": 0x08,
        "vni": 1,
        "inner_src": src.ip,
        "inner_dst": dst.ip,
        "inner_proto": 17,
    }
    assert stats(f"{LAB_NETNS_PREFIX}2", "eth0")["rx_packets"] - before["underlay_rx"] >= n
    assert stats(f"{LAB_NETNS_PREFIX}2", "flannel.1")["rx_packets"] - before["vtep_rx"] >= n
    assert stats(f"{LAB_NETNS_PREFIX}1", "flannel.1")["tx_packets"] - before["vtep_tx"] >= n


@pytest.mark.root
def test_udp_same_node_stays_off_the_underlay(lab: Topology) -> None:
    src, dst = lab.pod("pod-a"), lab.pod("pod-b")
    rx = call_in(dst.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    tx = call_in(src.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    underlay_before = stats(f"{LAB_NETNS_PREFIX}1", "eth0")["tx_packets"]
    with rx, tx:
        rx.bind((dst.ip, 5556))
        rx.settimeout(2)
        for i in range(10):
            tx.sendto(b"same %d" % i, (dst.ip, 5556))
        assert len({rx.recvfrom(2048)[0] for _ in range(10)}) == 10
    assert stats(f"{LAB_NETNS_PREFIX}1", "eth0")["tx_packets"] == underlay_before


# ---------------------------------------------------------------- lab instances


@pytest.mark.root
def test_another_lab_id_is_an_independent_lab(lab: Topology) -> None:
    """CNIPROF_LAB_ID=x runs an independent lab (`cniprof_x-node...`): building, showing and removing it leaves
    this session's lab exactly as it was (same namespaces, same inodes, same state)."""
    other = f"{LAB_ID}x"
    theirs = f"cniprof_{other}-"
    inodes = {n: netns_inode(n) for n in lab.namespaces()}

    def their_namespaces() -> list[str]:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(theirs))

    try:
        up = cli("lab", "up", "--cni", "flannel", lab_id=other)
        assert up.returncode == 0, up.stderr
        assert their_namespaces() == sorted(n.replace(NETNS_PREFIX, theirs, 1) for n in lab.namespaces())
        status = cli("lab", "status", "--json", lab_id=other)
        assert status.returncode == 0, status.stderr
        assert {n["netns"] for n in json.loads(status.stdout)["nodes"]} == {f"{theirs}node1", f"{theirs}node2"}
        assert Topology.from_json(cli("lab", "status", "--json").stdout) == lab  # ours still reads as ours
    finally:
        down = cli("lab", "down", lab_id=other)
    assert down.returncode == 0, down.stderr
    assert their_namespaces() == []
    assert {n: netns_inode(n) for n in lab.namespaces()} == inodes and saved.load() == lab


# ---------------------------------------------------------------- cleanup (these remove the shared lab: last)


def _lab_namespaces() -> list[str]:
    return cleanup.list_lab_namespaces()


@pytest.mark.root
@pytest.mark.lab_destructive
def test_down_removes_everything_and_is_idempotent(no_lab: None) -> None:
    up = cli("lab", "up", "--cni", "flannel")
    assert up.returncode == 0, up.stderr
    assert len(_lab_namespaces()) == 6
    down = cli("lab", "down")
    assert down.returncode == 0, down.stderr
    assert f"{LAB_NETNS_PREFIX}1-pod-a" in down.stdout and f"{LAB_NETNS_PREFIX}2" in down.stdout
    assert _lab_namespaces() == []
    assert not saved.STATE_FILE.exists()
    again = cli("lab", "down")
    assert again.returncode == 0, again.stderr
    assert "nothing to remove" in again.stdout
    status = cli("lab", "status")
    assert status.returncode == 3 and "no lab is up" in status.stderr


@pytest.mark.root
@pytest.mark.lab_destructive
def test_down_after_a_crash_without_state_file(no_lab: None) -> None:
    assert cli("lab", "up", "--cni", "flannel").returncode == 0
    saved.STATE_FILE.unlink()
    refused = cli("lab", "up", "--cni", "flannel")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "run `cniprof lab down` first" in refused.stderr
    down = cli("lab", "down")
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("removed netns") == 6
    assert _lab_namespaces() == []


@pytest.mark.root
@pytest.mark.lab_destructive
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_build_leaves_nothing(no_lab: None, monkeypatch: pytest.MonkeyPatch, error: type) -> None:
    real_pod = flannel_recipe._pod
    calls = []

    def failing_pod(node: NodeSpec, pod: PodSpec) -> None:
        calls.append(pod.name)
        if len(calls) == 3:
            raise error("injected")
        real_pod(node, pod)

    monkeypatch.setattr(flannel_recipe, "_pod", failing_pod)
    with pytest.raises(error):
        realize.up("flannel")
    assert len(calls) == 3
    assert _lab_namespaces() == []
    assert saved.load() is None


@pytest.mark.root
@pytest.mark.lab_destructive
def test_stale_state_is_forgotten_and_a_partial_lab_refused(no_lab: None) -> None:
    topology, created = realize.up("flannel")
    assert created
    cleanup.remove_namespaces([f"{LAB_NETNS_PREFIX}2-pod-d"])  # someone deleted one namespace by hand
    status = cli("lab", "status")
    assert status.returncode == 3 and f"{LAB_NETNS_PREFIX}2-pod-d" in status.stderr
    with pytest.raises(CniprofError, match="lab down"):
        realize.up("flannel")
    cleanup.remove_namespaces(topology.namespaces())  # ... and then all of them: the record is just stale
    again, created = realize.up("flannel")
    assert created and saved.load() == again


BACKLOG = "net.core.netdev_max_backlog"


@pytest.mark.root
@pytest.mark.lab_destructive
def test_down_restores_the_host_sysctls_a_crashed_study_left(no_lab: None) -> None:
    """A study with host_changes killed half-way leaves a machine-wide sysctl changed and its old value in the
    state file; `lab down` puts it back. The study's own code changes it (entered, never left: the crash), the
    value moves by one (nobody notices), and host_sysctl's machine-wide lock is held throughout, so no other
    cniprof process changes it meanwhile (`lab down` runs in-process: the lock is re-entrant there)."""
    with host_sysctl.locked():
        old = host_sysctl.read(BACKLOG)
        crashed = host_sysctl.applied({BACKLOG: str(int(old) + 1)})
        crashed.__enter__()  # the study sets it ... and dies here, without its finally
        try:
            assert host_sysctl.read(BACKLOG) == str(int(old) + 1) and host_sysctl.STATE_FILE.exists()
            assert main(["lab", "down"]) == 0
            assert host_sysctl.read(BACKLOG) == old and not host_sysctl.STATE_FILE.exists()
        finally:
            if host_sysctl.read(BACKLOG) != old:
                host_sysctl.write(BACKLOG, old)
            host_sysctl.STATE_FILE.unlink(missing_ok=True)
