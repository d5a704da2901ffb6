# SPDX-License-Identifier: Apache-2.0
"""Scenario files (scenarios/*.yaml): one study = models x paths x tuning variants x generators x repetitions.

Why a hand-written validator over the YAML node tree: every mistake must come back as one line naming the
file, the line and the field (`scenarios/x.yaml:12: generators[1].params.streams: ...`), never a traceback, and
only the composed nodes still know their line numbers (yaml's marks).

```yaml
version: 1
name: cni-comparison
models: all                 # or a list of cni[:mode]; `all` = every model whose kernel options are present
paths: [cross-node]         # cross-node, same-node, pod-to-host, pod-to-service (a model lacking a path skips it)
repetitions: 3
duration_s: 5
trace: true                 # attach the hop probe during each run (needs root, BTF, built BPF objects)
max_spread_pct: 10          # flag a result whose 95 % CI half-width exceeds this % of its median
host_changes: false         # allow machine-wide tunings (rfs, net.core.* sysctls); restored after each variant
cpu: false                  # also sample CPU stacks in each run: runs/<id>/cpu.*, cpu.csv/.parquet
generators:
  - {name: tcp, tool: iperf3, params: {streams: 1}}
variants:                   # tuning variants; each run is done once per variant (default: one, untuned)
  - {name: baseline, tunings: {}}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cniprof.cni import registry
from cniprof.errors import UsageError
from cniprof.lab.tunings import HOST_SYSCTLS, IMPLEMENTED, MAX_RFS, NETNS_SYSCTL_PREFIXES
from cniprof.run.generators import GeneratorSpec

SCHEMA_VERSION = 1
PATHS = ("cross-node", "same-node", "pod-to-host", "pod-to-service")
NOT_YET_PATHS: tuple[str, ...] = ()
SERVICE_PATH = "pod-to-service"
KUBE_PROXY_MODES = ("iptables", "nftables")
MAX_SERVICES = 10000

# tool -> {param: (type, check, description)}; bool is checked before int (bool is an int in Python)
_POS_INT = (int, lambda v: v >= 1, "an integer >= 1")
_SIZE = (int, lambda v: v >= 0, "a size in bytes (integer, or a string like 100KB / 1MB)")
TOOLS: dict[str, dict[str, tuple[type, Any, str]]] = {
    "ping": {"interval_s": (float, lambda v: 0.002 <= v <= 10, "a number of seconds in 0.002..10"),
             "size": (int, lambda v: 0 <= v <= 65507, "an integer 0..65507")},
    "iperf3": {"streams": _POS_INT, "udp": (bool, None, "true or false"),
               "bitrate": (str, None, "a rate like 1G or 500M"), "length": _SIZE},
    "sockperf": {"proto": (str, lambda v: v in ("tcp", "udp"), "tcp or udp"),
                 "msg_size": (int, lambda v: 14 <= v <= 65000, "an integer 14..65000")},
    "wrk": {"body": _SIZE, "connections": _POS_INT, "threads": _POS_INT},
    "connect_rate": {},
}
# tunings the issue asks for; none is applied by the runner yet, so each is rejected rather than ignored
TUNINGS = ("mtu", "offloads", "txqueuelen", "qdisc", "rps", "xps", "rfs", "sysctl", "notrack", "services",
           "cpu_pinning")
IMPLEMENTED_TUNINGS = IMPLEMENTED
OFFLOAD_FEATURES = ("gro", "gso", "tso", "tx-checksum", "rx-checksum")
OFFLOAD_ROLES = ("veth", "vxlan", "tunnel", "underlay", "bridge", "macvlan")
# hostile files are refused before they cost time or memory: a scenario is a page of YAML
MAX_BYTES = 256 * 1024
MAX_DEPTH = 32  # nesting of mappings and lists (the schema needs 6)
MAX_VALUES = 100_000  # values after aliases are expanded (an alias bomb expands to billions)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a scenario name is a directory name: runs/<name>-<date>
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1024, "M": 1000**2, "MB": 1024**2, "G": 1000**3, "GB": 1024**3}


@dataclass(frozen=True)
class Variant:
    name: str
    tunings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    source: str
    name: str
    models: tuple[str, ...]  # as written (`all` expanded by the runner, which knows the kernel)
    paths: tuple[str, ...]
    generators: tuple[GeneratorSpec, ...]
    variants: tuple[Variant, ...]
    repetitions: int
    duration_s: float
    trace: bool = True
    max_spread_pct: float = 10.0
    description: str = ""
    host_changes: bool = False  # machine-wide tunings (rfs, net.core.* sysctls) allowed
    cpu: bool = False  # CPU stack sampler beside the hop probe in every run

    def runs(self) -> int:
        """Upper bound of the number of runs (a model without a path skips it)."""
        return len(self.models) * len(self.paths) * len(self.variants) * len(self.generators) * self.repetitions


def parse_size(value: Any) -> int | None:
    """100KB -> 102400, 1M -> 1000000, 64 -> 64; None when it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().upper()
        digits = text.rstrip("KMGB")
        unit = text[len(digits):]
        if digits.isdigit() and unit in _UNITS:
            return int(digits) * _UNITS[unit]
    return None


