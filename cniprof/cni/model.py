# SPDX-License-Identifier: Apache-2.0
"""CNI networking models as pure data: which devices a datapath has and which hop chain a packet should follow."""

from __future__ import annotations

from dataclasses import dataclass

from cniprof.errors import UsageError

EVENTS = ("queue", "xmit", "rx", "receive", "copy")
PLACES = ("src_pod", "src_node", "dst_node", "dst_pod")
PATHS = ("cross-node", "same-node", "pod-to-host")


@dataclass(frozen=True)
class Step:
    """One expected probe point on the path.

    place:   whose namespace (src_pod, src_node, dst_node, dst_pod); in pod-to-host the destination "pod" is
             the node's own stack, so its points are dst_node ones
    device:  a device role resolved against the topology: pod_veth, host_veth, bridge, vxlan, tunnel, underlay,
             macvlan, or "socket" for the copy event (ifindex 0)
    event:   one of EVENTS
    hop_role: what the segment that *ends* at this point is (e.g. "vxlan encap"); empty for the first step
    """

    place: str
    device: str
    event: str
    hop_role: str = ""


@dataclass(frozen=True)
class Chain:
    """The expected points of one path, in order.

    `steps` is direction 0 (src -> dst); direction 1 is the same steps with src and dst swapped, unless the path
    is not symmetric (pod-to-host: the reply leaves the node's stack, not a pod), in which case `reverse` lists
    direction 1's steps, again relative to that direction's own src (the node) and dst (the pod).
    """

    path: str  # cross-node | same-node | pod-to-host
    steps: tuple[Step, ...]
    reverse: tuple[Step, ...] = ()

    def steps_for(self, direction: int) -> tuple[Step, ...]:
        return self.reverse if direction == 1 and self.reverse else self.steps

    def restricted(self, events: set[str] | frozenset[str]) -> Chain:
        """The chain seen with only these probe events: dropped steps merge into the next kept step's hop.

        e.g. without `rx`, "pod veth xmit" (queue -> rx) and "host veth backlog" (rx -> receive) become one hop
        "pod veth xmit + host veth backlog" (queue -> receive). The first step is always kept.
        """
        return Chain(self.path, _restrict(self.steps, events), _restrict(self.reverse, events))


def _restrict(steps: tuple[Step, ...], events: set[str] | frozenset[str]) -> tuple[Step, ...]:
    if not steps:
        return steps
    kept: list[Step] = [steps[0]]
    pending: list[str] = []
    for step in steps[1:]:
        if step.event not in events:
            pending.append(step.hop_role)
            continue
        role = " + ".join([*pending, step.hop_role]) if pending else step.hop_role
        kept.append(Step(step.place, step.device, step.event, role))
        pending = []
    return tuple(kept)


# Segments every model's chains are made of (each read off the lab with `cniprof lab explore`).
FROM_POD = (  # a pod's packet leaves through its veth pair and enters the node's stack
    Step("src_pod", "pod_veth", "queue"),
    Step("src_node", "host_veth", "rx", "pod veth xmit"),
    Step("src_node", "host_veth", "receive", "host veth backlog"),
)
TO_POD = (  # queued on the node's end of a pod's veth pair, received by the pod, read by its socket
    Step("dst_pod", "pod_veth", "rx", "host veth xmit"),
    Step("dst_pod", "pod_veth", "receive", "pod backlog"),
    Step("dst_pod", "socket", "copy", "socket delivery"),
)
TO_NODE_STACK = Step("dst_node", "socket", "copy", "socket delivery")  # pod-to-host: read by the node's socket


def across(first_role: str, tunnel: str = "", kind: str = "", first_place: str = "src_node") -> tuple[Step, ...]:
    """From the source node's stack to the destination node's: over the underlay, or through a tunnel device
    (`tunnel` = its role, `kind` = vxlan/ipip) that encapsulates on one side and decapsulates on the other.

    first_role names the work before the first device (routing, a BPF redirect...)."""
    wire = (Step("dst_node", "underlay", "rx", "underlay xmit"), Step("dst_node", "underlay", "receive",
                                                                       "underlay backlog"))
    if not tunnel:
        return (Step(first_place, "underlay", "queue", first_role), *wire)
    return (Step(first_place, tunnel, "queue", first_role), Step(first_place, "underlay", "queue", f"{kind} encap"),
            *wire, Step("dst_node", tunnel, "receive", f"{kind} decap"))


@dataclass(frozen=True)
class Model:
    """One CNI datapath. `requires` lists (device kind, kernel option) the lab needs, checked before building."""

    cni: str
    mode: str
    description: str
    chains: tuple[Chain, ...]
    requires: tuple[tuple[str, str], ...] = ()
    notes: str = ""  # what a user should know (e.g. a path the datapath cannot take)
    # why the lab cannot carry pod-to-service traffic through kube-proxy's rules ("" = it can)
    no_services: str = ""

    @property
    def spec(self) -> str:
        return f"{self.cni}:{self.mode}"

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(c.path for c in self.chains)

    @property
    def default_path(self) -> str:
        """cross-node when the model has it (the CLI's default), else its first path."""
        return "cross-node" if "cross-node" in self.paths else self.paths[0]

    def chain(self, path: str) -> Chain:
        for c in self.chains:
            if c.path == path:
                return c
        why = f" ({self.notes})" if self.notes else ""
        raise UsageError(f"{self.spec} has no {path} path; it supports: {', '.join(self.paths)}{why}")
