# SPDX-License-Identifier: Apache-2.0
"""Which CNI (and which mode of it) runs on a live node, decided from what the node itself shows.

Three kinds of evidence, because none is enough alone:
- the CNI configuration kubelet uses: the first file of /etc/cni/net.d (*.conf, *.conflist, *.json) in lexical
  order that parses, as libcni picks it; its first plugin's `type` names the CNI but rarely the mode;
- flannel's lease file /run/flannel/subnet.env (and, where the flannel pod's config is mounted,
  /etc/kube-flannel/net-conf.json, whose Backend.Type is the mode);
- the devices in the node's network namespace, which are the datapath actually in place: flannel.1 is
  flannel's VXLAN backend, cni0 without it host-gw (or the plain bridge plugin), cali* veths Calico, with
  vxlan.calico for VXLAN and an addressed tunl0 for IP-in-IP (the ipip module puts an unaddressed tunl0 in
  every namespace, so its mere presence means nothing), cilium_host/cilium_vxlan Cilium.
The configuration decides the CNI (it is what kubelet runs for new pods); the devices decide the mode, and
whether both agree sets the confidence. `root` lets tests point the file lookups at a fake node root; the
namespaces are always the live kernel's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.node import livenode
from cniprof.node.livenode import Link

log = logging.getLogger(__name__)

CNI_CONF_DIR = "etc/cni/net.d"
CNI_CONF_SUFFIXES = (".conf", ".conflist", ".json")  # what libcni's ConfFiles accepts
FLANNEL_SUBNET_ENV = "run/flannel/subnet.env"
FLANNEL_NET_CONF = "etc/kube-flannel/net-conf.json"
# the main plugin's `type` -> our CNI family
PLUGIN_TYPES = {"flannel": "flannel", "calico": "calico", "cilium-cni": "cilium", "bridge": "bridge",
                "macvlan": "macvlan"}
FLANNEL_BACKENDS = {"vxlan": "vxlan", "host-gw": "host-gw"}
DEVICES_LOOKED_FOR = "flannel.1, cni0, cali*, vxlan.calico, tunl0, cilium_host, cilium_vxlan"
HIGH, MEDIUM, LOW = "high", "medium", "low"


@dataclass
class Detection:
    """The verdict and why. cni/mode are None when nothing was found; evidence is one line per finding."""

    cni: str | None
    mode: str | None
    evidence: list[str] = field(default_factory=list)
    confidence: str = LOW  # high: configuration and devices agree; medium: one source only; low: they disagree

    @property
    def spec(self) -> str | None:
        return f"{self.cni}:{self.mode}" if self.cni and self.mode else self.cni

    def line(self) -> str:
        if not self.cni:
            return "no CNI detected"
        return f"{self.cni} {self.mode or '(mode unknown)'} ({self.confidence} confidence)"

    def to_dict(self) -> dict[str, Any]:
        return {"cni": self.cni, "mode": self.mode, "confidence": self.confidence, "evidence": list(self.evidence)}


@dataclass(frozen=True)
class CniConfig:
    path: Path
    plugin_type: str
    plugin: dict[str, Any]


# ------------------------------------------------------------------ files


def read_cni_config(root: Path, evidence: list[str]) -> CniConfig | None:
    """The configuration kubelet would use: the first file in lexical order that parses and names a plugin."""
    conf_dir = root / CNI_CONF_DIR
    try:
        files = sorted(p for p in conf_dir.iterdir() if p.suffix in CNI_CONF_SUFFIXES and p.is_file())
    except OSError:
        return None
    for path in files:
        rel = path.relative_to(root)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            evidence.append(f"{rel}: skipped, not valid JSON ({e.__class__.__name__})")
            continue
        plugins = data.get("plugins") if isinstance(data, dict) else None
        plugin = plugins[0] if isinstance(plugins, list) and plugins else data
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not kind:
            evidence.append(f"{rel}: skipped, no plugin type")
            continue
        others = f" (first of {len(files)} config files)" if len(files) > 1 else ""
        evidence.append(f"{rel}: plugin type {kind}{others}")
        return CniConfig(path, kind, plugin)
    return None


def read_subnet_env(root: Path, evidence: list[str]) -> dict[str, str]:
    """flannel's lease (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ); {} when absent."""
    path = root / FLANNEL_SUBNET_ENV
    try:
        text = path.read_text()
    except OSError:
        return {}
    env = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("FLANNEL_"):
            env[key] = value.strip().strip('"')
    shown = " ".join(f"{k}={env[k]}" for k in ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU") if k in env)
    evidence.append(f"{FLANNEL_SUBNET_ENV}: {shown or 'no FLANNEL_ keys'}")
    return env


def read_flannel_backend(root: Path, evidence: list[str]) -> str | None:
    """Backend.Type of flannel's net-conf.json, lower-cased; None when the file is absent or says nothing."""
    path = root / FLANNEL_NET_CONF
    try:
        data = json.loads(path.read_text())
    except OSError:
        return None
    except ValueError:
        evidence.append(f"{FLANNEL_NET_CONF}: not valid JSON, ignored")
        return None
    backend = data.get("Backend", {}).get("Type") if isinstance(data, dict) else None
    if not isinstance(backend, str):
        return None
    evidence.append(f"{FLANNEL_NET_CONF}: backend {backend}")
    return backend.lower()


# ------------------------------------------------------------------ devices


def from_devices(links: list[Link], flannel_lease: bool) -> tuple[str | None, str | None, list[str]]:
    """(cni, mode, names of the devices that decided) from the devices alone."""
    by_name = {link.name: link for link in links}
    cali = [link.name for link in links if link.name.startswith("cali") and link.kind == "veth"]
    if "cilium_host" in by_name or "cilium_vxlan" in by_name:
        mode = "vxlan" if "cilium_vxlan" in by_name else "native"
        return "cilium", mode, [n for n in ("cilium_host", "cilium_vxlan") if n in by_name]
    if cali or "vxlan.calico" in by_name:
        tunl0 = by_name.get("tunl0")
        shown = cali[:3] + (["…"] if len(cali) > 3 else [])
        if "vxlan.calico" in by_name:
            return "calico", "vxlan", ["vxlan.calico", *shown]
        if tunl0 is not None and tunl0.ipv4:
            return "calico", "ipip", ["tunl0 (addressed)", *shown]
        return "calico", "bgp", shown
    if "flannel.1" in by_name:
        return "flannel", "vxlan", ["flannel.1"]
    cni0 = by_name.get("cni0")
    if cni0 is not None and cni0.kind == "bridge":
        if flannel_lease:
            return "flannel", "host-gw", ["cni0 (no flannel.1)"]
        return "bridge", "bridge", ["cni0 (no flannel.1)"]
    return None, None, []


def cni_roles(cni: str, mode: str, links: list[Link]) -> dict[str, str]:
    """Device name -> topology role for the CNI's node devices (the underlay and host veths are found apart)."""
    names = {link.name for link in links}
    wanted = {
        ("flannel", "vxlan"): {"cni0": "bridge", "flannel.1": "vxlan"},
        ("flannel", "host-gw"): {"cni0": "bridge"},
        ("bridge", "bridge"): {"cni0": "bridge"},
        ("calico", "vxlan"): {"vxlan.calico": "vxlan"},
        ("calico", "ipip"): {"tunl0": "tunnel"},
        ("cilium", "vxlan"): {"cilium_vxlan": "vxlan"},
    }.get((cni, mode), {})
    return {name: role for name, role in wanted.items() if name in names}


# ------------------------------------------------------------------ verdict


def _mode_from_config(cni: str, conf: CniConfig | None, backend: str | None) -> str | None:
    if cni == "flannel" and backend:
        return FLANNEL_BACKENDS.get(backend, backend)
    if cni == "macvlan" and conf is not None:
        return str(conf.plugin.get("mode", "bridge"))
    if cni == "bridge" and conf is not None:
        return "bridge"
    return None


def decide(conf: CniConfig | None, lease: dict[str, str], backend: str | None, links: list[Link],
           where: str) -> Detection:
    """The verdict from already-read evidence (pure: tests feed it directly)."""
    evidence: list[str] = []
    dev_cni, dev_mode, deciding = from_devices(links, bool(lease))
    if dev_cni:
        evidence.append(f"devices in {where}: {', '.join(deciding)} -> {dev_cni} {dev_mode}")
    else:
        evidence.append(f"devices in {where}: none of {DEVICES_LOOKED_FOR}")
    conf_cni = PLUGIN_TYPES.get(conf.plugin_type) if conf is not None else None
    if conf is not None and conf_cni is None:
        evidence.append(f"plugin type {conf.plugin_type!r} is not one cniprof models")
    if conf_cni is None and not dev_cni and lease:
        conf_cni = "flannel"  # a lease without a configuration file: flanneld runs, the CNI config is elsewhere
    cni = conf_cni or dev_cni
    if cni is None:
        return Detection(None, None, evidence, LOW)
    cfg_mode = _mode_from_config(cni, conf, backend)
    mode = cfg_mode or (dev_mode if dev_cni == cni else None)
    if conf_cni and dev_cni and conf_cni != dev_cni:
        evidence.append(f"configuration says {conf_cni} but the devices are {dev_cni}'s: trusting the "
                        "configuration (what kubelet runs for new pods)")
        confidence = LOW
    elif cfg_mode and dev_cni == cni and dev_mode != cfg_mode:
        evidence.append(f"configured mode {cfg_mode} but the devices look like {dev_mode}")
        confidence = LOW
    elif conf_cni and dev_cni:
        confidence = HIGH
    else:
        confidence = MEDIUM
    if mode is None:
        mode = registry.default_mode(cni)
        evidence.append(f"mode not shown by configuration or devices: assuming {cni}'s default {mode}")
        confidence = LOW
    return Detection(cni, mode, evidence, confidence)


def where_label(netns: str | None) -> str:
    return f"namespace {netns}" if netns else "the root namespace"


def detect(root: Path = Path("/"), netns: str | None = None, links: list[Link] | None = None) -> Detection:
    """Detect the CNI of the node whose files are under `root` and whose devices are in `netns` (None: the
    namespace cniprof runs in)."""
    root = Path(root)
    files: list[str] = []
    conf = read_cni_config(root, files)
    lease = read_subnet_env(root, files)
    backend = read_flannel_backend(root, files)
    if links is None:
        links = livenode.links_in(netns)
    d = decide(conf, lease, backend, links, where_label(netns))
    d.evidence[:0] = files
    return d


# ------------------------------------------------------------------ the node as a topology


def node_topology(detection: Detection, netns: str | None = None,
                  links: list[Link] | None = None) -> tuple[Topology, list[str]]:
    """The detected node as a one-node Topology (pods: every host veth resolved to its namespace), plus one
    line per veth that could not be resolved."""
    if not detection.cni or not detection.mode:
        raise EnvironmentProblem("no CNI detected: nothing to map")
    if links is None:
        links = livenode.links_in(netns)
    veths = livenode.host_veths(links)
    pods, problems = livenode.map_pods(netns, veths)
    uplink = livenode.underlay(links, livenode.default_route_dev(netns), veths)
    if detection.cni == "macvlan":  # no host side at all: found from the pods' namespaces
        pods += livenode.map_macvlans(netns, uplink)
    roles = cni_roles(detection.cni, detection.mode, links)
    topo = livenode.topology(detection.cni, detection.mode, netns, roles, links, pods, uplink)
    return topo, problems


def not_found_message(root: Path, netns: str | None) -> str:
    base = str(root).rstrip("/")
    return (f"no CNI detected: looked for {base}/{CNI_CONF_DIR}/*.conf|*.conflist|*.json, "
            f"{base}/{FLANNEL_SUBNET_ENV} and {DEVICES_LOOKED_FOR} devices in {where_label(netns)}")


def resolve(root: Path = Path("/"), netns: str | None = None) -> tuple[str, Topology, Detection]:
    """For `trace --cni auto`: the model spec to trace, the live node's topology, and the detection itself.

    One-line errors: nothing detected (naming what was looked for), or a detected CNI cniprof has no model for.
    """
    if not Path(root).is_dir():
        raise UsageError(f"--root {root}: no such directory (the node's root, holding etc/cni/net.d)")
    links = livenode.links_in(netns)
    d = detect(root, netns, links)
    if not d.cni:
        raise EnvironmentProblem(not_found_message(Path(root), netns))
    try:
        model = registry.parse(d.spec or d.cni)
    except UsageError:
        raise UsageError(f"detected {d.line()}, which cniprof has no model for; "
                         f"supported: {', '.join(registry.supported())}") from None
    topo, problems = node_topology(d, netns, links)
    for p in problems:
        log.warning("%s", p)
    return model.spec, topo, d
