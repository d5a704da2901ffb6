# SPDX-License-Identifier: Apache-2.0
"""report.html of a real `trace --cpu --export` run, opened in headless Chromium (Debian's chromium package,
driven by playwright) with no network at all: the browser runs in a network namespace of its own that has only
a loopback device, and every request the page makes is recorded.

Checks: no console error, the hop table and both flame graphs render (their screenshots are not blank), hovering
a hop shows its details, clicking a CPU frame zooms it to the full width, search highlights, reset undoes both.
Set CNIPROF_README_SCREENSHOT=PATH to also write the page's screenshot for the README (docs/report-html.png).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CNIPROF = [sys.executable, "-m", "cniprof"]
# root needs --no-sandbox; the rest keeps Chromium from reaching for the network it does not have
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage"]
HIGHLIGHT = "#e600e6"


def _run(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the work tree's package, run from the temporary directory
    return subprocess.run([*CNIPROF, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module")
def report(lab, tmp_path_factory) -> Path:
    """A real 3 s iperf3 trace with CPU sampling, exported: its end writes the report and names report.html."""
    base = tmp_path_factory.mktemp("browser")  # --export relative to it: the page shows no machine path
    p = _run("trace", "--cni", "flannel", "--duration", "3", "--cpu", "--no-ui", "--export", "run", cwd=base)
    assert p.returncode == 0, p.stderr
    assert f"report: {Path('run', 'report', 'report.html')} (" in p.stdout
    return base / "run" / "report" / "report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Chromium inside `unshare --net` (a new network namespace with loopback only, gone when it exits)."""
    assert Path(CHROMIUM).is_file(), "chromium missing: scripts/setup.sh installs Debian's chromium package"
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-offline"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("unshare")} --net {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(wrapper), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _blank(png: bytes) -> bool:
    """A region is blank when nearly all of it is one color."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    colors = im.getcolors(maxcolors=1 << 16) or []
    top = max((n for n, _ in colors), default=0)
    return len(colors) < 8 or top > 0.97 * im.width * im.height


def _frames(page, chart: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"#{chart} g.frame",
        "gs => gs.map((g, i) => ({i, name: g.getAttribute('name'), w: +g.querySelector('rect').getAttribute('width'),"
        " fill: g.querySelector('rect').getAttribute('fill')}))")


def test_report_renders_and_zooms_offline(report: Path, browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    console: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_selector("html[data-rendered]", timeout=20_000)
    assert console == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests

    # the hop table of each direction, with its end-to-end row
    tables = page.locator("#hops table")
    assert tables.count() == 2
    assert tables.first.locator("tbody tr").count() >= 10  # 9 hops of flannel's path + end-to-end (+ socket)
    assert not _blank(tables.first.screenshot())

    # the hop flame: root, two nodes, nine hops per direction, each hop as wide as its share
    hop_frames = _frames(page, "hops-flame-0")
    assert len(hop_frames) >= 12
    width = float(page.get_attribute("#hops-flame-0 svg", "width"))
    assert max(f["w"] for f in hop_frames) == pytest.approx(width, abs=1)
    assert not _blank(page.locator("#hops-flame-0").screenshot())
    vxlan = page.locator("#hops-flame-0 g.frame", has_text="vxlan encap").first
    vxlan.hover()
    tip = page.locator(".d3-flame-graph-tip").first
    tip.wait_for(state="visible", timeout=5_000)
    assert "vxlan encap" in tip.inner_text() and "of end-to-end" in tip.inner_text()
    page.mouse.move(0, 0)

    # the CPU flame graph
    cpu = page.locator("#cpu-flame-0")
    cpu.scroll_into_view_if_needed()
    frames = _frames(page, "cpu-flame-0")
    full = float(page.get_attribute("#cpu-flame-0 svg", "width"))
    assert len(frames) > 50 and not _blank(cpu.screenshot())
    page.screenshot(path=str(report.parent / "page.png"), full_page=False)

    # click a frame a tenth to a half as wide as the graph (not the root): it zooms to the full width
    pick = next(f for f in sorted(frames, key=lambda f: -f["w"]) if 0.1 * full < f["w"] < 0.5 * full)
    target = page.locator("#cpu-flame-0 g.frame").nth(pick["i"])
    target.evaluate("g => g.setAttribute('data-picked', '1')")
    target.locator("rect").click()
    page.wait_for_function(
        "w => Math.abs(+document.querySelector('#cpu-flame-0 g[data-picked] rect').getAttribute('width') - w) < 1",
        arg=full, timeout=5_000)

    # reset zooms out: the frame is back to its own width
    page.click("#cpu .flamebox button.reset")
    page.wait_for_function(
        "w => Math.abs(+document.querySelector('#cpu-flame-0 g[data-picked] rect').getAttribute('width') - w) < 1",
        arg=pick["w"], timeout=5_000)
    # search highlights the frames of the traced TCP stream and counts them; reset clears it
    page.fill("#cpu .flamebox input.search", "tcp_")
    page.click("#cpu .flamebox button[type=submit]")
    page.wait_for_function(f"() => document.querySelectorAll('#cpu-flame-0 rect[fill=\"{HIGHLIGHT}\"]').length > 0",
                           timeout=5_000)
    assert "frames match" in page.inner_text("#cpu-flame-0-details")
    page.click("#cpu .flamebox button.reset")
    page.wait_for_function(f"() => !document.querySelector('#cpu-flame-0 rect[fill=\"{HIGHLIGHT}\"]')",
                           timeout=5_000)
    assert console == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests

    target_png = os.environ.get("CNIPROF_README_SCREENSHOT")
    if target_png:
        _readme_screenshot(page, Path(target_png))
    page.close()


def _readme_screenshot(page, path: Path) -> None:
    """The header and hop tables, the hop flame, and the CPU flame graph's lower part (where the wide frames
    are), 900 px wide and 128 colors: small enough to check in."""
    page.evaluate("window.scrollTo(0, 0)")

    def box(sel: str) -> dict:
        return page.locator(sel).bounding_box()

    flame, heading = box("#cpu-flame-0"), box("#cpu")
    clips = [(0, box("#hop-flame")["y"] + box("#hop-flame")["height"]),  # header, hop tables, hop flame
             (heading["y"], flame["y"] - heading["y"]),  # CPU heading, search box and note
             (flame["y"] + max(0.0, flame["height"] - 460), min(460, flame["height"]))]  # the flame's base
    images = [Image.open(io.BytesIO(page.screenshot(full_page=True, clip={"x": 0, "y": y, "width": 1280,
                                                                          "height": h}))).convert("RGB")
              for y, h in clips]
    sheet = Image.new("RGB", (1280, sum(i.height for i in images)), "white")
    y = 0
    for im in images:
        sheet.paste(im, (0, y))
        y += im.height
    sheet = sheet.resize((900, round(sheet.height * 900 / 1280)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128, method=Image.MEDIANCUT).save(path, optimize=True)
