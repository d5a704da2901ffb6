# SPDX-License-Identifier: Apache-2.0
"""Folded stacks, speedscope, the SVG flame graphs (CPU, hop flame, differential) and `cniprof diff`, on
recorded captures. Every SVG is parsed as XML: a browser shows nothing for a malformed one."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from cpu_data import TCP_RULES, recorded, traffic_bytes

from cniprof.analysis.cpu import analyze_cpu, component_table, with_cpu
from cniprof.analysis.record import TraceRecord
from cniprof.analysis.summary import analyze
from cniprof.cli.main import main
from cniprof.errors import UsageError
from cniprof.report.cpu_profile import (
    SPEEDSCOPE_SCHEMA,
    component_changes,
    fold,
    folded_text,
    load_profile,
    parse_folded,
    speedscope,
)
from cniprof.report.export import export_trace
from cniprof.report.flame_svg import build_tree, diff_color, diff_svg, flame_svg, hop_flame_svg

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def run() -> dict:
    return recorded()


def _titles(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}title")]


def test_folded_format(run) -> None:
    folded = fold(run["cpu"])
    text = folded_text(folded)
    lines = text.splitlines()
    assert lines == sorted(lines) and text.endswith("\n")
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        assert int(count) > 0 and " " not in stack
    assert parse_folded(text) == folded
    # busy samples only; the process name comes first, the innermost (kernel) frame last
    comps = component_table(run["cpu"])
    assert sum(folded.values()) == comps["samples"].sum()
    assert any(st[0] == "iperf3" and st[-1] == "_copy_from_iter" for st in folded)
    assert not any(st[-1] in ("default_idle", "pv_native_safe_halt") and st[0].startswith("swapper")
                   for st in folded)


def test_folded_from_other_tools() -> None:
    text = "swapper/0;do_idle;default_idle 5\nperf;[unknown] 1\nbad line\nx;y 2\nx;y 3\n"
    assert parse_folded(text) == Counter({("swapper/0", "do_idle", "default_idle"): 5, ("perf", "[unknown]"): 1,
                                          ("x", "y"): 5})


def test_speedscope(run) -> None:
    doc = speedscope(run["cpu"], name="tcp")
    json.dumps(doc, allow_nan=False)
    assert doc["$schema"] == SPEEDSCOPE_SCHEMA and doc["activeProfileIndex"] == 0
    frames = doc["shared"]["frames"]
    assert all(set(f) == {"name"} for f in frames)
    assert [p["name"] for p in doc["profiles"]] == ["tcp · all CPUs", "tcp · CPU 0", "tcp · CPU 1"]
    for p in doc["profiles"]:
        assert p["type"] == "sampled" and p["unit"] == "milliseconds" and p["startValue"] == 0
        assert len(p["samples"]) == len(p["weights"]) > 0
        assert all(0 <= i < len(frames) for s in p["samples"] for i in s)
        assert p["endValue"] == pytest.approx(sum(p["weights"]))
    everything = doc["profiles"][0]
    assert everything["endValue"] == pytest.approx(sum(x["endValue"] for x in doc["profiles"][1:]), rel=1e-6)
    assert everything["endValue"] == pytest.approx(component_table(run["cpu"])["cpu_ms"].sum(), rel=1e-6)


def test_flame_svg(run) -> None:
    folded = fold(run["cpu"])
    svg = flame_svg(folded, title="tcp <&> run")
    titles = _titles(svg)
    total = sum(folded.values())
    assert any(t.startswith(f"all ({total:,} samples, 100.00 %)") for t in titles)
    assert any(t.startswith("veth_xmit (") and t.endswith("· veth") for t in titles)
    assert any(t.startswith("nf_hook_slow (") for t in titles)
    root = ET.fromstring(svg)
    widths = [float(r.get("width")) for r in root.iter(f"{SVG}rect") if r.get("height") == "16"]
    assert max(widths) == pytest.approx(1180, abs=0.5)  # the root spans the width (1200 - 2 * 10 padding)
    assert "<script" not in svg and "href" not in svg  # self-contained


def test_flame_svg_escapes_names() -> None:
    svg = flame_svg({("a<b>", "std::vector<int>::push_back&"): 3, ('q"x', "y"): 1})
    assert any("std::vector<int>::push_back&" in t for t in _titles(svg))


def test_tree_widths_add_up() -> None:
    root = build_tree({("a", "b"): 2, ("a", "c"): 3, ("d",): 1})
    assert root.value == 6 and root.children["a"].value == 5 and root.children["a"].children["c"].value == 3


def test_diff_colors() -> None:
    assert diff_color(0.1, 0.1).startswith("#ff")  # more in B: red
    assert diff_color(-0.1, 0.1).endswith("ff") and not diff_color(-0.1, 0.1).startswith("#ff")  # blue
    assert diff_color(0.0, 0.1) == "#ebebeb"


def test_diff_svg_on_recorded_runs(run) -> None:
    a, b = fold(run["cpu"]), fold(recorded(TCP_RULES)["cpu"])
    svg = diff_svg(a, b, a_name="baseline", b_name="2000 rules")
    titles = _titles(svg)
    nft = [t for t in titles if t.startswith("nft_do_chain:")]
    assert nft and all("+" in t.rsplit(",", 1)[1] for t in nft)  # grew
    root = ET.fromstring(svg)
    fills = {r.get("fill") for r in root.iter(f"{SVG}rect")}
    assert any(f.startswith("#ff") and f != "#ffffff" for f in fills if f)  # some red
    assert any(f.endswith("ff") and not f.startswith("#ff") for f in fills if f)  # some blue
    # normalised: the same profile against itself is all unchanged
    same = ET.fromstring(diff_svg(a, a))
    assert {r.get("fill") for r in same.iter(f"{SVG}rect") if r.get("height") == "16"} == {"#ebebeb"}


def test_hop_flame(run) -> None:
    a = analyze(run["hops"])
    cpu = analyze_cpu(run["cpu"], a.hops, traffic_bytes(run), run["summary"]["sampling"]["every"])
    hops = with_cpu(a, cpu).hops
    e2e = dict(zip(a.e2e["direction"], a.e2e["mean_us"]))
    svg = hop_flame_svg(hops, e2e)
    titles = _titles(svg)
    texts = [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]
    for direction in a.directions:
        assert any(t.startswith(f"{direction} · end-to-end mean") for t in texts)
    assert any("vxlan" in t and "% of end-to-end" in t and "CPU" in t and "µs/packet" in t for t in titles)
    assert not any("socket delivery" in t for t in titles)  # after the end-to-end point
    # without the e2e table the widths come from share_pct; empty tables still render
    assert _titles(hop_flame_svg(a.hops))
    ET.fromstring(hop_flame_svg(a.hops.iloc[0:0]))


def _record(r: dict, cpu: bool = True) -> TraceRecord:
    return TraceRecord("flannel", "vxlan", "cross-node", r["hops"], 2.0, cpu=r["cpu"] if cpu else None)


def test_export_flames(tmp_path: Path, run) -> None:
    paths = export_trace(tmp_path / "cpu", _record(run))
    assert {"cpu.folded", "cpu.json", "cpu.speedscope.json", "cpu.svg", "hops-flame.svg"} <= set(paths)
    assert json.loads((tmp_path / "cpu" / "cpu.json").read_text()) == run["cpu"]
    for name in ("cpu.svg", "hops-flame.svg"):
        ET.parse(tmp_path / "cpu" / name)
    only_hops = export_trace(tmp_path / "h", _record(run, cpu=False))
    assert "hops-flame.svg" in only_hops and not any(name.startswith("cpu.") for name in only_hops)


def _export_dir(tmp_path: Path, name: str, data: str) -> Path:
    d = tmp_path / name
    export_trace(d, _record(recorded(data)))
    return d


def test_load_profile_variants(tmp_path: Path) -> None:
    d = _export_dir(tmp_path, "base", "recorded_cpu_tcp.json.gz")
    from_dir = load_profile(d)
    assert from_dir.name == "base" and sum(from_dir.folded.values()) == from_dir.components["samples"].sum()
    # folded-only directory and a bare folded file: same stacks, components charged by the same rules
    f = tmp_path / "only" / "cpu.folded"
    f.parent.mkdir()
    f.write_text((d / "cpu.folded").read_text())
    for p in (f.parent, f):
        prof = load_profile(p)
        assert prof.folded == from_dir.folded
        assert prof.components.iloc[0]["component"] in {"tcp", "socket copy"}
        assert abs(prof.components["share_pct"].sum() - 100) < 1e-6
    with pytest.raises(UsageError, match="neither cpu.json nor cpu.folded"):
        load_profile(tmp_path)
    with pytest.raises(UsageError, match="no such"):
        load_profile(tmp_path / "missing")
    bad = tmp_path / "bad.json"
    bad.write_text('{"hops": []}')
    with pytest.raises(UsageError, match="not a cniprof CPU snapshot"):
        load_profile(bad)


def test_component_changes(tmp_path: Path) -> None:
    a = load_profile(_export_dir(tmp_path, "a", "recorded_cpu_tcp.json.gz"))
    b = load_profile(_export_dir(tmp_path, "b", TCP_RULES))
    ch = component_changes(a, b)
    assert ch.iloc[0]["component"] == "netfilter/nftables" and ch.iloc[0]["delta_pp"] > 10
    assert ch["delta_pp"].sum() == pytest.approx(0.0, abs=1e-6)  # shares move between components
    assert isinstance(ch, pd.DataFrame)


def test_diff_cli(tmp_path: Path, capsys) -> None:
    a = _export_dir(tmp_path, "baseline", "recorded_cpu_tcp.json.gz")
    b = _export_dir(tmp_path, "rules2000", TCP_RULES)
    out = tmp_path / "d" / "diff.svg"
    assert main(["diff", str(a), str(b), "--out", str(out), "--top", "5"]) == 0
    text = capsys.readouterr().out
    first_row = next(line for line in text.splitlines() if "pp" in line)
    assert "netfilter/nftables" in first_row and "+" in first_row
    assert "largest change: netfilter/nftables grew" in text and str(out) in text.replace("\n", "")
    ET.parse(out)


def test_diff_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["diff", str(tmp_path / "nope"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err


def test_diff_cli_comm_filter(tmp_path: Path, capsys) -> None:
    a = _export_dir(tmp_path, "baseline", "recorded_cpu_tcp.json.gz")
    b = _export_dir(tmp_path, "rules2000", TCP_RULES)
    out = tmp_path / "diff.svg"
    assert main(["diff", str(a), str(b), "--out", str(out), "--comm", "iperf3", "--comm", "ksoftirqd"]) == 0
    text = capsys.readouterr().out
    assert "largest change: netfilter/nftables grew" in text and "processes iperf3, ksoftirqd" in text
    prof = load_profile(b, ("iperf3",))
    assert prof.folded and all(st[0] == "iperf3" for st in prof.folded)
    assert "cniprof" not in set(prof.components["component"])  # the profiler's own process is left out
    assert main(["diff", str(a), str(b), "--out", str(out), "--comm", "nosuchprocess"]) == 2
    assert "no busy samples of nosuchprocess" in capsys.readouterr().err
