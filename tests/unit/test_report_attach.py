# SPDX-License-Identifier: Apache-2.0
"""report.html, report.md, the PNG flames and the bundle on recorded runs of every kind (trace export,
comparison, study, tune). The page's drawing is tested in a real browser in tests/root/test_report_browser.py;
here: self-containment, content, Markdown that renders as a table, determinism and the bundle's rules."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from report_data import COMMAND, STUDY_RUN, comparison_export, fault_export, trace_export, tune_run

from cniprof.cli.main import main
from cniprof.errors import UsageError
from cniprof.report import attach, bundle, flame_png, html, markdown, rundir
from cniprof.report.cpu_profile import parse_folded

ASSETS = Path(html.__file__).parent / "assets"


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory) -> Path:
    return trace_export(tmp_path_factory.mktemp("trace") / "run")


class _Refs(HTMLParser):
    """Every URL-bearing attribute and every element of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "action", "data", "poster", "srcset") and v is not None:
                self.urls.append(v)
            if k == "id":
                self.ids.add(v)


def _parse(page: str) -> _Refs:
    p = _Refs()
    p.feed(page)
    return p


def _page_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="cniprof-data">(.*?)</script>', page, re.DOTALL)
    assert m
    return json.loads(m.group(1))


def test_vendored_assets_are_the_pinned_versions_with_their_licenses():
    table = (ASSETS / "README.md").read_text()
    for name in html.VENDORED:
        digest = hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
        assert f"| {name} |" in table and digest in table, name
        stem = name.split(".min.js")[0].replace(".umd", "")
        assert (ASSETS / f"{stem}.LICENSE").read_text().strip()
    page = html.render(rundir.load(STUDY_RUN))
    assert "d3-flame-graph 5.0.0 (Apache-2.0) and d3 7.9.2 (ISC)" in page  # the footer names what is inlined


def test_trace_page_is_self_contained_and_complete(trace_dir):
    run = rundir.load(trace_dir)
    assert run.kind == rundir.TRACE
    page = html.render(run)
    refs = _parse(page)
    # nothing to fetch: no external script, style, image or link target; the CSP forbids connections anyway
    assert all(u.startswith(("#", "data:")) for u in refs.urls), refs.urls
    assert "link" not in refs.tags and "iframe" not in refs.tags
    assert "default-src 'none'" in page and "connect-src" not in page
    for name in (*html.VENDORED, "report.js"):
        assert html.asset(name)[:200] in page
    data = _page_data(page)
    t = run.trace
    assert [f["id"] for f in data["hop_flames"]] == ["hops-flame-0", "hops-flame-1"]
    assert {"hops-flame-0", "hops-flame-1", "cpu-flame-0"} <= refs.ids
    # the hop flame of the forward direction: root = end-to-end, hops as wide as their mean
    fwd = data["hop_flames"][0]["tree"]
    hops = t.hops[(t.hops["direction"] == t.directions[0]) & t.hops["in_e2e"] & t.hops["expected"]]
    leaves = [h for node in fwd["children"] for h in node.get("children", [])]
    assert len(leaves) == len(hops)
    assert sum(h["value"] for h in leaves) == pytest.approx(hops["mean_us"].sum())
    assert fwd["value"] >= sum(n["value"] for n in fwd["children"]) - 1e-9
    # the CPU flame: every busy sample, frames decoded back to the folded stacks' total
    prof = data["cpu_flames"][0]
    folded = parse_folded((trace_dir / "cpu.folded").read_text())
    assert prof["tree"][1] == sum(folded.values())
    assert prof["names"][0] == "all" and len(prof["names"]) == len(prof["colors"]) == len(prof["components"])
    # header, both directions' tables with end-to-end and reconciliation, netfilter, drops, findings
    for text in (COMMAND, "started", "2026-11-30 14:05:09 +0100", "cniprof version", "kernel", "CNI and mode",
                 "flannel:vxlan", "nodes", "node1, node2", "traffic", "iperf3",
                 *t.directions, "end-to-end", "reconciliation: Σ hop means", "path check", "netfilter", "drops",
                 "findings", "observation"):
        assert text in page, text


def test_page_escapes_names_from_the_run(tmp_path):
    d = trace_export(tmp_path / "run")
    snap = (d / "snapshot.json").read_text()
    assert '"cni0"' in snap
    (d / "snapshot.json").write_text(snap.replace('"cni0"', '"<script>alert(1)</script>"'))
    page = html.render(rundir.load(d))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\u003cscript>alert(1)\\u003c/script>" in page  # inside the embedded JSON too
    _page_data(page)


