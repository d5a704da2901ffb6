# SPDX-License-Identifier: Apache-2.0
"""The one table that says which kernel functions belong to which datapath component, and the charging rule.

A sample is charged to the INNERMOST networking component on its kernel stack: the stack is walked from the leaf
(the function the CPU was in) towards the root, and the first frame a rule claims decides. Helpers that every
layer calls (memcpy, slab allocation, spinlocks, skb_release_data, ...) match no rule, so their time goes to the
layer that called them; `veth_xmit` reached from `tcp_sendmsg` is veth work, not TCP work. Generic copy routines
(`_copy_to_iter`, `rep_movs_alternative`) are "socket copy" only when a networking frame is above them: reading a
file copies with the same functions.

Rules are regular expressions matched against the whole function name after compiler suffixes are removed
(`.constprop.0`, `.isra.0`, `.part.0`, `.cold`, `.llvm.<n>`). Order matters where names overlap: the probe's own BPF
programs first, conntrack's `tcp_new` before TCP's `tcp_*`, tunnels' `udp_tunnel_*` before UDP's `udp_*`, GRO's
`*_gro_receive` before `tcp4_*`/`inet_*`. tests/unit/test_cpu_components.py covers every rule with real symbol names
of the kernel this was developed on (6.18).

Samples no rule claims are "other-softirq" (inside a softirq handler), "idle" (the idle task), "cniprof" (the
profiler's own process), "kernel" (any other kernel work) or "user" (no kernel stack: the CPU was in user mode).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Component:
    """name: as tables show it; group: the coarse bucket (netfilter's parts share one); datapath: packet
    processing (counts towards "share of CPU on the datapath"); hop_roles: substrings of the hop roles of
    cniprof.cni chains whose work this component is (empty: no hop it clearly belongs to); color: flame graphs."""

    name: str
    group: str
    datapath: bool
    hop_roles: tuple[str, ...]
    color: str


@dataclass(frozen=True)
class Rule:
    component: str
    pattern: str
    needs_net_caller: bool = False  # generic helper: counts only when a networking frame is above it


COMPONENTS: dict[str, Component] = {c.name: c for c in (
    Component("veth", "veth", True, ("veth xmit", "underlay xmit"), "#e6550d"),
    Component("bridge", "bridge", True, ("bridge",), "#31a354"),
    Component("vxlan/tunnel", "vxlan/tunnel", True, ("vxlan", "encap", "decap", "tunnel"), "#756bb1"),
    Component("netfilter/iptables", "netfilter", True, ("ip forward",), "#de2d26"),
    Component("netfilter/nftables", "netfilter", True, ("ip forward",), "#fb6a4a"),
    Component("netfilter/conntrack", "netfilter", True, ("ip forward",), "#a50f15"),
    Component("netfilter/nat", "netfilter", True, ("ip forward",), "#cb181d"),
    Component("netfilter/hooks", "netfilter", True, ("ip forward",), "#fc9272"),
    Component("ip", "ip", True, ("ip forward",), "#3182bd"),
    Component("tcp", "tcp", True, ("socket delivery",), "#6baed6"),
    Component("udp", "udp", True, ("socket delivery",), "#9ecae1"),
    Component("socket copy", "socket", True, ("socket delivery",), "#08519c"),
    Component("socket", "socket", True, ("socket delivery",), "#4292c6"),
    Component("qdisc", "qdisc", True, (), "#bcbd22"),
    Component("napi/driver", "napi/driver", True, ("backlog",), "#17becf"),
    Component("bpf", "bpf", False, (), "#636363"),
    Component("other-softirq", "other-softirq", False, (), "#bcbddc"),
    Component("kernel", "kernel", False, (), "#bdbdbd"),
    Component("user", "user", False, (), "#74c476"),
    Component("cniprof", "cniprof", False, (), "#969696"),
    Component("idle", "idle", False, (), "#f0f0f0"),
    Component("unknown", "unknown", False, (), "#d9d9d9"),
)}

DATAPATH = tuple(c.name for c in COMPONENTS.values() if c.datapath)
IDLE = "idle"

RULES: tuple[Rule, ...] = (
    # the profiler's own probes: a BPF program inside the datapath is measurement cost, not datapath work
    # (JIT-ed programs are named bpf_prog_<tag>_<name> in kallsyms; tracepoint dispatch is __traceiter_*/
    # __bpf_trace_*/bpf_trace_run*, and shows up whenever a program is attached to a tracepoint)
    Rule("bpf", r"bpf_prog_[0-9a-f]{16}\w*|bpf_trampoline_\d+\w*|bpf_trace_run\d+|__bpf_prog_(enter|exit)\w*"
                r"|__bpf_trace_\w+|__traceiter_\w+|__probestub_\w+"),
    # socket copy: the copies between skbs and the user's buffer
    Rule("socket copy", r"skb_copy_datagram_\w+|__skb_datagram_iter|simple_copy_to_iter|skb_copy_and_csum_datagram\w*"
                        r"|skb_copy_and_hash_datagram_iter|csum_and_copy_(to|from)_\w+|skb_do_copy_data_nocache"
                        r"|tcp_recvmsg_locked_copy"),
    Rule("socket copy", r"_copy_(to|from)_iter\w*|copy_page_(to|from)_iter\w*|copy_(to|from)_user_iter\w*"
                        r"|_copy_(to|from)_user|copy_user_\w+|rep_movs_alternative|__arch_copy_(to|from)_user"
                        r"|raw_copy_(to|from)_user|copyout|copyin|memcpy_(to|from)_iter\w*",
         needs_net_caller=True),
    # netfilter, most specific first; conntrack's TCP/UDP trackers have tcp_*/udp_* names
    Rule("netfilter/conntrack", r"nf_conntrack_\w+|__nf_conntrack_\w+|nf_ct_\w+|__nf_ct_\w+|ipv[46]_conntrack_\w+"
                                r"|nf_confirm|init_conntrack\w*|resolve_normal_ct|hash_conntrack_raw"
                                r"|tcp_(new|in_window|error|packet)|udp_error|icmp_error|nf_conntrack"),
    Rule("netfilter/nat", r"nf_nat_\w+|__nf_nat_\w+|nf_xfrm_me_harder|masquerade_tg6?|xt_(s|d)nat_target\w*"),
    Rule("netfilter/iptables", r"ipt_do_table|ip6t_do_table|arpt_do_table|ebt_do_table|iptable_\w+|ip6table_\w+"
                               r"|ebtable_\w+|xt_\w+|ipt_\w+|ebt_\w+|(tcp|udp)_mt\w*|tcpmss_\w+|tcpoptstrip_\w+"
                               r"|icmp6?_match|rt_mt6\w*"),
    Rule("netfilter/nftables", r"nft_\w+|__nft_\w+|nf_tables_\w+|nft_do_chain\w*"),
    Rule("netfilter/hooks", r"nf_hook_slow\w*|nf_hook\w*|nf_iterate|nf_reinject|nf_queue\w*|br_nf_\w+"
                            r"|ip_sabotage_in|setup_pre_routing|br_validate_ipv[46]|nf_bridge_\w+|nf_ip_checksum"
                            r"|nf_checksum\w*|nf_route\w*"),
    # tunnels before UDP (udp_tunnel_*) and before ip (ip_tunnel_*)
    Rule("vxlan/tunnel", r"vxlan_\w+|__vxlan_\w+|udp_tunnel\w*|iptunnel_\w+|__iptunnel_\w+|ip_tunnel_\w+"
                         r"|ip_md_tunnel_xmit|ip6?_?tunnel\w*|geneve\w*|gre_\w+|ipgre_\w+|ip6gre_\w+|erspan_\w+"
                         r"|ipip_\w+|wg_\w+|encap_bypass_if_local|INET_ECN_decapsulate|skb_tunnel_check_pmtu"
                         r"|dst_cache_\w+|gro_cell\w*"),
    Rule("veth", r"veth_\w+|__veth_\w+|dev_forward_skb\w*|__dev_forward_skb\w*"),
    Rule("bridge", r"br_\w+|__br_\w+|nbp_\w+|fdb_\w+|deliver_clone|maybe_deliver|should_deliver"),
    # GRO before the L3/L4 rules (inet_gro_receive, tcp4_gro_receive, udp_gro_receive)
    Rule("napi/driver", r"\w*_gro_(receive|complete)\w*|gro_\w+|dev_gro_receive|napi_gro_\w+|skb_gro_\w+"),
    Rule("qdisc", r"__dev_queue_xmit|dev_queue_xmit\w*|__dev_xmit_skb|__qdisc_run|qdisc_\w+|__qdisc_\w+"
                  r"|sch_direct_xmit|dev_qdisc_enqueue|pfifo_\w+|fq_codel_\w+|fq_(enqueue|dequeue|classify|flow\w*|gc)"
                  r"|htb_\w+|netem_\w+|tbf_\w+|prio_(enqueue|dequeue|peek|classify)|sfq_\w+|cake_\w+"
                  r"|noop_(en|de)queue|netdev_core_pick_tx|netdev_pick_tx"),
    Rule("ip", r"ip_rcv\w*|ip_list_rcv\w*|ip_sublist_rcv\w*|ip_route_\w+|ip_mkroute\w*|__mkroute_\w+|fib_\w+"
               r"|__fib_\w+|fib4_\w+|ip_forward\w*|ip_output|ip_finish_output\w*|__ip_finish_output"
               r"|ip_local_out|__ip_local_out|ip_local_deliver\w*|ip_protocol_deliver_rcu|ip_queue_xmit"
               r"|__ip_queue_xmit|ip_send_check|ip_skb_dst_mtu|ip_fragment\w*|ip_do_fragment|ip_defrag\w*"
               r"|ip_options_\w+|ip_build_and_send_pkt|__ip_select_ident|ip_idents_reserve|raw_local_deliver"
               r"|ipv4_\w+|ipv6_\w+|ip6_\w+|neigh_\w+|__neigh_\w+|ip_neigh_\w+|arp_\w+|dst_\w+|rt6_\w+"
               r"|rt_(cache|dst|add|del|set|fill|flush|fibinfo)\w*"
               r"|inet_lookup_ifaddr_rcu|inet_addr_hash\w*|icmp_\w+|l3mdev_\w+|ip_check_defrag"),
    Rule("udp", r"udp_\w+|__udp\w+|udp[46]_\w+|udpv6_\w+|__udp4_lib_\w+|__udp6_lib_\w+"),
    Rule("tcp", r"tcp_\w+|__tcp_\w+|tcp[46]_\w+|bbr_\w+|bictcp_\w+|cubictcp_\w+|inet_csk_\w+|__inet_lookup\w*"
                r"|inet_lookup\w*|inet_ehashfn|__inet_hash\w*|inet_hash\w*|established_get_\w+"),
    Rule("socket", r"sock_\w+|__sock_\w+|sk_\w+|__sk_\w+|sock_def_\w+|lock_sock\w*|release_sock|__release_sock"
                   r"|inet6?_(sendmsg|recvmsg|release|accept|listen|stream_connect|getname|ioctl|sendpage)"
                   r"|__sys_(sendto|recvfrom|sendmsg|recvmsg|sendmmsg|recvmmsg|connect|accept\w*|socket|bind"
                   r"|listen|shutdown)|__x64_sys_(sendto|recvfrom|sendmsg|recvmsg|sendmmsg|recvmmsg)"
                   r"|__arm64_sys_(sendto|recvfrom|sendmsg|recvmsg|sendmmsg|recvmmsg)|___sys_(sendmsg|recvmsg)"
                   r"|skb_attempt_defer_free|skb_free_datagram\w*|__skb_recv_\w+|__skb_try_recv_\w+"),
    Rule("napi/driver", r"net_rx_action|__napi_poll|napi_\w+|__napi_\w+|process_backlog|__netif_receive_skb\w*"
                        r"|netif_receive_skb\w*|netif_rx\w*|__netif_rx|enqueue_to_backlog|dev_hard_start_xmit"
                        r"|xmit_one|validate_xmit_skb\w*|netif_skb_features|eth_type_trans|eth_header\w*"
                        r"|__dev_direct_xmit|dev_direct_xmit|get_rps_cpu|rps_\w+|skb_gso_segment|__skb_gso_segment"
                        r"|skb_mac_gso_segment|inet_gso_segment|skb_segment\w*|do_xdp_generic|netif_receive_generic_xdp"
                        r"|loopback_xmit|virtnet_\w+|virtqueue_\w+|vring_\w+|e1000e?_\w+|ixgbe_\w+|i40e_\w+|ice_\w+"
                        r"|mlx[45]e?_\w+|ena_\w+|gve_\w+|bnxt_\w+|igb_\w+|igc_\w+|tg3_\w+|skb_defer_free_flush"),
)

_SUFFIX = re.compile(r"(\.(constprop|isra|part|cold|llvm|lto_priv|localalias)(\.\d+)?)+$")
_COMPILED = tuple((rule, re.compile(rule.pattern)) for rule in RULES)


def normalize(name: str) -> str:
    """Remove compiler clone suffixes: `__netif_receive_skb_core.constprop.0` -> `__netif_receive_skb_core`."""
    return _SUFFIX.sub("", name)


@lru_cache(maxsize=65536)
def rule_for(name: str) -> Rule | None:
    """The first rule whose pattern matches the whole (normalized) function name."""
    base = normalize(name)
    for rule, rx in _COMPILED:
        if rx.fullmatch(base):
            return rule
    return None


def frame_component(name: str) -> str | None:
    """The component a single function belongs to (flame graph colors), ignoring the caller condition."""
    rule = rule_for(name)
    return rule.component if rule else None


def innermost(kernel_frames: Sequence[str]) -> str | None:
    """The innermost networking component of a kernel stack given innermost frame first, or None."""
    for i, frame in enumerate(kernel_frames):
        rule = rule_for(frame)
        if rule is None:
            continue
        if rule.needs_net_caller:
            if any((r := rule_for(f)) is not None and not r.needs_net_caller for f in kernel_frames[i + 1:]):
                return rule.component
            continue
        return rule.component
    return None


def classify(kernel_frames: Sequence[str], *, softirq: str | None = None, idle_task: bool = False,
             profiler: bool = False, user_mode: bool = False, stack_lost: bool = False) -> str:
    """The component one sample is charged to (see the module docstring for the order of the fallbacks).

    softirq: the vector the sample interrupted ("NET_RX"), if any; idle_task: tgid 0; profiler: cniprof's own
    process; user_mode: the sample has no kernel stack because the CPU was in user space; stack_lost: the kernel
    stack was not recorded (stack map collision).
    """
    component = innermost(kernel_frames)
    if component is not None:
        return component
    if softirq:
        return "other-softirq"
    if stack_lost:
        return "unknown"
    if idle_task:
        return IDLE
    if profiler:
        return "cniprof"
    if user_mode or not kernel_frames:
        return "user"
    return "kernel"


def roles_for(component: str) -> tuple[str, ...]:
    c = COMPONENTS.get(component)
    return c.hop_roles if c else ()


def color_for(component: str | None) -> str | None:
    c = COMPONENTS.get(component or "")
    return c.color if c else None
