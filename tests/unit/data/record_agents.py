# SPDX-License-Identifier: Apache-2.0
"""Record the single tracer and per-node agents on the same pings into one file for the pure tests (root, lab up).

    CNIPROF_LAB_ID=x .venv/bin/python tests/unit/data/record_agents.py OUT.json.gz [--count N] [--offset-ns NS]

The file holds what tests/root/agents_pair.paired() returns as `recording`: the coordinator's crossings, wire
labels and direction labels, each agent's last snapshot and every record it sent (base64, hop_record/1), and the
single tracer's snapshot of the same packets. recorded_agents_ping300.json.gz: flannel vxlan lab, 300 pings 2 ms
apart, +5 ms test clock offset on node2, on a shared 2-CPU machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "root")]

from agents_pair import paired

from cniprof.lab import saved
from cniprof.traffic.ping import Ping


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--offset-ns", type=int, default=5_000_000)
    args = ap.parse_args()
    topo = saved.load()
    if topo is None:
        raise SystemExit("no lab: cniprof lab up --cni flannel first")
    res = paired(topo, f"{topo.cni}:{topo.mode}", lambda a, b: Ping(a.netns, b.ip, args.count, interval_s=0.002),
                 offset_ns=args.offset_ns)
    text = json.dumps(res.recording, separators=(",", ":"))
    args.out.write_bytes(gzip.compress(text.encode()) if args.out.suffix == ".gz" else text.encode())
    print(json.dumps(res.merged["clock"], indent=1))


if __name__ == "__main__":
    main()