def test_fault_finding_shows_evidence_and_advice(tmp_path):
    run = rundir.load(fault_export(tmp_path / "fault"))
    page = html.render(run)
    top = run.trace.findings[0]
    assert top.severity == "fault" and 'class="finding fault-box"' in page
    assert top.evidence[0].where in page.replace("&gt;", ">")
    assert "cniprof tune --try offloads-on" in page and top.advice[0]["how"][:30] in page.replace("&#x27;", "'")


def test_cpu_frames_over_the_budget_are_left_out(trace_dir):
    run = rundir.load(trace_dir)
    full = html.cpu_flame(run.trace.folded)
    small = html.cpu_flame(run.trace.folded, budget=50)
    assert small["frames"] <= 50 < full["frames"] == full["frames_total"]
    assert small["tree"][1] == full["tree"][1]  # the root keeps every sample

    def walk(node, parent_value):
        assert node[1] <= parent_value and (len(node) < 3 or sum(c[1] for c in node[2]) <= node[1])
        for c in node[2] if len(node) > 2 else ():
            assert c[1] >= small["min_samples"]
            walk(c, node[1])

    walk(small["tree"], small["tree"][1])


def _md_tables(md: str) -> list[str]:
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    return re.findall(r"<table>.*?</table>", rendered, re.DOTALL)


def test_markdown_renders_the_forward_hop_table_under_60_lines(trace_dir):
    run = rundir.load(trace_dir)
    md = markdown.render(run, bundle.name(run), bundled=False)
    lines = md.splitlines()
    assert len(lines) < 60
    tables = _md_tables(md)
    assert len(tables) == 1
    fwd = run.trace.directions[0]
    n = len(run.trace.hops[(run.trace.hops["direction"] == fwd) & run.trace.hops["in_e2e"]
                           & run.trace.hops["expected"]])
    assert tables[0].count("<tr>") == 1 + n + 1  # header, hops, end-to-end
    assert "end-to-end" in tables[0] and fwd in md
    assert "### Top findings" in md and re.search(r"^1\. \*\*observation\*\*", md, re.MULTILINE)
    assert bundle.name(run) in lines[-1] and "--bundle" in lines[-1]


@pytest.mark.parametrize("kind", ["comparison", "study", "tune", "fault"])
def test_markdown_of_every_kind_stays_under_60_lines(tmp_path, kind):
    root = {"comparison": lambda: comparison_export(tmp_path / "cmp"), "study": lambda: STUDY_RUN,
            "tune": lambda: tune_run(tmp_path / "tune"), "fault": lambda: fault_export(tmp_path / "fault")}[kind]()
    run = rundir.load(root)
    md = markdown.render(run, bundle.name(run))
    assert len(md.splitlines()) < 60
    assert _md_tables(md), md
    assert bundle.name(run) in md.splitlines()[-1]


def test_long_tables_are_cut_and_say_so():
    rows = [[i, f"hop {i}"] for i in range(100)]
    lines = markdown.md_table(["#", "hop"], rows, numeric=(0,), max_rows=10, more="hops")
    assert len(lines) == 2 + 10 and "91 more hops in report.html" in lines[-1]


def test_comparison_page_has_the_table_and_each_model(tmp_path):
    run = rundir.load(comparison_export(tmp_path / "cmp"))
    assert run.kind == rundir.COMPARISON and [t.spec for t in run.models] == ["flannel:vxlan", "calico:bgp",
                                                                              "host:network"]
    page = html.render(run)
    for text in ("throughput (Gbit/s)", "vxlan encap", "skipped calico:ipip: needs CONFIG_NET_IPIP",
                 "flannel-vxlan · hops", "host-network · hop flame"):
        assert text in page, text
    assert len(_page_data(page)["hop_flames"]) == 6  # 3 models x 2 directions
    written = attach.write(run, tmp_path / "out")
    assert sorted(p.name for p in written.files) == sorted(
        ["report.html", "report.md", *(f"hops-flame-{t.name}.png" for t in run.models)])  # recorded without --cpu


def test_study_and_tune_pages(tmp_path):
    study = rundir.load(STUDY_RUN)
    page = html.render(study, images=[])
    assert study.kind == rundir.STUDY and "host:network" in page and "iperf3-tcp" in page
    tuned = rundir.load(tune_run(tmp_path / "tune"))
    assert tuned.kind == rundir.TUNE
    page = html.render(tuned, images=[tmp_path / "tune" / "tune.png"])
    assert "offloads-on" in page and "×1.200" in page and "helps" in page
    assert 'src="data:image/png;base64,iVBOR' in page


def test_not_a_run_directory_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="holds no cniprof run") as e:
        rundir.load(tmp_path)
    assert "\n" not in str(e.value)


