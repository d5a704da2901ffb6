# SPDX-License-Identifier: Apache-2.0
"""From a probe snapshot and a CNI chain to the hop table, the drops table, end-to-end stats and reconciliation.

Pure functions over plain data (the Snapshot dict of ARCHITECTURE.md and cniprof.cni.model.Step), so that a run
directory can be re-analysed without root and the tests can feed canned snapshots.

The kernel only knows points (event, netns, ifindex) and counts every pair of consecutive points a packet crossed.
Which pairs a CNI *should* produce comes from the chain: either the probe consumer already labelled the expected
pairs in the snapshot (dir, seq, role, in_e2e), or resolving each Step of the chain to a snapshot point (per
direction, since src/dst swap) gives the expected hops in path order. Observed pairs that are
not consecutive in any chain are kept as "unexpected" rows rather than dropped, because a missed probe point or
an unusual datapath is exactly what a user needs to see. Expected hops nobody crossed get a row with 0 packets.

The dependency on the topology is deliberately light: snapshot points already carry node, pod, device and role.
A topology (or its JSON) is only consulted, when given, for the pod -> node and pod -> host veth names, which
disambiguate host veths when several pods share a node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import lazy_loader

from cniprof.analysis.histogram import Histogram
from cniprof.cni.model import Chain, Step

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

log = logging.getLogger(__name__)

NODE_ROLES = frozenset({"underlay", "bridge", "vxlan", "tunnel", "host_veth"})
"""Device roles that live in a node's namespace (a point with one of these roles is never a pod-namespace point,
even when the probe consumer tagged it with the pod it serves)."""

UNEXPECTED_ROLE = "unexpected"
UNASSIGNED = "unassigned"

HOP_COLUMNS = [
    "direction",
    "seq",
    "hop",
    "role",
    "node",
    "device",
    "event",
    "from_point",
    "to_point",
    "from_id",
    "to_id",
    "packets",
    "p50_us",
    "p90_us",
    "p99_us",
    "mean_us",
    "share_pct",
    "expected",
    "in_e2e",
]
DROP_COLUMNS = ["point", "node", "device", "event", "reason", "reason_code", "count"]
E2E_COLUMNS = ["direction", "src_pod", "dst_pod", "packets", "mean_us", "p50_us", "p90_us", "p99_us"]
RECON_COLUMNS = [
    "direction",
    "e2e_mean_us",
    "hop_mean_sum_us",
    "unattributed_pct",
    "hops_expected",
    "hops_observed",
]

ChainLike = Union[Chain, Sequence[Step], Mapping[str, Union[Chain, Sequence[Step]]]]


@dataclass(frozen=True)
class PodPlace:
    """Where a pod lives: its node and (when the topology says so) the name of its host-side veth."""

    node: str | None
    host_veth: str | None = None


@dataclass(frozen=True)
class ResolvedStep:
    """A chain step bound to one direction: the snapshot point it names (None if the snapshot has none)."""

    step: Step
    point: Mapping[str, Any] | None
    node: str | None
    pod: str

    @property
    def point_id(self) -> int | None:
        return None if self.point is None else int(self.point["id"])

    @property
    def label(self) -> str:
        """Device-level label ("node1 pod-a eth0"); for an unresolved step, what the chain asked for."""
        if self.point is not None:
            return point_label(self.point)
        where = self.node or self.step.place
        if self.step.place.endswith("_pod"):
            where = f"{where} {self.pod}"
        return f"{where} ({self.step.device})"


# --- points ---------------------------------------------------------------------------------------------------


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Field access for both dataclasses (Topology) and their JSON form (lab.json)."""
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _ref_id(ref: Any) -> int:
    """A hop or drop refers to a point by id (or, tolerated, by the whole point dict)."""
    return int(ref["id"]) if isinstance(ref, Mapping) else int(ref)


def is_pod_point(pt: Mapping[str, Any]) -> bool:
    """True when the point is in a pod's own namespace (not in its node's)."""
    return bool(pt.get("pod")) and pt.get("role") not in NODE_ROLES


def point_device(pt: Mapping[str, Any]) -> str:
    """The device name; "socket" for the copy event (ifindex 0 is the socket layer), if<N> when unnamed."""
    if pt.get("event") == "copy":
        return "socket"
    return str(pt.get("device") or f"if{pt.get('ifindex', '?')}")


def point_label(pt: Mapping[str, Any]) -> str:
    """Human name of a point's device: "node1 pod-a eth0", "node1 flannel.1", "node2 pod-c socket"."""
    parts = [str(pt.get("node") or "?")]
    if is_pod_point(pt):
        parts.append(str(pt["pod"]))
    parts.append(point_device(pt))
    return " ".join(parts)


