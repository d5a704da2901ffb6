# SPDX-License-Identifier: Apache-2.0
"""The files of a run directory as cniprof writes them, and the one way to read them back.

Whatever a user points `report`, `advise` or `diff` at (an old export, a hand-edited file, a file of another
tool, a truncated download) is read through `load_json` / `load_csv`: a file that is not what cniprof wrote is
one UsageError line naming the file, the field and what was expected, never a traceback deep in the analysis,
and never a silent `nan` in a finding. What is checked is what the readers rely on: the types and ranges of
every field they use (JSON Schema, checked with the jsonschema library), numbers finite (NaN and Infinity are
refused: they are not JSON, and no counter or latency cniprof records is one), counts not negative, references
between fields resolvable (a hop's points exist, a CPU sample's stack exists). Fields a reader does not use are
free, so files of newer cniprof versions with more fields still read.

The schemas describe the formats documented in ARCHITECTURE.md (Snapshot, CPU cost, Netfilter cost, Node state,
Studies); the writers are cniprof.probes.*, cniprof.node.state and cniprof.report.export.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.errors import UsageError

if TYPE_CHECKING:
    import jsonschema
    import pandas as pd
else:  # imported on first use: `trace` attaches its probes before either has loaded (issue 15)
    jsonschema = lazy_loader.load("jsonschema")
    pd = lazy_loader.load("pandas")

MAX_FILE_BYTES = 512 * 1024 * 1024  # a run file larger than this is not one (cpu.json of a long run: ~10 MB)

# ------------------------------------------------------------------ building blocks

BIG = 2**53  # integers cniprof records are below this (exact in a double; sums of them fit an int64)
COUNT = {"type": "integer", "minimum": 0, "maximum": BIG}
INT = {"type": "integer", "minimum": -BIG, "maximum": BIG}
ID = {"type": "integer", "minimum": 0, "maximum": 1 << 20}
NUMBER = {"type": "number", "minimum": -1e15, "maximum": 1e15}
NONNEG = {"type": "number", "minimum": 0, "maximum": 1e15}
TEXT = {"type": "string", "maxLength": 1 << 16}
BOOL = {"type": "boolean"}


def nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, dict(schema)]}


def array(items: Mapping[str, Any], max_items: int = 10_000_000) -> dict[str, Any]:
    return {"type": "array", "items": dict(items), "maxItems": max_items}


def obj(properties: Mapping[str, Any], required: tuple[str, ...] = (), values: Mapping[str, Any] | None = None
        ) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": dict(properties), "required": list(required)}
    if values is not None:
        out["additionalProperties"] = dict(values)
    return out


# histogram buckets: {"<index 0..511>": count} (cniprof.analysis.histogram.HIST_BUCKETS)
BUCKET_KEY = "^(?:[0-9]|[1-9][0-9]|[1-4][0-9]{2}|50[0-9]|51[01])$"
BUCKETS = {"type": "object", "propertyNames": {"pattern": BUCKET_KEY}, "additionalProperties": COUNT}
POINT_REF = {"anyOf": [ID, obj({"id": ID}, ("id",))]}
NAME = nullable(TEXT)

# ------------------------------------------------------------------ JSON files

HOPS_SNAPSHOT = obj({
    "version": INT,
    "elapsed_s": NONNEG,
    "points": array(obj({"id": ID, "event": TEXT, "netns": NAME, "netns_ino": nullable(COUNT),
                         "ifindex": nullable(COUNT), "device": NAME, "role": NAME, "node": NAME, "pod": NAME,
                         "start_dir": nullable(INT), "end": nullable(BOOL)}, ("id",)), 4096),
    "hops": array(obj({"from": POINT_REF, "to": POINT_REF, "expected": BOOL, "dir": INT, "seq": COUNT,
                       "role": NAME, "in_e2e": BOOL, "count": COUNT, "sum_ns": COUNT, "buckets": BUCKETS},
                      ("from", "to")), 100_000),
    "e2e": array(obj({"dir": INT, "count": COUNT, "sum_ns": COUNT, "buckets": BUCKETS}, ("dir",)), 64),
    "drops": array(obj({"point": POINT_REF, "reason": INT, "reason_name": NAME, "count": COUNT}, ("point",))),
    "counters": {"type": "object", "additionalProperties": COUNT},
    "directions": array(obj({"dir": INT, "src_pod": NAME, "dst_pod": NAME, "src_ip": NAME, "dst_ip": NAME},
                            ("dir",)), 64),
    "programs": array(TEXT),
    "sample_every": {"type": "integer", "minimum": 1, "maximum": BIG},
}, ("points", "hops"))

CPU_SNAPSHOT = obj({
    "version": INT,
    "freq_hz": nullable(NONNEG),
    "elapsed_s": nullable(NONNEG),
    "cpus": array(ID, 1 << 16),
    "profiler_tgid": nullable(INT),
    "stacks": array(array(TEXT, 4096)),
    "samples": array(obj({"tgid": INT, "comm": NAME, "cpu": ID, "softirq": NAME, "kstack": nullable(COUNT),
                          "ustack": nullable(COUNT), "kstack_lost": {"type": ["boolean", "integer", "null"]},
                          "count": COUNT, "period_ns": nullable(COUNT)}, ("cpu", "count"))),
    "softirq": array(obj({"cpu": ID, "vec": nullable(INT), "name": NAME, "count": nullable(COUNT),
                          "time_ns": nullable(COUNT)}, ("cpu",))),
    "counters": {"type": "object", "additionalProperties": nullable(INT)},
}, ("samples",))

NF_SNAPSHOT = obj({
    "version": INT,
    "elapsed_s": nullable(NONNEG),
    "addresses": array(TEXT),
    "hooks": array(obj({"netns": NAME, "netns_ino": nullable(COUNT), "node": NAME, "hook": TEXT,
                        "count": nullable(COUNT), "sum_ns": nullable(COUNT), "buckets": BUCKETS,
                        "unclosed": nullable(COUNT)}, ("hook",))),
}, ("hooks",))

_QDISC = obj({"kind": NAME}, values=nullable(NUMBER))
_DEVICE = obj({"name": NAME, "role": NAME, "mtu": nullable(COUNT), "txqueuelen": nullable(COUNT),
               "features": {"type": "object", "additionalProperties": nullable(BOOL)},
               "fixed": {"type": "object", "additionalProperties": nullable(BOOL)},
               "rps_cpus": nullable(array(nullable(array(ID, 1 << 16)), 4096)),
               "xps_cpus": nullable(array(nullable(array(ID, 1 << 16)), 4096)),
               "rps_flow_cnt": nullable(array(nullable(COUNT), 4096)),
               "qdisc": nullable(_QDISC), "stats": {"type": "object", "additionalProperties": nullable(NUMBER)}})
NODESTATE = obj({
    "namespaces": array(obj({
        "netns": NAME, "kind": NAME, "node": NAME, "pod": NAME, "conntrack_count": nullable(COUNT),
        "netfilter": {"type": "object", "additionalProperties": nullable(NUMBER)},
        "devices": array(_DEVICE),
        "snmp": {"type": "object", "additionalProperties": nullable(NUMBER)},
        "processes": array(obj({"pid": INT, "comm": NAME, "cpus_allowed": nullable(array(ID, 1 << 16))})),
    })),
    "cpus": array(obj({"cpu": ID}, ("cpu",), values=nullable(NUMBER))),
})

# a generator's printed numbers (cniprof.traffic.*): scalars only; the ones the analysis computes with are numbers
SCALAR = {"type": ["null", "number", "string", "boolean"]}
GENERATOR = obj({k: nullable(NUMBER) for k in ("throughput_bps", "retransmits", "duration_s", "bytes",
                                                "lost_packets", "lost_percent", "sent", "received")},
                values=SCALAR)
_CPU_SUMMARY = obj({
    "cpus": array(ID, 1 << 16), "busy_ms": nullable(NONNEG),
    "components": {"type": "object",
                   "additionalProperties": obj({"group": NAME}, values=nullable({"type": ["number", "string",
                                                                                      "boolean"]}))},
    "softirq": {"type": "object", "additionalProperties": obj({}, values=nullable(NUMBER))},
})
_PAIRS = array({"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [SCALAR, COUNT]})  # (name, n)
_PATH_CHECK = obj({"directions": array(obj({
    "direction": NAME, "started": nullable(COUNT), "completed": nullable(COUNT),
    "ended": array(obj({"point": TEXT, "count": nullable(COUNT), "on_path": nullable(BOOL), "drops": nullable(_PAIRS),
                        "other": nullable(_PAIRS)}, ("point",)))}))})
SUMMARY = obj({
    "cni": NAME, "mode": NAME, "path": NAME, "kernel": NAME, "arch": NAME, "where": NAME, "command": NAME,
    "cniprof_version": NAME, "started": NAME,
    "counters": {"type": "object", "additionalProperties": nullable(COUNT)},
    "accounting": nullable(obj({"started": nullable(COUNT)})),
    "path_check": nullable(_PATH_CHECK),
    "duration_s": nullable(NONNEG),
    "traffic": nullable(GENERATOR),
    "generator": nullable(GENERATOR),
    "end_to_end": nullable(obj({"mean_us": nullable(NUMBER), "packets": nullable(NUMBER)})),
    "probes": array(TEXT),
    "sampling": obj({"every": nullable({"type": "integer", "minimum": 1, "maximum": BIG})}),
    "service": nullable(obj({"rules_per_node": nullable(NUMBER)})),
    "injections": array(TEXT),
    "cpu": nullable(_CPU_SUMMARY),
})

STUDY_METADATA = obj({
    "scenario": obj({"name": TEXT}, ("name",)),
    "environment": {"type": "object"},
    "max_spread_pct": nullable(NONNEG),
    "runs": array(obj({"run_id": TEXT, "model": NAME, "path": NAME, "variant": NAME, "tool": NAME},
                      ("run_id",))),
    "failed": array({"type": "object"}),
}, ("scenario",))

_LAB_DEVICE = obj({"name": TEXT, "role": TEXT, "ifindex": COUNT, "netns": TEXT}, ("name", "role", "ifindex", "netns"))
TOPOLOGY = obj({
    "cni": TEXT, "mode": TEXT,
    "nodes": array(obj({"name": TEXT, "netns": TEXT, "devices": array(_LAB_DEVICE)}, ("name", "netns", "devices"))),
    "pods": array(obj({"name": TEXT, "node": TEXT, "netns": TEXT, "ip": TEXT, "host_veth": TEXT,
                       "devices": array(_LAB_DEVICE)}, ("name", "node", "netns", "ip", "host_veth"))),
    "underlay_ips": {"type": "object", "additionalProperties": TEXT},
    "host_ips": {"type": "object", "additionalProperties": TEXT},
    "injections": array(TEXT),
}, ("cni", "mode", "nodes", "pods"))


def _ids(snapshot: Mapping[str, Any]) -> set[int]:
    return {int(p["id"]) for p in snapshot.get("points") or ()}


def _ref(r: Any) -> int:
    return int(r["id"]) if isinstance(r, Mapping) else int(r)


def check_hops_snapshot(snapshot: Mapping[str, Any]) -> str | None:
    """A hop or drop naming a point the snapshot does not have (None when all resolve)."""
    ids = _ids(snapshot)
    for kind, key, fields in (("hops", "hop", ("from", "to")), ("drops", "drop", ("point",))):
        for i, entry in enumerate(snapshot.get(kind) or ()):
            for f in fields:
                if _ref(entry[f]) not in ids:
                    return f"{kind}[{i}].{f}: point {_ref(entry[f])} is not in points"
    return None


def check_cpu_snapshot(snapshot: Mapping[str, Any]) -> str | None:
    """A sample naming a stack the snapshot does not have (None when all resolve)."""
    n = len(snapshot.get("stacks") or ())
    for i, s in enumerate(snapshot.get("samples") or ()):
        for key in ("kstack", "ustack"):
            if s.get(key) is not None and s[key] >= n:
                return f"samples[{i}].{key}: stack {s[key]} is not in stacks ({n} stacks)"
    return None


@dataclass(frozen=True)
class JsonFile:
    """What one kind of JSON run file must hold: its schema and the checks a schema cannot express."""

    what: str  # says what the file should be, for the message (e.g. "a hop snapshot from `cniprof trace`")
    schema: Mapping[str, Any]
    checks: tuple[Callable[[Any], str | None], ...] = field(default=())


HOPS = JsonFile("the hop probe's snapshot of `cniprof trace --export`", HOPS_SNAPSHOT, (check_hops_snapshot,))
CPU = JsonFile("the CPU sampler's snapshot of `cniprof trace --cpu --export`", CPU_SNAPSHOT, (check_cpu_snapshot,))
NF = JsonFile("the netfilter probe's snapshot of `cniprof trace --nf --export`", NF_SNAPSHOT)
NODE_STATE = JsonFile("the node state of `cniprof trace --export`", NODESTATE)
TRACE_SUMMARY = JsonFile("the summary of `cniprof trace --export`", SUMMARY)
STUDY = JsonFile("the metadata of a `cniprof run` study", STUDY_METADATA)
LAB = JsonFile("the lab's topology as `cniprof lab up` saved it", TOPOLOGY)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str) -> Any:
    """JSON without NaN and Infinity (Python's json accepts them; they are not JSON and no cniprof value)."""
    return json.loads(text, parse_constant=_refuse_constant)


def _where(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the whole file"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator in ("anyOf", "oneOf") and error.context:
        # "x is not of type 'null'" says nothing: name what the value should have been instead
        useful = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
        best = jsonschema.exceptions.best_match(useful or error.context)
        return _message(best) if best is not None else "has the wrong type"
    text = error.message.splitlines()[0] if error.message else "is not valid"
    return text if len(text) <= 160 else text[:160] + "..."


# the keywords these schemas use; conforms() answers for them, a schema with any other goes to jsonschema
FAST_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "propertyNames", "items",
                           "prefixItems", "minItems", "maxItems", "maxLength", "pattern", "minimum", "maximum",
                           "anyOf"})
