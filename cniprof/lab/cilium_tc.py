# SPDX-License-Identifier: Apache-2.0
"""Load bpf/cilium_tc.bpf.c for one lab node, fill its maps and attach its programs with tc, as a Cilium agent
does for its node.

Why tc filters and not bpf_links: a filter belongs to its device, like Cilium's, so the datapath keeps working
after the process that built the lab exits, and it goes away with the device when the lab's namespaces are
deleted (nothing is pinned, nothing else holds the programs). The object is closed before `install` returns:
the only references left to the programs (and, through them, to their maps) are the filters'.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cniprof.bpf import libbpf
from cniprof.bpf.build import object_path
from cniprof.errors import EnvironmentProblem
from cniprof.lab import cilium_abi as abi
from cniprof.netns_exec import call_in

OBJECT = "cilium_tc"


@dataclass(frozen=True)
class Endpoint:
    """A pod on this node: where bpf_redirect_peer sends its packets and which L2 addresses they get."""

    ip: str
    ifindex: int  # its lxc veth in the node namespace
    mac: str  # the pod's eth0
    node_mac: str  # the lxc veth (the pod's gateway MAC)
    identity: int


@dataclass(frozen=True)
class Remote:
    """An ipcache entry: a prefix owned by another node (its pods' /32s and its pod CIDR)."""

    cidr: str
    node_ip: str  # the tunnel endpoint
    identity: int = abi.CIL_WORLD_ID


@dataclass(frozen=True)
class NodeDatapath:
    netns: str
    mode: int  # abi.CIL_MODE_*
    node_ip: str
    underlay_ifindex: int
    vxlan_ifindex: int  # 0 in native mode
    endpoints: tuple[Endpoint, ...]
    remotes: tuple[Remote, ...]

    def attachments(self) -> list[tuple[str, int]]:
        """(program, ifindex) for every tc ingress hook of the node."""
        out = [(abi.PROG_LXC, ep.ifindex) for ep in self.endpoints]
        out.append((abi.PROG_NETDEV, self.underlay_ifindex))
        if self.vxlan_ifindex:
            out.append((abi.PROG_VXLAN, self.vxlan_ifindex))
        return out


def be32(ip: str) -> int:
    """An IPv4 address as the native u32 whose bytes are in network order (how the programs compare them)."""
    return int(struct.unpack("=I", socket.inet_aton(ip))[0])


def _mac(text: str) -> ctypes.Array:
    return (ctypes.c_uint8 * 6).from_buffer_copy(bytes.fromhex(text.replace(":", "")))


def _checked(obj: libbpf.Object, name: str, key: type, value: type) -> libbpf.Map:
    obj.check_maps({name: (key, value)})
    return obj.map(name)


def _fill(obj: libbpf.Object, dp: NodeDatapath) -> None:
    cfg = abi.CilConfig(dp.mode, dp.vxlan_ifindex, dp.underlay_ifindex, be32(dp.node_ip))
    _checked(obj, "cil_config", ctypes.c_uint32, abi.CilConfig).update(ctypes.c_uint32(0), cfg)
    lxc = _checked(obj, "cil_lxc", ctypes.c_uint32, abi.CilEndpoint)
    for ep in dp.endpoints:
        lxc.update(ctypes.c_uint32(be32(ep.ip)),
                   abi.CilEndpoint(ep.ifindex, ep.identity, _mac(ep.mac), _mac(ep.node_mac)))
    ipcache = _checked(obj, "cil_ipcache", abi.CilIpcacheKey, abi.CilRemote)
    for r in dp.remotes:
        ip, _, plen = r.cidr.partition("/")
        ipcache.update(abi.CilIpcacheKey(int(plen or 32), be32(ip)), abi.CilRemote(be32(r.node_ip), r.identity))


def install(dp: NodeDatapath, attach: Callable[[int, int], int] | None = None) -> dict[tuple[str, int], int]:
    """Load one object for the node, fill its maps, attach its programs; returns (program, ifindex) -> the
    program id the kernel reports. On failure what was attached stays on the node's devices (the lab's rollback
    removes the namespaces, and the filters with them)."""
    attach = attach or (lambda ifindex, fd: libbpf.tc_attach(ifindex, libbpf.BPF_TC_INGRESS, fd))
    with libbpf.Object(object_path(OBJECT)) as obj:
        if not dp.vxlan_ifindex:
            obj.set_autoload(abi.PROG_VXLAN, False)
        obj.load()
        _fill(obj, dp)
        targets = [(name, ifindex, obj.prog_fd(name)) for name, ifindex in dp.attachments()]

        def attach_all() -> dict[tuple[str, int], int]:
            return {(name, ifindex): attach(ifindex, fd) for name, ifindex, fd in targets}

        try:
            return call_in(dp.netns, attach_all)
        except OSError as e:
            raise EnvironmentProblem(f"cannot attach the Cilium-style tc programs in {dp.netns}: {e}") from None