def point_name(pt: Mapping[str, Any]) -> str:
    """Unique human name of a point: its device label plus the event ("node1 flannel.1 queue")."""
    return f"{point_label(pt)} {pt.get('event', '?')}"


def hop_name(a_label: str, a_event: str, b_label: str, b_event: str) -> str:
    """ "node1 flannel.1 → node1 eth0"; on one device, the events tell the hops apart ("node2 eth0 rx → receive")."""
    if a_label == b_label:
        return f"{a_label} {a_event} → {b_event}"
    return f"{a_label} → {b_label}"


def direction_label(direction: Mapping[str, Any]) -> str:
    """ "pod-a→pod-c": the name a direction has in every table and export."""
    return f"{direction.get('src_pod', '?')}→{direction.get('dst_pod', '?')}"


def pod_places(points: Iterable[Mapping[str, Any]], topology: Any = None) -> dict[str, PodPlace]:
    """pod -> PodPlace, from the topology when given, otherwise from the pods' own points in the snapshot."""
    out: dict[str, PodPlace] = {}
    if topology is not None:
        for pod in _get(topology, "pods", ()) or ():
            hv = _get(pod, "host_veth")
            hv_name = _get(hv, "name", hv) if hv is not None and not isinstance(hv, str) else hv
            out[str(_get(pod, "name"))] = PodPlace(_get(pod, "node"), hv_name or None)
    for pt in points:
        pod = pt.get("pod")
        if pod and pod not in out and pt.get("node"):
            out[str(pod)] = PodPlace(str(pt["node"]))
    return out


def _matches_device(pt: Mapping[str, Any], step: Step) -> bool:
    if step.device == "socket" or pt.get("event") == "copy":
        return step.device == "socket" and pt.get("event") == "copy"
    return pt.get("event") == step.event and pt.get("role") == step.device


def resolve_step(
    step: Step,
    direction: Mapping[str, Any],
    points: Iterable[Mapping[str, Any]],
    pods: Mapping[str, PodPlace] | None = None,
) -> Mapping[str, Any] | None:
    """The snapshot point a chain step names in this direction, or None when the snapshot has no such point.

    src_pod/dst_pod: a point in that pod's namespace; src_node/dst_node: a point in the namespace of that pod's
    node. The device role must equal the point's role, except "socket", which is the copy event. A host veth is
    further narrowed to the pod's own veth (topology name, else the point's pod tag); if that stays ambiguous
    the step is left unresolved rather than guessed, since a wrong guess would mislabel a hop.
    """
    points = list(points)
    pods = pods if pods is not None else pod_places(points)
    pod = str(direction["src_pod"] if step.place.startswith("src") else direction["dst_pod"])
    cands = [pt for pt in points if _matches_device(pt, step)]
    if step.place.endswith("_pod"):
        cands = [pt for pt in cands if is_pod_point(pt) and pt.get("pod") == pod]
    else:
        node = pods.get(pod, PodPlace(None)).node
        cands = [pt for pt in cands if pt.get("node") == node and not is_pod_point(pt)]
        if step.device == "host_veth" and len(cands) > 1:
            hv = pods.get(pod, PodPlace(None)).host_veth
            tagged = [pt for pt in cands if pt.get("pod") == pod]
            if hv:
                cands = [pt for pt in cands if pt.get("device") == hv]
            elif tagged:
                cands = tagged
    if len(cands) == 1:
        return cands[0]
    if len(cands) > 1:
        names = ", ".join(point_name(pt) for pt in cands)
        log.warning(
            "step %s of %s is ambiguous (%s); left unresolved", step, direction_label(direction), names
        )
    return None


def resolve_chain(
    steps: Sequence[Step],
    direction: Mapping[str, Any],
    points: Sequence[Mapping[str, Any]],
    pods: Mapping[str, PodPlace] | None = None,
) -> list[ResolvedStep]:
    """Every step of the chain bound to its point for one direction, in path order."""
    pods = pods if pods is not None else pod_places(points)
    out = []
    for step in steps:
        pod = str(direction["src_pod"] if step.place.startswith("src") else direction["dst_pod"])
        pt = resolve_step(step, direction, points, pods)
        node = pt.get("node") if pt is not None else pods.get(pod, PodPlace(None)).node
        out.append(ResolvedStep(step, pt, node, pod))
    return out