_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: type(x) is dict, "array": lambda x: type(x) is list, "string": lambda x: type(x) is str,
    "boolean": lambda x: type(x) is bool, "null": lambda x: x is None,
    "number": lambda x: type(x) in (int, float),
    "integer": lambda x: type(x) is int or (type(x) is float and x.is_integer()),  # 1.0 is one (draft 6 on)
}


def conforms(data: Any, schema: Any) -> bool:
    """True when `data` certainly matches `schema` under JSON Schema 2020-12 as jsonschema checks it, decided
    without jsonschema (whose import alone is ~40 ms before `trace` can attach); False when it does not, or when
    the schema has a keyword outside FAST_KEYWORDS or the data a type json.loads does not make: check() then asks
    jsonschema, whose verdict and message stand. So a False is never wrong, only slower."""
    if type(schema) is not dict or not FAST_KEYWORDS.issuperset(schema):
        return False
    kind = schema.get("type")
    if kind is not None:
        names = (kind,) if type(kind) is str else kind
        if not any(name in _TYPE_TESTS and _TYPE_TESTS[name](data) for name in names):
            return False
    if type(data) is dict:
        if not all(key in data for key in schema.get("required", ())):
            return False
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        names_schema = schema.get("propertyNames")
        for key, value in data.items():
            if key in properties:
                if not conforms(value, properties[key]):
                    return False
            elif extra is not None and not conforms(value, extra):
                return False
            if names_schema is not None and not conforms(key, names_schema):
                return False
    elif type(data) is list:
        if not schema.get("minItems", 0) <= len(data) <= schema.get("maxItems", len(data)):
            return False
        prefix = schema.get("prefixItems", [])
        if not all(conforms(item, sub) for item, sub in zip(data, prefix)):
            return False
        if "items" in schema and not all(conforms(item, schema["items"]) for item in data[len(prefix):]):
            return False
    elif type(data) is str:
        if len(data) > schema.get("maxLength", len(data)):
            return False
        if "pattern" in schema and not re.search(schema["pattern"], data):
            return False
    elif type(data) in (int, float):
        if "minimum" in schema and data < schema["minimum"]:
            return False
        if "maximum" in schema and data > schema["maximum"]:
            return False
    elif not (type(data) is bool or data is None):
        return False  # not a JSON value: jsonschema decides
    return "anyOf" not in schema or any(conforms(data, sub) for sub in schema["anyOf"])


