# SPDX-License-Identifier: Apache-2.0
"""The advice catalog: for each finding kind, the tunings that address it, per CNI, each with its risk.

An item's `tune` is the name `cniprof tune --try NAME` accepts when the tuning can be measured in the lab (None:
advice only). Commands are templates filled from the finding's context ({dev}, {netns}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Advice:
    title: str
    how: dict[str, str]  # cni family (or "default") -> exact command or configuration
    risk: str
    tune: str | None = None

    def render(self, ctx: dict[str, Any]) -> dict[str, Any]:
        how = self.how.get(str(ctx.get("cni") or ""), self.how.get("default", ""))
        devs = ctx.get("devices") or ["<dev>"]
        netns = (ctx.get("netns") or ["<node netns>"])[0]
        how = how.replace("{dev}", devs[0] if isinstance(devs[0], str) else "<dev>").replace("{netns}", netns)
        return {"title": self.title, "how": how, "risk": self.risk, "tune": self.tune}


NO_TUNNEL = Advice(
    "route pod traffic without a tunnel (nodes share an L2 or run BGP)",
    {"flannel": 'net-conf.json: "Backend": {"Type": "host-gw"}',
     "calico": "IPPool: spec.vxlanMode: Never (or CrossSubnet), spec.ipipMode: Never (or CrossSubnet)",
     "cilium": "helm: routingMode=native, ipv4NativeRoutingCIDR=<pod CIDR>, autoDirectNodeRoutes=true",
     "default": "use the CNI's native-routing mode instead of VXLAN/IPIP"},
    "needs L2 adjacency (host-gw) or routes for the pod CIDRs in the underlay; cross-subnet nodes lose connectivity",
    "host-gw")
JUMBO = Advice(
    "jumbo underlay MTU so the overlay MTU grows too (fewer packets per byte, encap cost amortised)",
    {"flannel": "ip link set dev eth0 mtu 9000 on every node; flannel derives flannel.1 = 8950 (or net-conf.json "
                '"MTU": 8950)',
     "calico": "ip link set dev eth0 mtu 9000; FelixConfiguration spec.mtu: 8950 (vxlanMTU) and calico-config "
               "ConfigMap veth_mtu: \"8950\"",
     "cilium": "ip link set dev eth0 mtu 9000; helm: MTU=8950 (cilium-config mtu)",
     "default": "ip link set dev eth0 mtu 9000 on every node and the pod MTU to 9000 minus the encap overhead"},
    "every switch and NIC on the path must carry 9000-byte frames, or large packets black-hole", "jumbo-mtu")
MTU_MATCH = Advice(
    "make the pod/overlay MTU = underlay MTU - encapsulation overhead (VXLAN 50 B, IPIP 20 B)",
    {"flannel": 'net-conf.json: "MTU": <underlay MTU - 50> (flannel writes it to subnet.env; pods get it on '
                "restart)",
     "calico": "FelixConfiguration spec.mtu (or vxlanMTU/ipipMTU): <underlay - overhead>; calico-config ConfigMap "
               "veth_mtu: \"<underlay - overhead>\"; restart the pods",
     "cilium": "helm: MTU=<underlay MTU - 50> (cilium-config mtu); restart the pods",
     "default": "set the CNI's MTU to the underlay MTU minus the encapsulation overhead"},
    "pods must be restarted to pick up the new veth MTU; too small an MTU costs throughput", "mtu-match")
OFFLOADS = Advice(
    "turn segmentation and checksum offloads back on",
    {"default": "ip netns exec {netns} ethtool -K {dev} tx on gso on tso on (every node; persist it in the node's "
                "network config or a systemd unit)"},
    "a few old NIC drivers miscompute VXLAN checksums with tx offload (the reason some guides turn it off): "
    "check the driver's errata first", "offloads-on")
KPROXY_NFT = Advice(
    "kube-proxy in nftables mode (verdict maps: O(1) per service instead of a linear iptables walk)",
    {"default": "kube-proxy --proxy-mode=nftables (Kubernetes >= 1.31; or IPVS --proxy-mode=ipvs: not in this lab "
                "kernel)"},
    "nftables mode needs kernel >= 5.13 and kube-proxy >= 1.29; NodePort semantics differ slightly from iptables "
    "mode", "kube-proxy-nftables")
EBPF_DATAPATH = Advice(
    "an eBPF service datapath that bypasses netfilter",
    {"default": "Cilium with kubeProxyReplacement=true (or Calico eBPF dataplane: FelixConfiguration "
                "bpfEnabled: true)"},
    "replaces kube-proxy entirely: a big change, test services, NodePorts and policies before rollout")
NOTRACK = Advice(
    "skip conntrack for pod-to-pod traffic that needs no NAT",
    {"default": "iptables -t raw -A PREROUTING -s <pod CIDR> -d <pod CIDR> -j NOTRACK (and OUTPUT); Calico: "
                "doNotTrack policy"},
    "stateful rules (NetworkPolicy, NAT, services) stop matching that traffic", "notrack")
RPS = Advice(
    "spread receive softirq over CPUs (RPS on the veths and the NIC)",
    {"default": "echo f > /sys/class/net/<dev>/queues/rx-0/rps_cpus (all veths and eth0; "
                "sysctl net.core.rps_sock_flow_entries=32768 and rps_flow_cnt for RFS)"},
    "cross-CPU IPIs and cache misses: can cost latency when CPUs are not the bottleneck", "rps-spread")
UNPIN = Advice(
    "do not pin the workload onto the CPU that takes the network softirq",
    {"default": "remove the taskset/cpuset pinning (Kubernetes: CPU manager policy none, or give the pod CPUs "
                "other than the NIC's IRQ CPUs)"},
    "pinning was often chosen for cache locality; unpinned processes can be migrated", "unpin-generators")
BACKLOG = Advice(
    "a bigger per-CPU input backlog",
    {"default": "sysctl -w net.core.netdev_max_backlog=16384 (and net.core.netdev_budget=600)"},
    "more memory queued per CPU and more latency under overload instead of drops", "netdev-backlog")
QDISC = Advice(
    "shorten or replace the queue that holds packets",
    {"default": "tc qdisc replace dev <dev> root fq_codel (or pfifo limit 100); check shapers (tbf) on the device"},
    "an AQM drops earlier under bursts; a shaper removed lets the traffic exceed the agreed rate")
ROUTES = Advice(
    "check routes and policies for the dropped destination",
    {"default": "ip route get <dst>; iptables -S | grep -E 'DROP|REJECT'; kubectl get networkpolicy -A"},
    "none: read-only checks")

CATALOG: dict[str, list[Advice]] = {
    "tunnel_overhead": [NO_TUNNEL, JUMBO],
    "offloads_off": [OFFLOADS],
    "mtu_mismatch": [MTU_MATCH, JUMBO],
    "netfilter_cost": [KPROXY_NFT, EBPF_DATAPATH, NOTRACK],
    "softirq_imbalance": [RPS, UNPIN],
    "drops": [BACKLOG, QDISC, ROUTES],
    "qdisc_queueing": [QDISC],
    "tcp_retransmits": [MTU_MATCH, BACKLOG],
}
# the dominant hop's advice depends on what the hop is
BY_HOP_KIND: dict[str, list[Advice]] = {
    "encap/decap": [NO_TUNNEL, JUMBO],
    "routing + netfilter": [NOTRACK, KPROXY_NFT],
    "veth backlog": [RPS, BACKLOG],
    "bridge": [EBPF_DATAPATH],
    "device xmit + qdisc": [QDISC],
}


def advice_for(kind: str, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    items = BY_HOP_KIND.get(str(ctx.get("hop_kind")), []) if kind == "dominant_hop" else CATALOG.get(kind, [])
    if kind == "drops" and not ctx.get("backlog"):
        items = [a for a in items if a is not BACKLOG]
    if kind == "softirq_imbalance" and ctx.get("pinned"):
        items = [UNPIN, RPS]
    if kind == "tunnel_overhead" and ctx.get("cni") in ("host", "macvlan", "bridge"):
        items = []
    return [a.render(ctx) for a in items]


TUNE_NAMES = ("offloads-on", "mtu-match", "jumbo-mtu", "rps-spread", "unpin-generators", "kube-proxy-nftables",
              "notrack", "host-gw", "netdev-backlog")