def steps_for(chain: ChainLike, direction: Mapping[str, Any]) -> tuple[Step, ...]:
    """The steps for one direction: a Chain or a tuple of Steps serves every direction (src/dst are relative);
    a mapping picks by direction label ("pod-a→pod-c") or by the snapshot's "dir"."""
    if isinstance(chain, Mapping):
        for key in (direction_label(direction), direction.get("dir"), str(direction.get("dir"))):
            if isinstance(key, str) and key in chain:
                return steps_for(chain[key], direction)
        return ()
    if isinstance(chain, Chain):
        return tuple(chain.steps_for(int(direction.get("dir", 0))))  # pod-to-host has its own reply chain
    return tuple(chain)


# --- snapshot accessors ---------------------------------------------------------------------------------------


def directions(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The snapshot's directions in order (the first one is the forward direction)."""
    out = []
    for i, d in enumerate(snapshot.get("directions") or ()):
        d = dict(d)
        d.setdefault("dir", i)
        out.append(d)
    return out


def observed_hops(snapshot: Mapping[str, Any]) -> dict[tuple[int, int], Histogram]:
    """(from id, to id) -> histogram; repeated pairs (e.g. per-CPU entries) are merged."""
    out: dict[tuple[int, int], Histogram] = {}
    for h in snapshot.get("hops") or ():
        key = (_ref_id(h["from"]), _ref_id(h["to"]))
        hist = Histogram.from_entry(h)
        out[key] = out[key].merge(hist) if key in out else hist
    return out


def e2e_histograms(snapshot: Mapping[str, Any]) -> dict[str, Histogram]:
    """Direction label -> end-to-end histogram (first point to last point of each packet)."""
    labels = {str(d["dir"]): direction_label(d) for d in directions(snapshot)}
    out: dict[str, Histogram] = {}
    for e in snapshot.get("e2e") or ():
        label = labels.get(str(e.get("dir")), str(e.get("dir")))
        hist = Histogram.from_entry(e)
        out[label] = out[label].merge(hist) if label in out else hist
    return out


def _us(ns: float) -> float:
    return ns / 1000.0 if not math.isnan(ns) else math.nan


def _stats(h: Histogram | None) -> dict[str, float]:
    if h is None or h.empty:
        return {"packets": 0, "mean_us": math.nan, "p50_us": math.nan, "p90_us": math.nan, "p99_us": math.nan}
    return {
        "packets": int(h.count),
        "mean_us": _us(h.mean),
        "p50_us": _us(h.percentile(50)),
        "p90_us": _us(h.percentile(90)),
        "p99_us": _us(h.percentile(99)),
    }


# --- expected paths -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HopEnd:
    """One end of a hop row: a snapshot point, or, for a chain step the snapshot lacks, what the step asked for."""

    point: Mapping[str, Any] | None
    label: str
    event: str
    node: str | None
    device: str

    @classmethod
    def of_point(cls, pt: Mapping[str, Any]) -> HopEnd:
        return cls(pt, point_label(pt), str(pt.get("event", "?")), pt.get("node"), point_device(pt))

    @property
    def point_id(self) -> int | None:
        return None if self.point is None else int(self.point["id"])

    @property
    def name(self) -> str:
        return point_name(self.point) if self.point is not None else f"{self.label} {self.event}"


@dataclass(frozen=True)
class PathHop:
    """An expected hop of one direction, in path order. in_e2e: the hop lies between the direction's first and
    last point, i.e. inside the end-to-end time (socket delivery comes after the path's last point)."""

    direction: str
    seq: int
    role: str
    start: HopEnd
    end: HopEnd
    in_e2e: bool

    @property
    def key(self) -> tuple[int, int] | None:
        a, b = self.start.point_id, self.end.point_id
        return None if a is None or b is None else (a, b)


def _end_of(r: ResolvedStep) -> HopEnd:
    if r.point is not None:
        return HopEnd.of_point(r.point)
    return HopEnd(None, r.label, r.step.event, r.node, r.step.device)


def _point_end(by_id: Mapping[int, Mapping[str, Any]], pid: int) -> HopEnd:
    pt = by_id.get(pid)
    if pt is None:  # a pair naming a point the snapshot lacks: keep the number rather than hide the hop
        return HopEnd(None, f"point {pid}", "?", None, f"point {pid}")
    return HopEnd.of_point(pt)


def is_labelled(snapshot: Mapping[str, Any]) -> bool:
    """True when the probe consumer already labelled the expected hops (hop entries carry "expected")."""
    return any("expected" in h for h in snapshot.get("hops") or ())


def path_hops(
    snapshot: Mapping[str, Any], chain: ChainLike | None = None, topology: Any = None
) -> list[PathHop]:
    """Every direction's expected hops in path order.

    When the snapshot's hop entries are labelled (expected, dir, seq, role, in_e2e, as cniprof.probes.hops
    writes them) the labels are used: they say exactly which pairs the kernel kept a histogram for. Otherwise the
    chain is resolved against the snapshot points (resolve_step); in_e2e then follows the probe planner's rule
    that the path ends at the last step before socket delivery.
    """
    points = list(snapshot.get("points") or ())
    by_id = {int(pt["id"]): pt for pt in points}
    dirs = directions(snapshot)
    out: list[PathHop] = []
    if is_labelled(snapshot):
        labels = {str(d["dir"]): direction_label(d) for d in dirs}
        entries = [h for h in snapshot.get("hops") or () if h.get("expected")]
        order = {label: i for i, label in enumerate(labels.values())}
        for h in entries:
            label = labels.get(str(h.get("dir")), str(h.get("dir")))
            out.append(
                PathHop(
                    label,
                    int(h.get("seq", 0)),
                    str(h.get("role") or ""),
                    _point_end(by_id, _ref_id(h["from"])),
                    _point_end(by_id, _ref_id(h["to"])),
                    bool(h.get("in_e2e", True)),
                )
            )
        out.sort(key=lambda p: (order.get(p.direction, len(order)), p.seq))
        return out
    if chain is None:
        if not snapshot.get("hops"):
            return out  # nothing observed and nothing to expect it against
        raise ValueError(
            "the snapshot's hops carry no expected-hop labels: pass the chain to analyse it against"
        )
    pods = pod_places(points, topology)
    for d in dirs:
        steps = steps_for(chain, d)
        resolved = resolve_chain(steps, d, points, pods)
        non_socket = [i for i, s in enumerate(steps) if s.device != "socket"]
        last = max(non_socket) if non_socket else len(steps) - 1
        for seq in range(1, len(resolved)):
            a, b = resolved[seq - 1], resolved[seq]
            out.append(PathHop(direction_label(d), seq, b.step.hop_role, _end_of(a), _end_of(b), seq <= last))
    return out


# --- tables ---------------------------------------------------------------------------------------------------


def e2e_table(snapshot: Mapping[str, Any]) -> pd.DataFrame:
    """One row per direction (snapshot order): packets, mean/p50/p90/p99 in µs of the end-to-end histogram."""
    hists = e2e_histograms(snapshot)
    rows = []
    seen = set()
    for d in directions(snapshot):
        label = direction_label(d)
        seen.add(label)
        rows.append(
            {
                "direction": label,
                "src_pod": d.get("src_pod"),
                "dst_pod": d.get("dst_pod"),
                **_stats(hists.get(label)),
            }
        )
    for label, h in hists.items():  # e2e of a direction the snapshot does not describe: keep, do not hide
        if label not in seen:
            rows.append({"direction": label, "src_pod": None, "dst_pod": None, **_stats(h)})
    return pd.DataFrame(rows, columns=E2E_COLUMNS)


def hop_table(
    snapshot: Mapping[str, Any], chain: ChainLike | None = None, topology: Any = None
) -> pd.DataFrame:
    """The hop table: per direction, the expected hops in path order, then that direction's unexpected hops.

    Columns: HOP_COLUMNS. Latencies in µs. share_pct is the hop mean over the direction's end-to-end mean, for
    hops inside the end-to-end time only (NaN for socket delivery, which comes after it). An observed pair that is
    consecutive in no direction's path is "unexpected" and goes to the first direction whose path contains its
    start point (else its end point), else to "unassigned". The kernel keeps only count and sum for unexpected
    pairs, so their percentiles are NaN while packets and mean are exact.
    """
    by_id = {int(pt["id"]): pt for pt in snapshot.get("points") or ()}
    observed = observed_hops(snapshot)
    e2e = e2e_histograms(snapshot)
    expected = path_hops(snapshot, chain, topology)

    def e2e_mean(label: str) -> float:
        return _us(e2e[label].mean) if label in e2e else math.nan

    rows = [
        _row(
            p.direction,
            p.seq,
            p.start,
            p.end,
            p.role,
            observed.get(p.key) if p.key else None,
            e2e_mean(p.direction) if p.in_e2e else math.nan,
            expected=True,
            in_e2e=p.in_e2e,
        )
        for p in expected
    ]
    expected_keys = {p.key for p in expected if p.key}
    path_ids: dict[str, set[int]] = {}
    for p in expected:
        path_ids.setdefault(p.direction, set()).update(
            i for i in (p.start.point_id, p.end.point_id) if i is not None
        )

    extra: dict[str, list[tuple[tuple[int, int], Histogram]]] = {}
    for key, hist in observed.items():
        if key in expected_keys:
            continue
        label = next((lab for lab, ids in path_ids.items() if key[0] in ids), None)
        label = label or next((lab for lab, ids in path_ids.items() if key[1] in ids), UNASSIGNED)
        extra.setdefault(label, []).append((key, hist))
    for label, items in extra.items():
        start = max((r["seq"] for r in rows if r["direction"] == label), default=0) + 1
        items.sort(key=lambda kv: (-kv[1].count, kv[0]))
        for seq, (key, hist) in enumerate(items, start=start):
            a, b = _point_end(by_id, key[0]), _point_end(by_id, key[1])
            rows.append(
                _row(label, seq, a, b, UNEXPECTED_ROLE, hist, e2e_mean(label), expected=False, in_e2e=True)
            )

    df = pd.DataFrame(rows, columns=HOP_COLUMNS)
    return df.astype(
        {
            "seq": "int64",
            "packets": "int64",
            "from_id": "Int64",
            "to_id": "Int64",
            "expected": bool,
            "in_e2e": bool,
            "p50_us": "float64",
            "p90_us": "float64",
            "p99_us": "float64",
            "mean_us": "float64",
            "share_pct": "float64",
        }
    )


def _row(
    label: str,
    seq: int,
    a: HopEnd,
    b: HopEnd,
    role: str,
    hist: Histogram | None,
    e2e_mean_us: float,
    *,
    expected: bool,
    in_e2e: bool,
) -> dict[str, Any]:
    stats = _stats(hist)
    share = (
        stats["mean_us"] / e2e_mean_us * 100.0 if e2e_mean_us and not math.isnan(e2e_mean_us) else math.nan
    )
    return {
        "direction": label,
        "seq": seq,
        "hop": hop_name(a.label, a.event, b.label, b.event),
        "role": role,
        "node": b.node,
        "device": b.device,
        "event": b.event,
        "from_point": a.name,
        "to_point": b.name,
        "from_id": a.point_id,
        "to_id": b.point_id,
        **stats,
        "share_pct": share,
        "expected": expected,
        "in_e2e": in_e2e,
    }


def drops_table(snapshot: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (point, reason) the kernel counted drops at, most frequent first."""
    by_id = {int(pt["id"]): pt for pt in snapshot.get("points") or ()}
    rows = []
    for dr in snapshot.get("drops") or ():
        pid = _ref_id(dr["point"])
        pt = by_id.get(pid, {"id": pid, "event": "?", "device": f"point {pid}"})
        rows.append(
            {
                "point": point_name(pt),
                "node": pt.get("node"),
                "device": point_device(pt),
                "event": pt.get("event"),
                "reason": dr.get("reason_name") or str(dr.get("reason")),
                "reason_code": int(dr.get("reason", -1)),
                "count": int(dr.get("count", 0)),
            }
        )
    df = pd.DataFrame(rows, columns=DROP_COLUMNS)
    return df.sort_values(["count", "point"], ascending=[False, True], kind="stable").reset_index(drop=True)


def reconcile(hops: pd.DataFrame, e2e: pd.DataFrame) -> pd.DataFrame:
    """Per direction: does the sum of the expected hops' means account for the end-to-end mean?

    Only hops inside the end-to-end time count (in_e2e; socket delivery comes after the path's last point).
    unattributed_pct = (e2e mean - sum of hop means) / e2e mean * 100: time between the first and last point no
    expected hop explains (missed points, unexpected hops, packets that skipped a point). Negative when the hops
    over-account (e.g. hops counted on packets that never completed end to end).
    """
    rows = []
    for _, e in e2e.iterrows():
        label = e["direction"]
        mine = hops[(hops["direction"] == label) & hops["expected"] & hops["in_e2e"]]
        observed = mine[mine["packets"] > 0]
        total = float(observed["mean_us"].sum())  # 0.0 when no expected hop was crossed: all unattributed
        e2e_mean = float(e["mean_us"])
        unattributed = (
            (e2e_mean - total) / e2e_mean * 100.0 if e2e_mean and not math.isnan(e2e_mean) else math.nan
        )
        rows.append(
            {
                "direction": label,
                "e2e_mean_us": e2e_mean,
                "hop_mean_sum_us": total,
                "unattributed_pct": unattributed,
                "hops_expected": len(mine),
                "hops_observed": len(observed),
            }
        )
    return pd.DataFrame(rows, columns=RECON_COLUMNS)