def check(data: Any, spec: JsonFile, source: str) -> Any:
    """`data` unchanged when it matches `spec`, else one UsageError line naming source and the field."""
    try:
        fast = conforms(data, spec.schema)
    except RecursionError:  # nested deeper than Python recurses: jsonschema says what it says about that
        fast = False
    if not fast:
        validator = jsonschema.Draft202012Validator(spec.schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            raise UsageError(f"{source}: {_where(error)}: {_message(error)} (not {spec.what})")
    for extra in spec.checks:
        problem = extra(data)
        if problem is not None:
            raise UsageError(f"{source}: {problem} (not {spec.what})")
    return data


def read_text(path: str | os.PathLike[str]) -> str:
    """A run file's text: a regular file of at most MAX_FILE_BYTES, UTF-8; one line when it is not."""
    p = Path(path)
    try:
        if not p.is_file():
            raise UsageError(f"{p}: not a regular file")
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{p}: larger than {MAX_FILE_BYTES >> 20} MiB, not a cniprof run file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not UTF-8 text, not a cniprof run file") from None


def load_json(path: str | os.PathLike[str], spec: JsonFile | None = None, *, required: bool = False) -> Any:
    """A JSON run file checked against `spec`; None when it does not exist (a UsageError when `required`)."""
    p = Path(path)
    if not p.exists():
        if required:
            raise UsageError(f"{p}: no such file" + (f" ({spec.what})" if spec is not None else ""))
        return None
    try:
        data = parse_json(read_text(p))
    except ValueError as e:
        raise UsageError(f"{p}: not valid JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise UsageError(f"{p}: nested too deeply to be a cniprof run file") from None
    return check(data, spec, str(p)) if spec is not None else data


# ------------------------------------------------------------------ CSV files

TEXT_COL, COUNT_COL, NUMBER_COL, MEASURED_COL, FLAG_COL = "text", "count", "number", "measured", "flag"


@dataclass(frozen=True)
class CsvFile:
    """What one kind of CSV run file must hold. Column kinds: text; count (an integer >= 0, never empty);
    number (finite, may be empty); measured (finite, empty only on rows whose `per` count is 0: a hop that
    saw no packet has no latency); flag (True/False)."""

    what: str
    columns: Mapping[str, str]
    per: str | None = None  # the count column that says whether a row's measured columns must be there
    optional: tuple[str, ...] = ()  # columns older or smaller exports may lack
    # (flag column, measured columns): rows whose flag is False may leave those empty however many packets they
    # have (a hop outside the chain is counted with its sum, not a histogram: a mean, no percentiles)
    unless: tuple[str, tuple[str, ...]] | None = None


HOPS_TABLE = CsvFile("the hop table of `cniprof trace --export`", {
    "direction": TEXT_COL, "seq": COUNT_COL, "hop": TEXT_COL, "role": TEXT_COL, "node": TEXT_COL,
    "device": TEXT_COL, "from_point": TEXT_COL, "to_point": TEXT_COL, "packets": COUNT_COL,
    "p50_us": MEASURED_COL, "p90_us": MEASURED_COL, "p99_us": MEASURED_COL, "mean_us": MEASURED_COL,
    "share_pct": NUMBER_COL, "expected": FLAG_COL, "in_e2e": FLAG_COL, "cpu_us_per_pkt": NUMBER_COL,
    "cpu_us_per_gb": NUMBER_COL, "cpu_component": TEXT_COL,
}, per="packets", optional=("cpu_us_per_pkt", "cpu_us_per_gb", "cpu_component"),  # the CPU columns: --cpu
   unless=("expected", ("p50_us", "p90_us", "p99_us")))
DROPS_TABLE = CsvFile("the drops table of `cniprof trace --export`", {
    "point": TEXT_COL, "node": TEXT_COL, "device": TEXT_COL, "reason": TEXT_COL, "count": COUNT_COL})
NF_TABLE = CsvFile("the netfilter table of `cniprof trace --nf --export`", {
    "node": TEXT_COL, "netns": TEXT_COL, "hook": TEXT_COL, "packets": COUNT_COL, "mean_us": MEASURED_COL,
    "p50_us": MEASURED_COL, "p90_us": MEASURED_COL, "p99_us": MEASURED_COL, "total_ms": NUMBER_COL,
    "unclosed": COUNT_COL}, per="packets")
RESULTS_TABLE = CsvFile("the results of a `cniprof run` study", {
    "run_id": TEXT_COL, "model": TEXT_COL, "path": TEXT_COL, "variant": TEXT_COL, "generator": TEXT_COL,
    "tool": TEXT_COL, "repetition": COUNT_COL, "metric": TEXT_COL, "value": NUMBER_COL, "primary": FLAG_COL,
    "higher_is_better": FLAG_COL})
STUDY_HOPS_TABLE = CsvFile("the hop tables of a `cniprof run` study", {
    "run_id": TEXT_COL, "model": TEXT_COL, "path": TEXT_COL, "variant": TEXT_COL, "generator": TEXT_COL,
    "direction": TEXT_COL, "hop": TEXT_COL, "role": TEXT_COL, "packets": COUNT_COL, "mean_us": MEASURED_COL,
    "share_pct": NUMBER_COL, "expected": FLAG_COL, "in_e2e": FLAG_COL}, per="packets")
STUDY_CPU_TABLE = CsvFile("the CPU table of a `cniprof run` study", {
    "run_id": TEXT_COL, "model": TEXT_COL, "path": TEXT_COL, "variant": TEXT_COL, "generator": TEXT_COL,
    "kind": TEXT_COL, "share_pct": NUMBER_COL, "us_per_pkt": NUMBER_COL, "net_rx_pct": NUMBER_COL,
    "cpu": NUMBER_COL, "component": TEXT_COL}, optional=("share_pct", "us_per_pkt", "net_rx_pct", "cpu",
                                                          "component"))
TUNE_TABLE = CsvFile("the runs of `cniprof tune`", {
    "tuning": TEXT_COL, "generator": TEXT_COL, "tool": TEXT_COL, "metric": TEXT_COL,
    "higher_is_better": FLAG_COL, "pair": COUNT_COL, "arm": TEXT_COL, "position": COUNT_COL})
COMPARE_TABLE = CsvFile("the comparison of `cniprof trace --cni A,B --export`", {
    "model": TEXT_COL, "status": TEXT_COL, "note": TEXT_COL})

_FLAGS = {"true": True, "false": False, "1": True, "0": False}


def _bad(source: str, col: str, row: int, value: Any, expected: str, spec: CsvFile) -> UsageError:
    shown = repr(value) if not (isinstance(value, float) and math.isnan(value)) else "an empty cell"
    return UsageError(f"{source}: row {row + 2}, column {col}: {shown} is not {expected} (not {spec.what})")


def check_table(df: pd.DataFrame, spec: CsvFile, source: str) -> pd.DataFrame:
    """The table with its columns in their types, or one UsageError line naming the first bad cell."""
    missing = [c for c in spec.columns if c not in df.columns and c not in spec.optional]
    if missing:
        raise UsageError(f"{source}: no column {', '.join(missing)} (not {spec.what})")
    out = df.copy()
    for col, kind in spec.columns.items():
        if col not in out.columns:
            continue
        if kind == TEXT_COL:  # an empty cell is an empty name, never the word "nan" in a finding
            out[col] = out[col].map(lambda v: "" if isinstance(v, float) and math.isnan(v) else str(v))
            continue
        raw = out[col]
        if kind == FLAG_COL:
            if raw.dtype == bool:
                continue
            mapped = raw.map(lambda v: _FLAGS.get(str(v).strip().lower()))
            bad = mapped.isna()
            if bad.any():
                i = int(bad.to_numpy().nonzero()[0][0])
                raise _bad(source, col, i, raw.iloc[i], "True or False", spec)
            out[col] = mapped.astype(bool)
            continue
        num = pd.to_numeric(raw, errors="coerce")
        wrong = num.isna() & raw.notna() | ~num.isna() & ~num.map(lambda v: math.isfinite(v) and abs(v) < 1e15)
        if wrong.any():
            i = int(wrong.to_numpy().nonzero()[0][0])
            raise _bad(source, col, i, raw.iloc[i], "a finite number", spec)
        if kind == COUNT_COL:
            whole = num.notna() & (num >= 0) & (num == num.round())
            if not whole.all():
                i = int((~whole).to_numpy().nonzero()[0][0])
                raise _bad(source, col, i, raw.iloc[i], "a count (an integer >= 0)", spec)
            num = num.astype("int64")
        out[col] = num
    if spec.per is not None and spec.per in out.columns:
        seen = out[spec.per] > 0
        for col, kind in spec.columns.items():
            if kind == MEASURED_COL and col in out.columns:
                gap = seen & out[col].isna()
                if spec.unless is not None and col in spec.unless[1] and spec.unless[0] in out.columns:
                    gap &= out[spec.unless[0]]
                if gap.any():
                    i = int(gap.to_numpy().nonzero()[0][0])
                    raise _bad(source, col, i, out[col].iloc[i],
                               f"a number (the row has {out[spec.per].iloc[i]} {spec.per})", spec)
    return out


def load_csv(path: str | os.PathLike[str], spec: CsvFile, *, required: bool = False) -> pd.DataFrame | None:
    """A CSV run file checked against `spec`; None when it does not exist (a UsageError when `required`)."""
    p = Path(path)
    if not p.exists():
        if required:
            raise UsageError(f"{p}: no such file ({spec.what})")
        return None
    text = read_text(p)
    if not text.strip():
        return check_table(pd.DataFrame(columns=list(spec.columns)), spec, str(p))
    try:
        df = pd.read_csv(StringIO(text), keep_default_na=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise UsageError(f"{p}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    return check_table(df, spec, str(p))
