# SPDX-License-Identifier: Apache-2.0
"""Inside a kernel-matrix guest (tests/vm/matrix.py boots it): what cniprof can do on this kernel, for real.

    python3 /vm/guest.py load|full

Prints one line `CNIPROF-VM-RESULT {json}` that the host compares with tests/vm/expected.json:
  doctor   `cniprof doctor --json`: every feature's availability (and its detail, not compared)
  choices  the probe type doctor says trace will use per feature (features.Features.choices())
  load     every chosen probe loaded and attached through cniprof's own probe classes: "ok" or the error
  trace    (full) the flannel lab traced: 23 UDP datagrams counted on every hop (+ --cpu where allowed), drops
           with their reason behind an iptables DROP rule, and --nf on a pod-to-service flow with kube-proxy
           rules; each with the probe types the run reports, which must equal doctor's choices
Runs the real CLI (`python3 -m cniprof ...`) as a user would; never raises: errors go into the result.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

RESULT_TAG = "CNIPROF-VM-RESULT "
COUNT = 23
SERVICES = 50
# --duration of the udp traces: a bound, not a wait (the run ends when the sender has sent --count). A Python
# sender in a TCG guest on a busy host took over the default 10 s to start and send.
DURATION = "120"
LAB_ID = "vm"
ENV = {**os.environ, "CNIPROF_LAB_ID": LAB_ID}


def cniprof(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cniprof", *args], capture_output=True, text=True, env=ENV, check=False,
                          timeout=timeout)
    print(f"guest: cniprof {' '.join(args)}: exit {proc.returncode} in {time.monotonic() - t0:.1f} s", flush=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", flush=True)
    return proc


def doctor(result: dict) -> dict:
    proc = cniprof("doctor", "--json", timeout=600)
    data = json.loads(proc.stdout)
    result["doctor"] = {name: f["available"] for name, f in data["features"].items()}
    result["doctor_detail"] = {name: f["detail"] for name, f in data["features"].items()}
    result["verdict"] = data["verdict"]
    result["choices"] = data["choices"]
    return data


# ------------------------------------------------------------------------------------------------ load


def load_probes(choices: dict) -> dict:
    """Each chosen probe started and closed through cniprof's probe classes, in a throwaway namespace."""
    from pyroute2 import netns as pr_netns

    from cniprof.bpf.build import object_path
    from cniprof.bpf.features import Features
    from cniprof.probes.cpu import CpuSampler
    from cniprof.probes.hops import HopProbe
    from cniprof.probes.nfhooks import NfHookProbe
    from cniprof.probes.plan import Point

    out: dict[str, str] = {}
    ns = "cpvm-load"
    pr_netns.create(ns)
    try:
        ino = os.stat(f"/run/netns/{ns}").st_ino
        features = Features.from_dict(json.loads(cniprof("doctor", "--json").stdout))

        def attempt(name: str, fn) -> None:
            try:
                fn()
                out[name] = "ok"
            except Exception as e:  # noqa: BLE001 - the message is the result
                out[name] = f"{type(e).__name__}: {e}"

        def hops() -> None:
            points = [Point(ev, ns, ino, 0 if ev == "copy" else 1, "lo", "pod_veth", "node1", pod="a")
                      for ev in ("queue", "xmit", "rx", "receive", "copy")]  # every program of the object
            with HopProbe(object_path("hops"), points, [], []) as p:
                p.start()
                if p.drop_program != {"tp_btf": "on_kfree_skb", "tp_btf_noreason": "on_kfree_skb_noreason"}[choices["drops"]]:
                    raise AssertionError(f"hop probe attached {p.drop_program}, doctor chose {choices['drops']}")
                p.snapshot()

        def cpu() -> None:
            with CpuSampler(object_path("cpu")) as s:
                s.start()
                s.snapshot()

        def nf() -> None:
            with NfHookProbe([ns], features=features) as p:
                p.start()
                if p.attach != choices["netfilter"]:
                    raise AssertionError(f"netfilter probe chose {p.attach}, doctor chose {choices['netfilter']}")
                p.snapshot()

        attempt("hops", hops)
        if choices["cpu"]:
            attempt("cpu", cpu)
        if choices["netfilter"]:
            attempt("netfilter", nf)
    finally:
        pr_netns.remove(ns)
    return out


# ------------------------------------------------------------------------------------------------ full


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def hop_counts(export: Path) -> dict:
    """Packets per expected hop of the forward direction, and whether all equal COUNT."""
    rows = read_csv(export / "hops.csv")
    forward = rows[0]["direction"] if rows else None  # rows come in path order, the traced direction first
    counts = {r["hop"]: int(float(r["packets"])) for r in rows
              if r["direction"] == forward and r["expected"] == "True" and r["in_e2e"] == "True"}
    return {"hops": len(counts), "all_exact": bool(counts) and all(c == COUNT for c in counts.values()),
            "off": {k: v for k, v in counts.items() if v != COUNT}}