class _Doc:
    """Python values of a composed YAML document plus the line of every field, keyed by its dotted path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.values = 0  # converted so far (bounded: aliases may repeat a node, or contain themselves)

    def error(self, path: str, message: str) -> UsageError:
        key = path
        while key and key not in self.lines:  # the nearest enclosing field that has a line
            key = key.rpartition(".")[0] if "." in key else ""
        line = self.lines.get(key, self.lines.get("", 1))
        shown = path if len(path) <= 80 else path[:80] + "..."  # an alias nested in itself makes long paths
        return UsageError(f"{self.source}:{line}: {shown or 'scenario'}: {message}")

    def convert(self, node: yaml.Node, path: str, depth: int = 0) -> Any:
        self.lines[path] = node.start_mark.line + 1
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.error(path, f"expands to more than {MAX_VALUES} values (YAML aliases repeating a node?)")
        if depth > MAX_DEPTH:  # reached only through an alias that contains itself: the text was checked
            raise self.error(path, f"nested deeper than {MAX_DEPTH} levels (an alias that contains itself?)")
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    raise self.error(path, "keys must be plain names")
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.lines[sub] = key_node.start_mark.line + 1
                    raise self.error(sub, "given twice")
                out[key] = self.convert(value_node, sub, depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)]
        try:
            return _scalar(node)
        except yaml.YAMLError as e:
            raise self.error(path, f"cannot read this value: {_first_line(getattr(e, 'problem', None) or e)}") from None


def _first_line(what: object) -> str:
    return (str(what).strip().splitlines() or [""])[0]


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _typed(doc: _Doc, path: str, value: Any, kind: type, check: Any, what: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is int and what.startswith("a size"):
        value, ok = parse_size(value), parse_size(value) is not None
    if not ok or (check is not None and not check(value)):
        raise doc.error(path, f"must be {what}, not {value!r}")
    return value


def _names(doc: _Doc, path: str, value: Any, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise doc.error(path, f"must be a non-empty list of names, not {value!r}")
    for i, v in enumerate(value):
        if allowed is not None and v not in allowed:
            if v in NOT_YET_PATHS:
                raise doc.error(f"{path}[{i}]", f"{v} is not implemented yet in scenarios; use {', '.join(allowed)}")
            raise doc.error(f"{path}[{i}]", f"unknown {v!r}; supported: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise doc.error(path, "lists a name twice")
    return tuple(value)


def _models(doc: _Doc, value: Any) -> tuple[str, ...]:
    if value == "all":
        return ("all",)
    names = _names(doc, "models", value)
    for i, name in enumerate(names):
        try:
            registry.parse(name)
        except UsageError as e:
            raise doc.error(f"models[{i}]", str(e)) from None
    return names


def _generators(doc: _Doc, value: Any) -> tuple[GeneratorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise doc.error("generators", "must be a non-empty list of {name, tool, params}")
    out = []
    for i, item in enumerate(value):
        path = f"generators[{i}]"
        if not isinstance(item, dict):
            raise doc.error(path, f"must be a mapping with name, tool and params, not {item!r}")
        _only(doc, path, item, ("name", "tool", "params"))
        tool = item.get("tool")
        if tool not in TOOLS:
            raise doc.error(f"{path}.tool", f"unknown tool {tool!r}; supported: {', '.join(TOOLS)}")
        name = item.get("name", tool)
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise doc.error(f"{path}.name", f"must be a name of letters, digits, - and _, not {name!r}")
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise doc.error(f"{path}.params", f"must be a mapping, not {params!r}")
        schema = TOOLS[tool]
        checked = {}
        for key, v in params.items():
            if key not in schema:
                known = ", ".join(schema) or "none"
                raise doc.error(f"{path}.params.{key}", f"unknown parameter for {tool}; known: {known}")
            checked[key] = _typed(doc, f"{path}.params.{key}", v, *schema[key])
        out.append(GeneratorSpec(name, tool, checked))
    names = [g.name for g in out]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise doc.error(f"generators[{i}].name", f"{name!r} is used by another generator")
    return tuple(out)


def _variants(doc: _Doc, value: Any, host_changes: bool, paths: tuple[str, ...]) -> tuple[Variant, ...]:
    if value is None:
        return (Variant("baseline"),)
    if not isinstance(value, list) or not value:
        raise doc.error("variants", "must be a non-empty list of {name, tunings}")
    out = []
    for i, item in enumerate(value):
        path = f"variants[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise doc.error(path, "must be a mapping with a name and tunings")
        _only(doc, path, item, ("name", "tunings"))
        tunings = item.get("tunings") or {}
        if not isinstance(tunings, dict):
            raise doc.error(f"{path}.tunings", f"must be a mapping, not {tunings!r}")
        for key in tunings:
            if key not in TUNINGS:
                raise doc.error(f"{path}.tunings.{key}", f"unknown tuning; known: {', '.join(TUNINGS)}")
            if key not in IMPLEMENTED_TUNINGS:
                raise doc.error(f"{path}.tunings.{key}", "not implemented yet (implemented tunings: "
                                f"{', '.join(IMPLEMENTED_TUNINGS)})")
            tunings[key] = _tuning(doc, f"{path}.tunings.{key}", key, tunings[key])
            _allowed(doc, f"{path}.tunings.{key}", key, tunings[key], host_changes, paths)
        if any(v.name == item["name"] for v in out):
            raise doc.error(f"{path}.name", f"{item['name']!r} is used by another variant")
        out.append(Variant(item["name"], dict(tunings)))
    return tuple(out)


def _cpus(value: Any) -> bool:
    if value in ("all", "none"):
        return True
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return isinstance(text, str) and all(p.strip().isdigit() and int(p) < 1024 for p in text.split(","))


def _tuning(doc: _Doc, path: str, key: str, value: Any) -> Any:
    """Check one tuning's value (what cniprof.lab.tunings expects)."""
    if key == "mtu":
        return _typed(doc, path, value, int, lambda v: 1280 <= v <= 9216, "an MTU 1280..9216")
    if key == "txqueuelen":
        return _typed(doc, path, value, int, lambda v: 0 <= v <= 100000, "an integer 0..100000")
    if key == "qdisc":
        return _typed(doc, path, value, str, lambda v: v.replace("_", "").isalnum(), "a qdisc kind like pfifo_fast")
    if key == "sysctl":
        if not isinstance(value, dict) or not value:
            raise doc.error(path, f"must be a mapping of sysctl names to values, not {value!r}")
        for name, v in value.items():
            if not name.startswith(NETNS_SYSCTL_PREFIXES) and name not in HOST_SYSCTLS:
                raise doc.error(f"{path}.{name}", "not supported: per-namespace sysctls "
                                f"({', '.join(p + '*' for p in NETNS_SYSCTL_PREFIXES)}) or the machine-wide "
                                f"{', '.join(HOST_SYSCTLS)} (with host_changes: true)")
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise doc.error(f"{path}.{name}", f"must be a number or a string, not {v!r}")
        return {k: str(v) for k, v in value.items()}
    if key == "cpu_pinning":
        if value in ("all", "none") or not _cpus(value):
            raise doc.error(path, f"must be a CPU list like \"0\" or \"0,1\", not {value!r}")
        return str(value)
    if key == "notrack":
        return _typed(doc, path, value, bool, None, "true or false")
    if key == "rfs":
        return _typed(doc, path, value, int, lambda v: 0 <= v <= MAX_RFS,
                      f"a flow count 0..{MAX_RFS} (0 turns RFS off)")
    if key == "services":
        return _services(doc, path, value)
    if key in ("rps", "xps"):
        if not _cpus(value):
            raise doc.error(path, f"must be all, none or a CPU list like \"0,1\", not {value!r}")
        return str(value)
    if not isinstance(value, dict) or not value:
        raise doc.error(path, f"must be a mapping of {', '.join(OFFLOAD_FEATURES)} to on/off (and devices)")
    out: dict[str, Any] = {}
    for feat, v in value.items():
        if feat == "devices":
            out[feat] = _names(doc, f"{path}.devices", v, OFFLOAD_ROLES)
        elif feat not in OFFLOAD_FEATURES:
            raise doc.error(f"{path}.{feat}", f"unknown offload; known: {', '.join(OFFLOAD_FEATURES)}, devices")
        elif v not in (True, False, "on", "off"):
            raise doc.error(f"{path}.{feat}", f"must be on or off, not {v!r}")
        else:
            out[feat] = v in (True, "on")
    return out


