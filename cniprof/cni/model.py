# SPDX-License-Identifier: Apache-2.0
"""CNI networking models as pure data: which devices a datapath has and which hop chain a packet should follow."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = ("queue", "xmit", "rx", "receive", "copy")
PLACES = ("src_pod", "src_node", "dst_node", "dst_pod")


@dataclass(frozen=True)
class Step:
    """One expected probe point on the path.

    place:   whose namespace (src_pod, src_node, dst_node, dst_pod)
    device:  a device role resolved against the topology: pod_veth, host_veth, bridge, vxlan, underlay,
             or "socket" for the copy event (ifindex 0)
    event:   one of EVENTS
    hop_role: what the segment that *ends* at this point is (e.g. "vxlan encap"); empty for the first step
    """

    place: str
    device: str
    event: str
    hop_role: str = ""


@dataclass(frozen=True)
class Chain:
    """The expected points of one direction of one path, in order."""

    path: str  # cross-node | same-node | pod-to-host
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Model:
    cni: str
    mode: str
    description: str
    chains: tuple[Chain, ...]

    def chain(self, path: str) -> Chain:
        for c in self.chains:
            if c.path == path:
                return c
        raise KeyError(path)
