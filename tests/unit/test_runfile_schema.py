# SPDX-License-Identifier: Apache-2.0
"""runfiles.conforms, the fast path of runfiles.check, against jsonschema itself.

check() asks jsonschema only when conforms() is not sure the data matches (a `trace` reading the lab's state then
attaches without importing jsonschema). So conforms() must never say True where jsonschema finds an error; and,
to be worth having, it says True wherever jsonschema finds none, for the keywords the run files' schemas use.
Both are checked on generated schemas and values, and on the real run files of an export, spoiled the way
test_runfile_fuzz.py spoils them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import run_files
from hypothesis import given, settings
from hypothesis import strategies as st
from test_runfile_fuzz import spoiled_json

from cniprof import runfiles
from cniprof.errors import UsageError

EXAMPLES = int(os.environ.get("CNIPROF_FUZZ_EXAMPLES", "25"))
MANY = settings(max_examples=EXAMPLES * 40, deadline=None, database=None)
SPECS = {name: spec for name, spec in vars(runfiles).items() if isinstance(spec, runfiles.JsonFile)}
KEYS = ["a", "b", "id", "0", "12", "x"]
PATTERNS = [runfiles.BUCKET_KEY, "^a", "[0-9]", "^$"]
TYPES = ["object", "array", "string", "boolean", "null", "number", "integer"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, 1.0, -2.0, 0.5, 2.0**53])
    | st.text(max_size=3) | st.sampled_from(KEYS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=2),
                                                                  inner, max_size=4),
    max_leaves=12)
numbers = st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False)


def _schemas(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True),
        "properties": st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
        "required": st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
        "additionalProperties": inner, "propertyNames": inner, "items": inner,
        "prefixItems": st.lists(inner, max_size=2), "minItems": st.integers(0, 3), "maxItems": st.integers(0, 3),
        "maxLength": st.integers(0, 3), "pattern": st.sampled_from(PATTERNS), "minimum": numbers,
        "maximum": numbers, "anyOf": st.lists(inner, min_size=1, max_size=3)})


schemas = st.recursive(_schemas(st.just({})), _schemas, max_leaves=6)


def _jsonschema_valid(data: Any, schema: dict[str, Any]) -> bool:
    return not any(jsonschema.Draft202012Validator(schema).iter_errors(data))


@MANY
@given(data=json_values, schema=schemas)
def test_conforms_is_jsonschema_on_generated_schemas(data: Any, schema: dict[str, Any]) -> None:
    assert runfiles.conforms(data, schema) == _jsonschema_valid(data, schema), (data, schema)


def _keywords(schema: Any) -> set[str]:
    if isinstance(schema, list):
        return set().union(*map(_keywords, schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        found |= _keywords(list(value.values()) if key == "properties" else value)
    return found


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_run_file_schema_takes_the_fast_path(name: str) -> None:
    assert _keywords(SPECS[name].schema) <= runfiles.FAST_KEYWORDS


def test_not_json_or_not_known_is_left_to_jsonschema() -> None:
    """False (jsonschema decides) for what conforms() does not model, never an answer of its own."""
    assert not runfiles.conforms(1, {"type": "integer", "multipleOf": 2})  # a keyword it does not know
    assert not runfiles.conforms((1, 2), {"type": "array"})  # a tuple: not what json.loads makes
    assert not runfiles.conforms({"a": 1}, {"additionalProperties": True})  # a boolean schema
    assert runfiles.conforms({"a": 1}, {"type": "object", "additionalProperties": {"type": "integer"}})


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_files.trace_export(tmp_path_factory.mktemp("good") / "run")


FILES = {"summary.json": "TRACE_SUMMARY", "snapshot.json": "HOPS", "cpu.json": "CPU", "nf.json": "NF",
         "nodestate.json": "NODE_STATE"}


@settings(max_examples=EXAMPLES * 4, deadline=None, database=None)
@given(data=st.data())
def test_conforms_is_jsonschema_on_spoiled_run_files(export: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(f for f in FILES if (export / f).is_file())))
    doc = data.draw(spoiled_json(json.loads((export / name).read_text())))
    schema = SPECS[FILES[name]].schema
    assert runfiles.conforms(doc, schema) == _jsonschema_valid(doc, schema)


def test_the_lab_state_message_is_jsonschema_s(tmp_path: Path) -> None:
    """A lab state conforms() refuses gets jsonschema's one line, as before the fast path."""
    lab = {"cni": "flannel", "mode": "vxlan", "nodes": [{"name": "node1", "netns": "n1", "devices": [
        {"name": "eth0", "role": "underlay", "ifindex": -1, "netns": "n1"}]}], "pods": []}
    assert not runfiles.conforms(lab, runfiles.LAB.schema)
    with pytest.raises(UsageError, match=r"^lab\.json: nodes\[0\]\.devices\[0\]\.ifindex: -1 is less than the "
                                         r"minimum of 0 \(not the lab's topology"):
        runfiles.check(lab, runfiles.LAB, "lab.json")
    lab["nodes"][0]["devices"][0]["ifindex"] = 2
    assert runfiles.conforms(lab, runfiles.LAB.schema) and runfiles.check(lab, runfiles.LAB, "lab.json") is lab