def _services(doc: _Doc, path: str, value: Any) -> dict[str, Any]:
    """services: N or {count: N, mode: iptables|nftables} -> {"count": N, "mode": ...}."""
    count_what = f"a service count 0..{MAX_SERVICES}"
    if not isinstance(value, dict):
        count = _typed(doc, path, value, int, lambda v: 0 <= v <= MAX_SERVICES,
                       f"{count_what} or {{count: N, mode: {'|'.join(KUBE_PROXY_MODES)}}}")
        return {"count": count, "mode": "iptables"}
    _only(doc, path, value, ("count", "mode"))
    if "count" not in value:
        raise doc.error(path, "missing field 'count'")
    count = _typed(doc, f"{path}.count", value["count"], int, lambda v: 0 <= v <= MAX_SERVICES, count_what)
    mode = _typed(doc, f"{path}.mode", value.get("mode", "iptables"), str, lambda v: v in KUBE_PROXY_MODES,
                  " or ".join(KUBE_PROXY_MODES))
    return {"count": count, "mode": mode}


def _allowed(doc: _Doc, path: str, key: str, value: Any, host_changes: bool, paths: tuple[str, ...]) -> None:
    """Tunings the rest of the scenario rules out: machine-wide ones without host_changes, NOTRACK with NAT."""
    if key == "notrack" and value and SERVICE_PATH in paths:
        raise doc.error(path, f"cannot be used with the {SERVICE_PATH} path: untracked packets skip NAT, so the "
                        "ClusterIP would never be translated (put that path in another scenario)")
    if host_changes:
        return
    host = [k for k in value if k in HOST_SYSCTLS] if key == "sysctl" else (["rfs"] if key == "rfs" else [])
    if host:
        field_ = path if key == "rfs" else f"{path}.{host[0]}"
        what = "net.core.rps_sock_flow_entries" if key == "rfs" else "a machine-wide sysctl"
        raise doc.error(field_, f"changes the whole machine ({what}), not only the lab: add `host_changes: true` "
                        "at the top level of the scenario to allow it (the old values are restored afterwards)")