def trace_flannel(choices: dict, tmp: Path) -> dict:
    out = tmp / "flannel"
    args = ["trace", "--cni", "flannel", "--traffic", "udp", "--count", str(COUNT), "--duration", DURATION, "--no-ui", "--export", str(out)]
    if choices["cpu"]:
        args.append("--cpu")
    proc = cniprof(*args)
    if proc.returncode != 0:
        return {"exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}
    summary = json.loads((out / "summary.json").read_text())
    res = {"exit": 0, "counts": hop_counts(out), "drops": len(read_csv(out / "drops.csv")),
           "drop_probe": next((p for p in summary["probes"] if "kfree_skb" in p), None)}
    if choices["cpu"]:
        res["cpu"] = bool(summary.get("cpu")) and (out / "cpu.folded").is_file()
    return res


def trace_drops(tmp: Path) -> dict:
    """A FORWARD DROP rule on node2 for the traced datagrams: every one is a drop with its reason and point."""
    out = tmp / "drops"
    up = cniprof("lab", "up", "--cni", "flannel")
    if up.returncode != 0:
        return {"exit": up.returncode, "error": "lab up failed"}
    try:
        node2 = f"cniprof_{LAB_ID}-node2"
        subprocess.run(["ip", "netns", "exec", node2, "iptables", "-I", "FORWARD", "-p", "udp", "-j", "DROP"],
                       check=True)
        proc = cniprof("trace", "--cni", "flannel", "--traffic", "udp", "--count", str(COUNT), "--duration", DURATION,
                       "--no-ui", "--export", str(out))
        if not (out / "drops.csv").is_file():
            return {"exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}
        drops = read_csv(out / "drops.csv")
        return {"drops": sorted({(r["node"], r["device"], r["reason"], int(float(r["count"]))) for r in drops})}
    finally:
        cniprof("lab", "down")


def trace_nf(choices: dict, tmp: Path) -> dict:
    out = tmp / "nf"
    proc = cniprof("trace", "--cni", "flannel", "--path", "pod-to-service", "--services", str(SERVICES),
                   "--traffic", "udp", "--count", str(COUNT), "--duration", DURATION, "--nf", "--no-ui", "--export", str(out))
    if proc.returncode != 0:
        return {"exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}
    summary = json.loads((out / "summary.json").read_text())
    nf = summary["netfilter"]
    slow = nf["slowest"] or {}
    hooks = {f"{h['node']} {h['hook']}": h["packets"] for h in nf["hooks"] if h["packets"]}
    print(f"guest: most expensive hook {slow.get('node')} {slow.get('hook')} ({slow.get('mean_us')} us mean)")
    return {"exit": 0, "attach": nf["attach"], "hooks_with_packets": hooks, "counts": hop_counts(out)}


DROP_PROBES = {"tp_btf": "tp_btf/skb:kfree_skb", "tp_btf_noreason": "tp_btf/skb:kfree_skb (no reason argument)"}


def agrees(choices: dict, trace: dict) -> dict:
    """Per feature: did the trace use exactly the probe type doctor chose (False names a broken promise)."""
    out = {"drops": trace["flannel"].get("drop_probe") == DROP_PROBES.get(choices["drops"]),
           "cpu": bool(trace["flannel"].get("cpu")) == bool(choices["cpu"])}
    if choices["netfilter"]:
        out["netfilter"] = trace.get("netfilter", {}).get("attach") == choices["netfilter"]
    return out


def main() -> int:
    level = sys.argv[1] if len(sys.argv) > 1 else "load"
    result: dict = {"level": level, "kernel": os.uname().release, "arch": os.uname().machine, "errors": [],
                    "seconds": {}}
    t0 = time.monotonic()
    try:
        doctor(result)
        result["seconds"]["doctor"] = round(time.monotonic() - t0, 1)
        result["load"] = load_probes(result["choices"])
        result["seconds"]["load"] = round(time.monotonic() - t0, 1)
        if level == "full":
            with tempfile.TemporaryDirectory() as d:
                tmp = Path(d)
                result["trace"] = {"flannel": trace_flannel(result["choices"], tmp)}
                result["seconds"]["flannel"] = round(time.monotonic() - t0, 1)
                result["trace"]["drops"] = trace_drops(tmp)
                result["seconds"]["drops"] = round(time.monotonic() - t0, 1)
                if result["choices"]["netfilter"]:
                    result["trace"]["netfilter"] = trace_nf(result["choices"], tmp)
                    result["seconds"]["netfilter"] = round(time.monotonic() - t0, 1)
                result["trace"]["doctor_said_what_trace_used"] = agrees(result["choices"], result["trace"])
    except Exception:  # noqa: BLE001 - report, the host compares
        result["errors"].append(traceback.format_exc().strip().splitlines()[-1])
        traceback.print_exc()
    print(RESULT_TAG + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