def test_flame_pngs(trace_dir, tmp_path):
    run = rundir.load(trace_dir)
    paths = flame_png.write(run.trace, tmp_path)
    assert [p.name for p in paths] == ["hops-flame.png", "cpu-flame.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    # frames are laid out side by side within their parent
    tree = flame_png.cpu_tree(run.trace.folded)
    placed = list(flame_png.frames(tree))
    assert placed[0][:3] == (0.0, 1.0, 0)
    assert all(0.0 <= x and x + w <= 1.0 + 1e-9 for x, w, _, _ in placed)
    no_cpu = rundir.load(fault_export(tmp_path / "fault")).trace
    assert [p.name for p in flame_png.write(no_cpu, tmp_path / "n")] == ["hops-flame.png"]


def test_bundle_rerenders_the_same_report_elsewhere(tmp_path):
    src = trace_export(tmp_path / "run")
    (src / "runs").mkdir()
    (src / "runs" / "note.txt").write_text("kept")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("not for the bundle")
    (src / "escape-file").symlink_to(outside / "key")
    (src / "escape-dir").symlink_to(outside)
    written = attach.write(rundir.load(src), src, bundle=True)
    b = written.bundle
    assert b is not None and b.path.parent == src and b.path.name == "cniprof-flannel-2026-11-30-1305.tar.gz"
    assert b.size == b.path.stat().st_size and sorted(b.skipped_links) == ["escape-dir", "escape-file"]
    assert not list(src.glob("*.tmp")) and not list(src.glob(".cniprof-bundle-*"))
    with tarfile.open(b.path) as tar:
        names = tar.getnames()
        assert all(m.isfile() for m in tar.getmembers())
    top = b.path.name[: -len(".tar.gz")]
    assert all(n.startswith(top + "/") for n in names) and len(names) == b.files
    assert {f"{top}/snapshot.json", f"{top}/cpu.json", f"{top}/report.html", f"{top}/runs/note.txt"} <= set(names)
    assert not any("escape" in n or "secret" in n for n in names)
    # unpacked in another directory, the same files render the same report.html (and name the same bundle)
    dest = tmp_path / "elsewhere"
    with tarfile.open(b.path) as tar:
        tar.extractall(dest)
    again = attach.write(rundir.load(dest / top), tmp_path / "out")
    assert again.html.read_bytes() == written.html.read_bytes()
    assert (tmp_path / "out" / "report.md").read_text().replace("`cniprof report DIR --bundle` writes ", "") \
        .split("the run's files: ")[1].startswith(f"`{b.path.name}`")
    # a second bundle leaves the first one out
    second = bundle.write(rundir.load(src), tmp_path / "b2")
    with tarfile.open(second.path) as tar:
        assert not any(n.endswith(".tar.gz") for n in tar.getnames())


def test_bundle_of_a_study_is_named_after_its_models(tmp_path):
    run_dir = tmp_path / "study"
    shutil.copytree(STUDY_RUN, run_dir)
    run = rundir.load(run_dir)
    started = run.study.metadata["started"]
    assert bundle.name(run) == f"cniprof-{'+'.join(run.cnis)}-{started[:10]}-{started[11:13]}{started[14:16]}.tar.gz"


def test_a_huge_profile_keeps_the_page_under_2_mb(trace_dir):
    """A long --cpu trace of a busy machine: ~100 000 distinct frames (real frame names recombined into deeper
    stacks) still give a page under 2 MB, the root keeping every sample."""
    run = rundir.load(trace_dir)
    base = list(run.trace.folded.items())
    huge = dict(base)
    for i in range(60_000):
        frames, n = base[i % len(base)]
        huge[(*frames[:-1], f"{frames[-1]}_{i % 9000}", f"leaf_{i}")] = n
    run.trace.folded = huge
    page = html.render(run)
    data = _page_data(page)["cpu_flames"][0]
    assert data["frames_total"] > 100_000 and data["frames"] <= html.CPU_FRAME_BUDGET
    assert data["tree"][1] == sum(huge.values())
    assert len(page.encode()) < 2_000_000


def test_report_cli_on_a_trace_export_with_bundle(tmp_path, capsys):
    src = trace_export(tmp_path / "run")
    assert main(["report", str(src), "--bundle"]) == 0
    out = capsys.readouterr().out
    html_path = src / "report" / "report.html"
    assert f"report: {html_path}" in out and "MB" in out
    (bundle_path,) = (src / "report").glob("cniprof-flannel-*.tar.gz")
    assert f"bundle: {bundle_path} (" in out and "MB" in out
    for name in ("report.md", "hops-flame.png", "cpu-flame.png"):
        assert (src / "report" / name).is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