def _only(doc: _Doc, path: str, item: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in item:
        if key not in allowed:
            raise doc.error(f"{path}.{key}" if path else key, f"unknown field; allowed: {', '.join(allowed)}")


TOP_FIELDS = ("version", "name", "description", "models", "paths", "generators", "variants", "repetitions",
              "duration_s", "trace", "max_spread_pct", "host_changes", "cpu")


def _check_shape(text: str, source: str) -> None:
    """Refuse text nested deeper than MAX_DEPTH before composing it (yaml composes recursively: 5000 levels
    would exhaust the stack); the parser's events come one at a time, whatever the nesting."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise UsageError(f"{source}:{event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def loads(text: str, source: str = "<scenario>") -> Scenario:
    """Validate a scenario's text; every problem is a UsageError `source:line: field: message`."""
    doc = _Doc(source)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise UsageError(f"{source}: larger than {MAX_BYTES // 1024} KiB; a scenario is a page of YAML")
    try:
        _check_shape(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise UsageError(f"{source}:{line}: not valid YAML: {_first_line(getattr(e, 'problem', None) or e)}") from None
    if node is None:
        raise UsageError(f"{source}:1: the scenario is empty")
    data = doc.convert(node, "")
    if not isinstance(data, dict):
        raise doc.error("", "must be a mapping of fields")
    _only(doc, "", data, TOP_FIELDS)
    for required in ("version", "name", "models", "generators"):
        if required not in data:
            raise doc.error("", f"missing field {required!r}")
    if data["version"] != SCHEMA_VERSION:
        raise doc.error("version", f"must be {SCHEMA_VERSION}, not {data['version']!r}")
    name = _typed(doc, "name", data["name"], str, lambda v: NAME.fullmatch(v) is not None,
                  "a name of letters, digits, '.', '-' and '_' (up to 100, not starting with '.'): it names the "
                  "run directory")
    host_changes = _typed(doc, "host_changes", data.get("host_changes", False), bool, None, "true or false")
    paths = _names(doc, "paths", data.get("paths", ["cross-node"]), PATHS)
    generators = _generators(doc, data["generators"])
    if SERVICE_PATH in paths:
        for i, g in enumerate(generators):
            if g.tool == "ping":
                raise doc.error(f"generators[{i}].tool", f"ping cannot go to a ClusterIP (kube-proxy forwards TCP, "
                                f"UDP and SCTP ports only): drop it or the {SERVICE_PATH} path")
    return Scenario(
        source=source,
        name=name,
        description=str(data.get("description") or ""),
        models=_models(doc, data["models"]),
        paths=paths,
        generators=generators,
        variants=_variants(doc, data.get("variants"), host_changes, paths),
        repetitions=_typed(doc, "repetitions", data.get("repetitions", 3), int, lambda v: 1 <= v <= 100,
                           "an integer 1..100"),
        duration_s=_typed(doc, "duration_s", data.get("duration_s", 5), float, lambda v: 1 <= v <= 600,
                          "a number of seconds in 1..600"),
        trace=_typed(doc, "trace", data.get("trace", True), bool, None, "true or false"),
        max_spread_pct=_typed(doc, "max_spread_pct", data.get("max_spread_pct", 10.0), float,
                              lambda v: 0 < v <= 1000, "a percentage > 0"),
        host_changes=host_changes,
        cpu=_typed(doc, "cpu", data.get("cpu", False), bool, None, "true or false"),
    )


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        if p.exists() and not p.is_file():  # a directory, /dev/zero, a FIFO: nothing to read, or never done
            raise UsageError(f"cannot read scenario {p}: not a regular file")
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read scenario {p}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{p}: larger than {MAX_BYTES // 1024} KiB; a scenario is a page of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not a UTF-8 text file") from None
    return loads(text, str(p))
