# SPDX-License-Identifier: Apache-2.0
"""Every component rule, exercised with real function names of the kernel cniprof was developed on (6.18.44,
/proc/kallsyms), and the innermost-component charging rule on real stacks recorded from the flannel lab."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from cniprof.analysis.cpu_components import (
    COMPONENTS,
    DATAPATH,
    RULES,
    classify,
    innermost,
    normalize,
    rule_for,
)

# name -> component; every name is a real 6.18 symbol (test_examples_are_real_symbols checks it where it can)
EXAMPLES = {
    # probe overhead
    "bpf_trace_run1": "bpf",
    "__bpf_prog_enter_recur": "bpf",
    "__traceiter_net_dev_queue": "bpf",
    "bpf_trampoline_6442543516": "bpf",  # shape of a trampoline symbol ([bpf] module, not in kallsyms until used)
    "bpf_prog_6deef7357e7b4530_on_netif_receive_skb": "bpf",  # shape of a JIT-ed program symbol
    # socket copy (specific)
    "skb_copy_datagram_iter": "socket copy",
    "__skb_datagram_iter": "socket copy",
    "simple_copy_to_iter": "socket copy",
    "skb_copy_and_csum_datagram_msg": "socket copy",
    "csum_and_copy_from_iter_full": "socket copy",
    # generic copies: socket copy only under a networking caller (see test_copy_needs_net_caller)
    "_copy_to_iter": "socket copy",
    "_copy_from_iter": "socket copy",
    "copy_page_to_iter": "socket copy",
    "rep_movs_alternative": "socket copy",
    "_copy_from_user": "socket copy",
    # netfilter
    "nf_conntrack_in": "netfilter/conntrack",
    "__nf_conntrack_confirm": "netfilter/conntrack",
    "nf_conntrack_tcp_packet": "netfilter/conntrack",
    "nf_ct_get_tuple": "netfilter/conntrack",
    "ipv4_conntrack_in": "netfilter/conntrack",
    "nf_confirm": "netfilter/conntrack",
    "tcp_new": "netfilter/conntrack",  # conntrack's TCP tracker, not TCP
    "nf_nat_inet_fn": "netfilter/nat",
    "nf_nat_ipv4_pre_routing": "netfilter/nat",
    "xt_dnat_target_v2": "netfilter/nat",
    "masquerade_tg": "netfilter/nat",
    "ipt_do_table": "netfilter/iptables",
    "ebt_ip_mt": "netfilter/iptables",
    "ip6t_do_table": "netfilter/iptables",
    "xt_find_match": "netfilter/iptables",
    "tcp_mt": "netfilter/iptables",  # the xt tcp match, not TCP
    "udp_mt": "netfilter/iptables",
    "rt_mt6": "netfilter/iptables",
    "nft_do_chain": "netfilter/nftables",
    "nft_immediate_eval": "netfilter/nftables",
    "nf_tables_commit": "netfilter/nftables",
    "nf_hook_slow": "netfilter/hooks",
    "nf_hook_slow_list": "netfilter/hooks",
    "br_nf_pre_routing": "netfilter/hooks",  # br_netfilter before the bridge rule
    "br_nf_hook_thresh": "netfilter/hooks",
    "ip_sabotage_in": "netfilter/hooks",
    "setup_pre_routing": "netfilter/hooks",
    # tunnels
    "vxlan_xmit": "vxlan/tunnel",
    "vxlan_xmit_one": "vxlan/tunnel",
    "vxlan_rcv": "vxlan/tunnel",
    "vxlan_build_skb.isra.0": "vxlan/tunnel",
    "udp_tunnel_xmit_skb": "vxlan/tunnel",  # before udp
    "iptunnel_xmit": "vxlan/tunnel",
    "__iptunnel_pull_header": "vxlan/tunnel",
    "ip_tunnel_xmit": "vxlan/tunnel",  # before ip
    "encap_bypass_if_local": "vxlan/tunnel",
    "skb_tunnel_check_pmtu": "vxlan/tunnel",
    "dst_cache_get_ip4": "vxlan/tunnel",  # before ip's dst_*
    "gro_cell_poll": "vxlan/tunnel",
    # veth
    "veth_xmit": "veth",
    "veth_poll": "veth",
    "__dev_forward_skb2": "veth",
    "dev_forward_skb": "veth",
    # bridge
    "br_handle_frame": "bridge",
    "br_handle_frame_finish": "bridge",
    "br_dev_xmit": "bridge",
    "br_forward_finish": "bridge",
    "__br_forward": "bridge",
    "fdb_find_rcu": "bridge",
    "br_fdb_update": "bridge",
    # GRO (before tcp/udp/ip)
    "inet_gro_receive": "napi/driver",
    "tcp4_gro_receive": "napi/driver",
    "tcp_gro_receive": "napi/driver",
    "udp4_gro_receive": "napi/driver",
    "dev_gro_receive": "napi/driver",
    "gro_receive_skb": "napi/driver",
    "napi_gro_frags": "napi/driver",
    # qdisc
    "__dev_queue_xmit": "qdisc",
    "__qdisc_run": "qdisc",
    "sch_direct_xmit": "qdisc",
    "pfifo_fast_enqueue": "qdisc",
    "pfifo_fast_dequeue": "qdisc",
    "htb_dequeue": "qdisc",
    "tbf_enqueue": "qdisc",
    "netdev_core_pick_tx": "qdisc",
    # ip
    "ip_rcv": "ip",
    "ip_rcv_finish_core": "ip",
    "ip_sublist_rcv": "ip",
    "ip_route_input_slow": "ip",
    "fib_table_lookup": "ip",
    "fib_validate_source": "ip",
    "ip_forward": "ip",
    "ip_finish_output2": "ip",
    "__ip_queue_xmit": "ip",
    "ip_local_deliver_finish": "ip",
    "ip_protocol_deliver_rcu": "ip",
    "ipv4_dst_check": "ip",
    "neigh_resolve_output": "ip",
    "arp_process": "ip",
    "rt_dst_alloc": "ip",
    "icmp_rcv": "ip",
    "ip6_finish_output2": "ip",
    # udp
    "udp_queue_rcv_one_skb": "udp",
    "__udp4_lib_rcv": "udp",
    "udp_unicast_rcv_skb": "udp",
    "udp_sendmsg": "udp",
    "udpv6_queue_rcv_skb": "udp",
    # tcp
    "tcp_v4_rcv": "tcp",
    "tcp_rcv_established": "tcp",
    "tcp_sendmsg_locked": "tcp",
    "tcp_write_xmit": "tcp",
    "__tcp_transmit_skb": "tcp",
    "tcp_ack": "tcp",
    "bbr_main": "tcp",
    "inet_csk_accept": "tcp",
    "__inet_lookup_established": "tcp",
    # socket
    "sock_write_iter": "socket",
    "sock_recvmsg": "socket",
    "sock_def_readable": "socket",
    "release_sock": "socket",
    "__release_sock": "socket",
    "lock_sock_nested": "socket",
    "sk_filter_trim_cap": "socket",
    "inet_sendmsg": "socket",
    "__sys_sendto": "socket",
    "__x64_sys_sendto": "socket",
    "skb_attempt_defer_free": "socket",
    "__skb_recv_udp": "socket",
    # napi / driver / device core
    "net_rx_action": "napi/driver",
    "__napi_poll": "napi/driver",
    "napi_complete_done": "napi/driver",
    "process_backlog": "napi/driver",
    "__netif_receive_skb_core.constprop.0": "napi/driver",
    "__netif_receive_skb_one_core": "napi/driver",
    "netif_receive_skb_list_internal": "napi/driver",
    "netif_rx_internal": "napi/driver",
    "enqueue_to_backlog": "napi/driver",
    "dev_hard_start_xmit": "napi/driver",
    "validate_xmit_skb.isra.0": "napi/driver",
    "eth_type_trans": "napi/driver",
    "inet_gso_segment": "napi/driver",
    "virtnet_poll": "napi/driver",
    "virtqueue_add_outbuf": "napi/driver",
    "skb_defer_free_flush": "napi/driver",
}

# real functions that are NOT datapath work (or belong to whoever called them)
NOT_NETWORKING = [
    "memcpy_orig", "memset", "kmem_cache_alloc_node_noprof", "kmem_cache_free", "__alloc_skb", "kfree_skb_partial",
    "skb_release_data", "pskb_expand_head", "_raw_spin_lock", "_raw_spin_unlock_irqrestore", "__schedule",
    "do_syscall_64", "entry_SYSCALL_64_after_hwframe", "vfs_read", "ksys_write", "handle_softirqs",
    "do_softirq.part.0", "__local_bh_enable_ip", "asm_sysvec_apic_timer_interrupt", "default_idle",
    "pv_native_safe_halt", "do_idle", "filemap_read", "bpf_prog_change_xdp", "bpf_prog_alloc_jited_linfo",
    # look-alikes the rules must not swallow
    "throtl_add_bio_tg", "prio_changed_fair", "fq_flush_timeout", "iterate_dir", "rt_mutex_lock",
    "trace_event_raw_event_sched_switch",
]

FLANNEL_TCP_SEND = [  # a real sample: iperf3 sending, inside the softirq run on bh enable, in the bridge
    "fdb_find_rcu", "br_handle_frame_finish", "br_nf_hook_thresh", "br_nf_pre_routing_finish", "br_nf_pre_routing",
    "br_handle_frame", "__netif_receive_skb_core.constprop.0", "__netif_receive_skb_one_core", "process_backlog",
    "__napi_poll", "net_rx_action", "handle_softirqs", "do_softirq.part.0", "__local_bh_enable_ip",
    "__dev_queue_xmit", "ip_finish_output2", "ip_output", "__ip_queue_xmit", "__tcp_transmit_skb",
    "tcp_write_xmit", "__tcp_push_pending_frames", "tcp_sendmsg_locked", "tcp_sendmsg", "sock_write_iter",
    "vfs_write", "ksys_write", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
]


@pytest.mark.parametrize("name,component", sorted(EXAMPLES.items()))
def test_example_names(name: str, component: str) -> None:
    rule = rule_for(name)
    assert rule is not None and rule.component == component, (name, rule)


def test_every_rule_has_an_example() -> None:
    used = {RULES.index(r) for r in map(rule_for, EXAMPLES) if r is not None}
    assert used == set(range(len(RULES))), [RULES[i].component for i in set(range(len(RULES))) - used]


def test_every_datapath_component_has_a_rule() -> None:
    assert {r.component for r in RULES} >= set(DATAPATH)
    assert {r.component for r in RULES} <= set(COMPONENTS)


@pytest.mark.parametrize("name", NOT_NETWORKING)
def test_not_networking(name: str) -> None:
    assert rule_for(name) is None, (name, rule_for(name))


def test_examples_are_real_symbols() -> None:
    """On the development kernel, every example (but the BPF shapes) exists in /proc/kallsyms."""
    if not platform.release().startswith("6.18") or os.geteuid() != 0:
        pytest.skip("the names were taken from a 6.18 kernel's kallsyms (needs root to read)")
    names = {line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines() if len(line.split()) > 2}
    fake = {n for n in EXAMPLES if n.startswith(("bpf_prog_6", "bpf_trampoline_6"))}
    missing = sorted(n for n in [*EXAMPLES, *FLANNEL_TCP_SEND, *NOT_NETWORKING] if n not in names and n not in fake)
    assert not missing


def test_normalize_removes_clone_suffixes() -> None:
    assert normalize("__netif_receive_skb_core.constprop.0") == "__netif_receive_skb_core"
    assert normalize("tcp_rearm_rto.part.0") == "tcp_rearm_rto"
    assert normalize("vxlan_rcv.cold") == "vxlan_rcv"
    assert normalize("tcp_rcv_established") == "tcp_rcv_established"


def test_innermost_component_wins() -> None:
    assert innermost(FLANNEL_TCP_SEND) == "bridge"
    assert innermost(FLANNEL_TCP_SEND[1:]) == "bridge"
    assert innermost(FLANNEL_TCP_SEND[2:]) == "netfilter/hooks"
    assert innermost(FLANNEL_TCP_SEND[FLANNEL_TCP_SEND.index("__dev_queue_xmit"):]) == "qdisc"
    # helpers with no rule are charged to their caller
    assert innermost(["memcpy_orig", "skb_copy_bits", "vxlan_xmit_one", "vxlan_xmit"]) == "vxlan/tunnel"
    assert innermost(["_raw_spin_lock", "tcp_v4_rcv", "ip_protocol_deliver_rcu"]) == "tcp"


def test_copy_needs_net_caller() -> None:
    sock_read = ["rep_movs_alternative", "_copy_to_iter", "__skb_datagram_iter", "skb_copy_datagram_iter",
                 "tcp_recvmsg_locked", "tcp_recvmsg", "sock_recvmsg", "vfs_read"]
    file_read = ["rep_movs_alternative", "_copy_to_iter", "copy_page_to_iter", "filemap_read", "vfs_read",
                 "ksys_read", "do_syscall_64"]
    tcp_send = ["_copy_from_iter", "tcp_sendmsg_locked", "tcp_sendmsg", "sock_write_iter"]
    assert innermost(sock_read) == "socket copy"
    assert innermost(tcp_send) == "socket copy"
    assert innermost(file_read) is None
    assert classify(file_read) == "kernel"


def test_fallbacks() -> None:
    idle = ["pv_native_safe_halt", "default_idle", "default_enter_idle", "cpuidle_enter_state", "do_idle"]
    assert classify(idle, idle_task=True) == "idle"
    assert classify(idle, idle_task=True, softirq="TIMER") == "other-softirq"
    assert classify(["run_timer_softirq", "handle_softirqs"], softirq="TIMER") == "other-softirq"
    assert classify([], user_mode=True) == "user"
    assert classify([], stack_lost=True) == "unknown"
    assert classify(["do_select", "core_sys_select"]) == "kernel"
    assert classify(["do_select"], profiler=True) == "cniprof"
    # networking work done on the profiler's or the idle task's time is still networking
    assert classify(FLANNEL_TCP_SEND, profiler=True) == "bridge"
    assert classify(["net_rx_action", "handle_softirqs", "do_idle"], idle_task=True, softirq="NET_RX") == "napi/driver"
