# SPDX-License-Identifier: Apache-2.0
"""What a realized lab (or, later, a discovered node) looks like: namespaces, devices, pods.

These frozen dataclasses are the contract between the lab and everything downstream (probes resolve points
from them, analysis names hops with them, `lab status --json` prints them). They hold plain data only, so a
topology can be saved to /run/cniprof/lab.json and read back by a later process without root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# underlay: the node's NIC; bridge: cni0; vxlan: a VXLAN VTEP (flannel.1, vxlan.calico); tunnel: another L3
# tunnel (Calico's tunl0); host_veth/pod_veth: the two ends of a pod's veth; macvlan: a pod's macvlan eth0
ROLES = ("underlay", "bridge", "vxlan", "tunnel", "host_veth", "pod_veth", "macvlan")
# CNIPROF_LAB_ID runs an independent lab instance (parallel test sessions, two users): its namespaces are
# `cniprof_<id>-node...`, which the default instance's `cniprof-` prefix never matches, and vice versa.
LAB_ID = os.environ.get("CNIPROF_LAB_ID", "")
NETNS_PREFIX = f"cniprof_{LAB_ID}-" if LAB_ID else "cniprof-"
# every namespace a lab creates starts with this, so `lab down` can find them without the state file
LAB_NETNS_PREFIX = f"{NETNS_PREFIX}node"
NETNS_DIR = "/run/netns"


@dataclass(frozen=True)
class Device:
    """A network device of interest; (netns, ifindex) is what a probe sees, name/role are for humans."""

    name: str
    role: str
    ifindex: int
    netns: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "ifindex": self.ifindex, "netns": self.netns}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Device:
        return cls(name=d["name"], role=d["role"], ifindex=int(d["ifindex"]), netns=d["netns"])


@dataclass(frozen=True)
class Node:
    """A Kubernetes node, emulated by a network namespace holding the CNI's host-side devices."""

    name: str
    netns: str
    devices: tuple[Device, ...]

    def device(self, name: str) -> Device:
        return _find_device(self.devices, name, self.netns)

    def by_role(self, role: str) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.role == role)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "netns": self.netns, "devices": [d.to_dict() for d in self.devices]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(name=d["name"], netns=d["netns"], devices=tuple(Device.from_dict(x) for x in d["devices"]))


@dataclass(frozen=True)
class Pod:
    """A pod: its own namespace with eth0, whose peer (host_veth) lives in the node namespace."""

    name: str
    node: str
    netns: str
    ip: str
    host_veth: str
    devices: tuple[Device, ...]

    def device(self, name: str) -> Device:
        return _find_device(self.devices, name, self.netns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "netns": self.netns,
            "ip": self.ip,
            "host_veth": self.host_veth,
            "devices": [d.to_dict() for d in self.devices],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pod:
        return cls(
            name=d["name"],
            node=d["node"],
            netns=d["netns"],
            ip=d["ip"],
            host_veth=d["host_veth"],
            devices=tuple(Device.from_dict(x) for x in d.get("devices", ())),
        )


@dataclass(frozen=True)
class Topology:
    """A whole lab. underlay_ips maps node name -> the node's underlay address (the VXLAN outer IP); host_ips
    maps node name -> the address pod-to-host traffic is sent to (the node's own stack; underlay IP if absent).

    In the `host` model the "pods" are the node endpoints themselves: Pods whose netns is the node's namespace,
    with no devices of their own and no host veth.
    """

    cni: str
    mode: str
    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    # a dict cannot be hashed; keep it out of the generated __hash__ so the dataclass stays usable as a key
    underlay_ips: dict[str, str] = field(default_factory=dict, hash=False)
    host_ips: dict[str, str] = field(default_factory=dict, hash=False)
    # problems injected on purpose (`lab up --inject`, cniprof.run.inject), in the order applied; they stay until
    # `lab down`, and traces and `tune` read them from here (softirq-one-cpu pins their generators)
    injections: tuple[str, ...] = ()

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in the topology")

    def pod(self, name: str) -> Pod:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(f"no pod {name!r} in the topology")

    def host_endpoint(self, node_name: str) -> Pod:
        """The node's own IP stack as a traffic endpoint (pod-to-host): a Pod-shaped view of the node namespace.

        Its name is the node's name; it has no devices (the node's devices carry the points) and no host veth.
        """
        node = self.node(node_name)
        ip = self.host_ips.get(node_name) or self.underlay_ips.get(node_name)
        if not ip:
            raise KeyError(f"node {node_name!r} has no address for pod-to-host traffic")
        return Pod(node.name, node.name, node.netns, ip, "", ())

    def devices(self) -> Iterator[Device]:
        """Every device of every node and pod."""
        for n in self.nodes:
            yield from n.devices
        for p in self.pods:
            yield from p.devices

    def device(self, netns: str, name: str) -> Device:
        for d in self.devices():
            if d.netns == netns and d.name == name:
                return d
        raise KeyError(f"no device {name!r} in namespace {netns!r}")

    def namespaces(self) -> tuple[str, ...]:
        """Node namespaces first, then pod namespaces (the order they are created in), each once (the host
        model's endpoints live in the node namespaces)."""
        return tuple(dict.fromkeys([n.netns for n in self.nodes] + [p.netns for p in self.pods]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cni": self.cni,
            "mode": self.mode,
            "nodes": [n.to_dict() for n in self.nodes],
            "pods": [p.to_dict() for p in self.pods],
            "underlay_ips": dict(self.underlay_ips),
            "host_ips": dict(self.host_ips),
            "injections": list(self.injections),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Topology:
        return cls(
            cni=d["cni"],
            mode=d["mode"],
            nodes=tuple(Node.from_dict(x) for x in d["nodes"]),
            pods=tuple(Pod.from_dict(x) for x in d["pods"]),
            underlay_ips=dict(d.get("underlay_ips", {})),
            host_ips=dict(d.get("host_ips", {})),
            injections=tuple(d.get("injections", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> Topology:
        return cls.from_dict(json.loads(text))


def _find_device(devices: tuple[Device, ...], name: str, netns: str) -> Device:
    for d in devices:
        if d.name == name:
            return d
    raise KeyError(f"no device {name!r} in namespace {netns!r}")


def netns_path(netns_name: str) -> str:
    return os.path.join(NETNS_DIR, netns_name)


def netns_inode(netns_name: str) -> int:
    """The namespace's inode number, which equals the kernel's net->ns.inum that BPF programs read.

    /run/netns/<name> is a bind mount of the nsfs file, so stat() on it reports the namespace inode. It
    changes every time the lab is rebuilt, which is why it is not stored in the topology.
    """
    return os.stat(netns_path(netns_name)).st_ino
